"""Figures for the report (A4-readable, about 6.5 x 3.5 in)."""

from __future__ import annotations

from typing import Any

import numpy as np

from governance.figures import pyplot

STATUS_COLORS = {"shared": "#1f77b4", "partly shared": "#9467bd", "gained": "#2ca02c", "lost": "#d62728",
                 "salient": "#1f77b4", None: "#7f7f7f"}
PEER_MARKERS = ("D", "o", "s", "^", "v", "P")


def top_patterns_figure(patterns: list[dict[str, Any]], model_labels: list[str], *, limit: int = 12) -> Any:
    """Strength-sorted horizontal bars: mean strength (over samples) of the strongest patterns in the reviewed
    model, coloured by status; peers' strengths as markers."""
    plt = pyplot()
    rows = sorted(patterns[:limit], key=lambda r: abs(r["mean_strength"][0]))  # strongest at the top
    fig, ax = plt.subplots(figsize=(6.5, max(2.4, 0.3 * len(rows) + 1.2)))
    if not rows:
        ax.text(0.5, 0.5, "no salient interaction", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    y = np.arange(len(rows))
    mine = [r["mean_strength"][0] for r in rows]
    ax.barh(y, mine, color=[STATUS_COLORS.get(r["status"], "#7f7f7f") for r in rows], height=0.6)
    for i, peer in enumerate(model_labels[1:]):
        ax.scatter([r["mean_strength"][i + 1] for r in rows], y, marker=PEER_MARKERS[i % len(PEER_MARKERS)],
                   color="black", s=18, zorder=3, label=f"peer: {peer}")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(y)
    ax.set_yticklabels([r["pattern"] if len(r["pattern"]) <= 48 else r["pattern"][:45] + "..." for r in rows],
                       fontsize=7)
    ax.set_xlabel("mean interaction strength over samples (log-odds units)")
    ax.set_title(f"Strongest AND/OR interactions (bars: {model_labels[0]})")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    seen = {r["status"] for r in rows}
    status_handles = [Patch(color=STATUS_COLORS[s], label=s) for s in
                      ("shared", "partly shared", "gained", "lost", "salient") if s in seen]
    ax.legend(handles=status_handles + handles, fontsize=7, loc="lower right", frameon=True, framealpha=0.8)
    return fig


def sharing_figure(model_labels: list[str], salient_sizes: list[float], shared_size: float,
                   curves: dict[str, Any]) -> Any:
    """Left: mean salient patterns per sample, split into shared by all models and specific. Right: s versus k
    for the joint (shared) extraction and the per-model (traditional) one (the paper's Fig. 3)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.8, 3.3), gridspec_kw={"width_ratios": [1, 1.25]})
    y = np.arange(len(model_labels))
    shared = np.full(len(model_labels), shared_size)
    specific = np.maximum(np.asarray(salient_sizes) - shared, 0)
    ax1.barh(y, shared, color=STATUS_COLORS["shared"], label="shared by all")
    ax1.barh(y, specific, left=shared, color="#ff7f0e", label="specific / partly shared")
    ax1.set_yticks(y)
    ax1.set_yticklabels([lbl if len(lbl) <= 22 else lbl[:20] + ".." for lbl in model_labels], fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("salient patterns per sample")
    ax1.set_title("Shared vs specific")
    ax1.set_xlim(0, max(1.0, float(np.max(np.asarray(salient_sizes, dtype=float)))) * 1.05)
    ax1.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    if curves:
        ks = curves["k"]
        ax2.plot(ks, curves["joint_and"], "-o", color="#1f77b4", ms=3, label="shared extraction, AND")
        ax2.plot(ks, curves["joint_or"], "-s", color="#2ca02c", ms=3, label="shared extraction, OR")
        if "traditional_and" in curves:
            ax2.plot(ks, curves["traditional_and"], "--o", color="#1f77b4", ms=3, alpha=0.6,
                     label="per-model (traditional), AND")
            ax2.plot(ks, curves["traditional_or"], "--s", color="#2ca02c", ms=3, alpha=0.6,
                     label="per-model (traditional), OR")
        ax2.set_ylim(0, 1.05)
        ax2.set_xlabel("k (top-k interactions per model)")
        ax2.set_ylabel("overlap s = |top-k ∩ top-k| / k")
        ax2.set_title("Transferability vs k")
        ax2.legend(fontsize=6.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    else:
        ax2.set_axis_off()
    return fig


def orders_figure(orders: dict[str, np.ndarray], model_label: str, has_peers: bool) -> Any:
    """Strength by order (|S|) of the reviewed model's salient patterns, and of the shared ones (Fig. 4)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    n1 = orders["all_pos"].shape[1]
    x = np.arange(1, n1)
    w = 0.38 if has_peers else 0.7
    ax.bar(x - (w / 2 if has_peers else 0), orders["all_pos"][0, 1:], width=w, color="#aec7e8", label="all salient, +")
    ax.bar(x - (w / 2 if has_peers else 0), orders["all_neg"][0, 1:], width=w, color="#ffbb78", label="all salient, −")
    if has_peers:
        ax.bar(x + w / 2, orders["shared_pos"][0, 1:], width=w, color="#1f77b4", label="shared, +")
        ax.bar(x + w / 2, orders["shared_neg"][0, 1:], width=w, color="#ff7f0e", label="shared, −")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xlabel("order |S| (number of variables in the pattern)")
    ax.set_ylabel("summed strength per sample")
    ax.set_title(f"Interaction strength by order: {model_label}")
    ax.legend(fontsize=7, frameon=False, ncol=2)
    return fig
