"""Figures of the Bort audit, sized for an A4 page (about 6.3 in wide)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from governance.figures import pyplot
from governance_plugins.bort.audit import LayerAudit

_PEER_COLORS = ("#d95f02", "#7570b3", "#e7298a", "#66a61e")


def _short(name: str, width: int = 28) -> str:
    name = name[:-7] if name.endswith(".weight") else name
    return name if len(name) <= width else "…" + name[-(width - 1):]


def deviation_figure(audits: Sequence[LayerAudit], reference: Sequence[Any] | None,
                     peers: Sequence[tuple[str, dict[str, float]]] = (), max_layers: int = 48,
                     classifier: int | None = None) -> Any:
    """Horizontal bars of D_orth per layer (model order, top to bottom); the random reference of each layer as a
    tick with its tolerance band (``reference``: one :class:`~governance_plugins.bort.reference.Band` per layer);
    peer markers; the free classifier's label in italics."""
    plt = pyplot()
    idx = list(range(len(audits)))
    note = ""
    if len(idx) > max_layers:
        idx = sorted(sorted(idx, key=lambda i: -np.nan_to_num(audits[i].d_orth))[:max_layers])
        note = f" ({max_layers} worst of {len(audits)} layers)"
    n = len(idx)
    fig, ax = plt.subplots(figsize=(6.3, max(2.4, 0.24 * n + 1.2)))
    y = np.arange(n)
    vals = np.array([audits[i].d_orth for i in idx])
    colors = ["#1b9e77" if audits[i].within_bounds else "#a6761d" for i in idx]
    ax.barh(y, np.nan_to_num(vals), color=colors, height=0.6, label="this model")
    if reference is not None:
        ax.errorbar([reference[i].mean for i in idx], y, xerr=[reference[i].margin for i in idx], fmt="|", ms=12,
                    color="black", elinewidth=0.8, capsize=2, zorder=3,
                    label="random weights of the same shapes ± tolerance band")
    for (label, by_name), color in zip(peers, _PEER_COLORS):
        xs = [by_name.get(audits[i].name, np.nan) for i in idx]
        if np.isfinite(xs).any():
            ax.scatter(xs, y, marker="o", s=18, color=color, zorder=4, label=label)
    ax.set_yticks(y)
    ax.set_yticklabels([_short(audits[i].name) + (" (free)" if i == classifier else "") for i in idx], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("D_orth = ‖G/s − I‖_F / √k   (0 = orthogonal rows up to scale)")
    ax.set_title("Distance from bounded-orthogonal per layer" + note)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(n, 3)), ncol=3, frameon=False)
    return fig


def spectra_figure(audits: Sequence[LayerAudit]) -> Any:
    """Sorted sigma^2/s of every layer on a normalised index: flat at 1 means bounded-orthogonal up to scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.3, 3.4))
    cmap = plt.get_cmap("viridis")
    few = len(audits) <= 8
    for i, a in enumerate(audits):
        s = a.mean_sigma2
        if not s > 0:
            continue
        vals = np.clip(a.sigma2 / s, 1e-8, None)
        ax.plot(np.linspace(0, 1, len(vals)), vals, color=cmap(i / max(len(audits) - 1, 1)), lw=1.2,
                label=_short(a.name, 18) if few else None)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    lo, hi = ax.get_ylim()
    if hi / lo < 20:  # less than about a decade: label the minor ticks too
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("singular value rank (normalised, largest first)")
    ax.set_ylabel("σ² / mean σ²")
    if few:
        ax.set_title("Squared singular values per layer (flat at 1 = orthogonal up to scale)")
        ax.legend(fontsize=7, frameon=False, title="layer", title_fontsize=7)
    else:
        ax.set_title("Squared singular values per layer (colour: depth, dark = first)")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, max(len(audits), 1)))
        bar = fig.colorbar(sm, ax=ax, label="layer index", fraction=0.04, pad=0.02)
        from matplotlib.ticker import MaxNLocator

        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    return fig


def traceback_figure(evidences: Sequence[Any], random_error: float | None = None) -> Any:
    """Left: relative trace-back error per tapped layer (a cross: the same trace-back through random weights).
    Right: deletion and insertion curves (target-class probability)."""
    plt = pyplot()
    has_auc = any(ev.scores is not None for ev in evidences)
    fig, axes = plt.subplots(1, 2 if has_auc else 1, figsize=(6.3, 3.0), squeeze=False)
    ax = axes[0, 0]
    ticks: dict[int, str] = {}
    for ev, color in zip(evidences, ("#1b9e77",) + _PEER_COLORS):
        rows = ev.trace.tap_rows
        if rows:
            ax.plot([r["depth"] for r in rows], [r["rel_error"] for r in rows], "o-", color=color, label=ev.label, ms=3)
            ticks.update({r["depth"]: f"{_short(str(r['tap']), 12)}\n{r['module']}" for r in rows})
    first = evidences[0] if evidences else None
    if random_error is not None and first is not None and first.trace.tap_rows:
        depth = next((r["depth"] for r in first.trace.tap_rows if r["tap"] == first.trace.saliency_layer),
                     first.trace.tap_rows[-1]["depth"])
        ax.scatter([depth], [random_error], marker="x", color="black", zorder=4, label="random weights (control)")
    if ticks and len(ticks) <= 10:
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([ticks[k] for k in sorted(ticks)], fontsize=7)
    ax.set_xlabel("traced back from the output of module")
    ax.set_ylabel("‖x − x̂‖ / ‖x‖")
    ax.set_title("Reconstruction of the input")
    ax.legend(fontsize=7, frameon=False)
    if has_auc:
        ax = axes[0, 1]
        for ev, color in zip(evidences, ("#1b9e77",) + _PEER_COLORS):
            if ev.scores is not None:
                f = ev.scores.fractions
                ax.plot(f, ev.scores.deletion.mean(0), color=color, label=f"{ev.label}: deletion")
                ax.plot(f, ev.scores.insertion.mean(0), color=color, ls="--", label=f"{ev.label}: insertion")
        ax.set_xlabel("share of pixels deleted / inserted")
        ax.set_ylabel("predicted-class probability")
        ax.set_title("Saliency: deletion / insertion")
        ax.legend(fontsize=6, frameon=False)
    return fig


def saliency_figure(X: np.ndarray, evidences: Sequence[Any]) -> Any:
    """Rows: input, this model's reconstruction and saliency, then each peer's saliency; columns: samples."""
    plt = pyplot()
    shown = [ev for ev in evidences if ev.saliency is not None]
    n = min(len(X), min(len(ev.saliency) for ev in shown))
    rows: list[tuple[str, np.ndarray, str]] = [("input", X[:n].mean(1), "gray")]
    first = shown[0]
    if first.reconstruction is not None:
        rows.append((f"{first.label}\nreconstruction", first.reconstruction[:n].mean(1), "gray"))
    for ev in shown:
        rows.append((f"{ev.label}\nsaliency", ev.saliency[:n], "inferno"))
    fig, axes = plt.subplots(len(rows), n, figsize=(min(6.3, 1.05 * n + 1.2), 1.05 * len(rows) + 0.4), squeeze=False)
    for r, (label, imgs, cmap) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"Backtracking from '{first.trace.saliency_layer}' (positive part, per-image max = 1)", fontsize=9)
    return fig
