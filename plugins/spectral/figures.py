"""Figures of the spectral surrogate, sized for an A4 report (about 6.5 x 3.2 inches)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from governance.figures import pyplot


def spectrum_figure(spectrum: np.ndarray, trunc_test: np.ndarray, trunc_data: np.ndarray, shown: Sequence[int],
                    out_names: Sequence[str]) -> Any:
    """Left: energy E_k per total degree k (log scale). Right: R² of the degree-<=k truncation."""
    plt = pyplot()
    p = spectrum.shape[1] - 1
    degrees = np.arange(1, p + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.8, 3.1))
    peak = float(spectrum[shown, 1:].max(initial=0.0))
    floor = peak * 1e-16 if peak > 0 else 1e-300
    many = len(shown) > 4
    for k in shown:
        ax1.plot(degrees, np.maximum(spectrum[k, 1:], floor), marker="o", ms=3, lw=1 if many else 1.5,
                 alpha=0.45 if many else 1.0, label=None if many else str(out_names[k]))
    if many:
        ax1.plot(degrees, np.maximum(spectrum[shown, 1:].sum(axis=0), floor), color="black", marker="o", ms=3,
                 lw=2, label=f"sum over {len(shown)} outputs")
    ax1.set_yscale("log")
    ax1.set_xticks(degrees)
    ax1.set_xlabel("total degree k")
    ax1.set_ylabel("energy $E_k = \\sum c_\\alpha^2\\gamma_\\alpha$")
    ax1.set_title("Spectrum: output variance per degree")
    ax1.legend(fontsize=7, frameon=False)
    curves = [_nanmean_columns(trunc_test[shown]), _nanmean_columns(trunc_data[shown])]
    ax2.plot(degrees, curves[0], marker="o", label="held-out box points")
    ax2.plot(degrees, curves[1], marker="s", label="dataset rows")
    ax2.set_xticks(degrees)
    finite = np.concatenate(curves)[np.isfinite(np.concatenate(curves))]
    ax2.set_ylim(min(0.0, float(finite.min())) if len(finite) else 0.0, 1.02)
    ax2.set_xlabel("truncation degree (terms of degree ≤ k)")
    ax2.set_ylabel("R² vs. network")
    ax2.set_title("Fidelity of truncated surrogates")
    ax2.legend(fontsize=7, frameon=False, loc="lower right")
    ax2.grid(alpha=0.3)
    return fig


def _nanmean_columns(a: np.ndarray) -> np.ndarray:
    """Column means over the defined entries (nan where none is): R² is undefined for constant outputs."""
    finite = np.isfinite(a)
    counts = finite.sum(axis=0)
    return np.where(counts > 0, np.where(finite, a, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)


def feature_energy_figure(energy: np.ndarray, main: np.ndarray, names: Sequence[str], total: float,
                          top: int = 15) -> Any:
    """Share of the output variance per input coordinate, split into main effect and interactions."""
    plt = pyplot()
    order = [i for i in np.argsort(-energy)[:top] if energy[i] > 0][::-1]
    scale = total if total > 0 else 1.0
    fig, ax = plt.subplots(figsize=(6.3, max(2.2, 0.22 * len(order) + 1.0)))
    y = np.arange(len(order))
    ax.barh(y, [main[i] / scale for i in order], color="#3b6ea8", label="alone (first-order)")
    ax.barh(y, [(energy[i] - main[i]) / scale for i in order], left=[main[i] / scale for i in order],
            color="#e39b3a", label="in interactions")
    ax.set_yticks(y)
    ax.set_yticklabels([str(names[i])[:32] for i in order], fontsize=7)
    ax.set_xlabel("share of output variance (total index $T_i$; interactions count for each input)")
    ax.set_title("Spectral energy per input")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


@dataclass
class Scatter:
    """One point set of the fidelity figure: the network's outputs, the surrogate's, and their fidelity."""

    y: np.ndarray
    yhat: np.ndarray
    fidelity: Any


def _mean_r2_label(r2: np.ndarray) -> str:
    v = np.asarray(r2, dtype=np.float64)
    v = v[np.isfinite(v)]
    return f"mean R² {v.mean():.3f}" if len(v) else "R² undefined: constant output"


def fidelity_figure(heldout: Scatter, data: Scatter, shown: Sequence[int], max_points: int = 3000) -> Any:
    """Surrogate against network, pooled over the shown outputs."""
    plt = pyplot()
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for s, label, marker in ((heldout, "held-out box points", "o"), (data, "dataset rows", "s")):
        a, b = s.y[:, shown].ravel(), s.yhat[:, shown].ravel()
        if len(a) > max_points:
            pick = rng.choice(len(a), max_points, replace=False)
            a, b = a[pick], b[pick]
        ax.scatter(a, b, s=4, alpha=0.35, marker=marker,
                   label=f"{label} ({_mean_r2_label(s.fidelity.r2[list(shown)])})")
    lo = float(min(heldout.y[:, shown].min(), data.y[:, shown].min()))
    hi = float(max(heldout.y[:, shown].max(), data.y[:, shown].max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="surrogate = network")
    ax.set_xlabel("network output")
    ax.set_ylabel("surrogate output")
    ax.set_title(f"Surrogate vs. network ({len(shown)} output{'s' if len(shown) != 1 else ''})")
    ax.legend(fontsize=7, frameon=False, loc="upper left", markerscale=2)
    return fig


def energy_map_figure(input_energy: np.ndarray, kind: str) -> Any:
    """Spectral energy spread back onto the image's pixels (summed over channels)."""
    plt = pyplot()
    img = np.asarray(input_energy)
    img = img.sum(axis=0) if img.ndim == 3 else img.reshape(img.shape[-2:]) if img.ndim > 3 else img
    fig, ax = plt.subplots(figsize=(3.6, 3.1))
    im = ax.imshow(img, cmap="magma")
    ax.set_xticks([])
    ax.set_yticks([])
    how = {"pca": "via squared component loadings", "pool": "spread over each block"}.get(kind, "per pixel")
    ax.set_title(f"Spectral energy on the input ({how})", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig
