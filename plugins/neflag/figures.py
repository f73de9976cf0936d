"""NeFLAG's figures: heat maps over images, feature bar charts for tabular data, deletion/insertion curves.
Sized for an A4 page (about 6.5 in wide)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from governance.figures import pyplot

LABELS = {"neflag": "NeFLAG", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}
COLOURS = {"neflag": "#1b6ca8", "integrated_gradients": "#d1495b", "saliency": "#7a7a7a"}


def _display_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input sample (C, H, W) or (H, W) as something imshow can draw, with its colour map."""
    img = np.asarray(x, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    elif img.ndim == 3:
        img = img.mean(axis=0)
    lo, hi = float(np.min(img)), float(np.max(img))
    if lo < 0 or hi > 1:
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, ("gray" if img.ndim == 2 else None)


def _heat(a: np.ndarray) -> np.ndarray:
    """Signed attribution per pixel: summed over channels."""
    a = np.asarray(a, dtype=np.float64)
    return a.sum(axis=0) if a.ndim == 3 else a


def attribution_maps(X: np.ndarray, attributions: dict[str, np.ndarray], targets: np.ndarray,
                     class_names: Sequence[str] | None, rows: int = 4) -> Any:
    """A grid: one row per input; the input, then one heat map per method (diverging colours, symmetric
    around 0, clipped at each map's 99th percentile of |attribution| so one hot pixel does not wash out the
    rest). Raw values, no smoothing."""
    plt = pyplot()
    methods = list(attributions)
    k = min(rows, len(X))
    cols = 1 + len(methods)
    fig, axes = plt.subplots(k, cols, figsize=(1.55 * cols + 0.6, 1.55 * k + 0.5), squeeze=False,
                             layout="constrained")
    for r in range(k):
        img, cmap = _display_image(X[r])
        ax = axes[r, 0]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        name = class_names[targets[r]] if class_names is not None and targets[r] < len(class_names) else str(targets[r])
        ax.set_ylabel(f"class {name}", fontsize=8)
        for c, m in enumerate(methods, start=1):
            h = _heat(attributions[m][r])
            vmax = float(np.percentile(np.abs(h), 99)) or float(np.max(np.abs(h))) or 1.0
            im = axes[r, c].imshow(h, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input")
    for c, m in enumerate(methods, start=1):
        axes[0, c].set_title(LABELS.get(m, m))
    cbar = fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, ticks=[])
    cbar.set_label("red: raises the class score · blue: lowers it", fontsize=7)
    fig.suptitle("Attribution maps (each map scaled to its own 99th percentile)", fontsize=10)
    return fig


def feature_bars(attributions: dict[str, np.ndarray], feature_names: Sequence[str], top: int = 12) -> Any:
    """Mean |attribution| per feature as a share of each method's total, top features by NeFLAG."""
    plt = pyplot()
    methods = list(attributions)
    shares = {}
    for m in methods:
        v = np.abs(np.asarray(attributions[m], dtype=np.float64).reshape(len(attributions[m]), -1)).mean(axis=0)
        shares[m] = v / v.sum() if v.sum() > 0 else v
    order = np.argsort(-shares[methods[0]], kind="stable")[:top]
    k = len(order)
    fig, ax = plt.subplots(figsize=(6.5, 0.1 * k * (len(methods) + 1) + 1.0))
    height = 0.8 / len(methods)
    y = np.arange(k)
    for j, m in enumerate(methods):
        ax.barh(y + j * height, shares[m][order], height=height, label=LABELS.get(m, m), color=COLOURS.get(m))
    ax.set_yticks(y + height * (len(methods) - 1) / 2)
    ax.set_yticklabels([str(feature_names[i]) for i in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of mean |attribution|")
    ax.set_title(f"Top {k} features by NeFLAG (mean |attribution| over the explained inputs)")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def deletion_insertion_curves(fractions: np.ndarray, curves: dict[str, dict[str, np.ndarray]],
                              aucs: dict[str, dict[str, float]], unit: str) -> Any:
    """Mean deletion and insertion curves per method, AUC in the legend."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.5, 2.9), sharey=True)
    for m, c in curves.items():
        a.plot(fractions, c["deletion"].mean(axis=0), color=COLOURS.get(m), label=f"{LABELS.get(m, m)} ({aucs[m]['deletion']:.3f})")
        b.plot(fractions, c["insertion"].mean(axis=0), color=COLOURS.get(m), label=f"{LABELS.get(m, m)} ({aucs[m]['insertion']:.3f})")
    a.set_title("Deletion (AUC, lower is better)")
    b.set_title("Insertion (AUC, higher is better)")
    a.set_xlabel(f"share of {unit} removed")
    b.set_xlabel(f"share of {unit} restored")
    a.set_ylabel("probability of the explained class")
    for ax in (a, b):
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    return fig
