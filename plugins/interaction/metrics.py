"""Ranking, salient sets and sharing metrics (spec §2.10–§2.11), on merged interactions.

A *pattern* is (op, S) with op ∈ {"and", "or"} and S a subset index. After merging (§2.10), singletons and
∅ live only in the AND vector. Sets of patterns are boolean masks of shape (2ⁿ,) per op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance_plugins.interaction.transforms import n_of, popcounts, reconstruct

#: entries smaller than this fraction of a model's largest |I| count as zero (LP optima are sparse, and
#: exact zeros must not fill a top-k set nor count as shared)
ZERO_RTOL = 1e-7


def rank(values: np.ndarray, *, sizes: np.ndarray | None = None) -> np.ndarray:
    """Indices sorted by (-|I|, |S|, index): the reproducible order of spec §2.10."""
    values = np.asarray(values, dtype=np.float64)
    sizes = popcounts(n_of(values.shape[-1])) if sizes is None else sizes
    return np.lexsort((np.arange(values.shape[-1]), sizes, -np.abs(values)))


def nonzero(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Mask of entries that are not numerically zero."""
    a = np.abs(values)
    ref = float(a.max()) if scale is None else float(scale)
    return a > ZERO_RTOL * max(ref, 1e-300)


def topk_mask(values: np.ndarray, k: int, *, scale: float | None = None, skip_empty: bool = True) -> np.ndarray:
    """The k strongest patterns of one op (tie-break (-|I|, |S|, index)), ignoring numerical zeros and,
    by default, ∅ (a constant, not an interaction)."""
    order = rank(values)
    keep = nonzero(values, scale)
    if skip_empty:
        keep[0] = False
    chosen = [i for i in order if keep[i]][: max(int(k), 0)]
    mask = np.zeros(values.shape[-1], dtype=bool)
    mask[chosen] = True
    return mask


def salient_masks(i_and: np.ndarray, i_or: np.ndarray, ratio: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Ω^and, Ω^or of one model: |I| > ratio·max|I| over AND ∪ OR (per model and sample, spec §2.10), ∅
    excluded."""
    top = max(float(np.abs(i_and[1:]).max(initial=0.0)), float(np.abs(i_or[1:]).max(initial=0.0)))
    if top <= 0:
        z = np.zeros_like(i_and, dtype=bool)
        return z, z.copy()
    a = np.abs(i_and) > ratio * top
    o = np.abs(i_or) > ratio * top
    a[0] = o[0] = False
    return a, o


def transferability(masks: list[np.ndarray]) -> list[float]:
    """Definition 1: s⁽ⁱ⁾ = |∩_j Ω⁽ʲ⁾| / |Ω⁽ⁱ⁾| for each model (NaN for an empty Ω⁽ⁱ⁾)."""
    shared = np.logical_and.reduce(masks)
    out = []
    for m in masks:
        size = int(m.sum())
        out.append(float(shared.sum()) / size if size else float("nan"))
    return out


def overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(s, IoU) of two pattern sets: s = |a∩b| / |a| (the paper's metric when |a| = |b| = k) and the Jaccard
    index |a∩b| / |a∪b|. Empty sets give NaN."""
    inter = float(np.logical_and(a, b).sum())
    union = float(np.logical_or(a, b).sum())
    size = float(a.sum())
    return (inter / size if size else float("nan"), inter / union if union else float("nan"))


def k_grid(n: int) -> list[int]:
    """k = int(2ⁿ·r) for r = 0.05, 0.10, …, 0.45 (spec §2.11), at least 1."""
    return [max(1, int((1 << n) * r)) for r in np.round(np.arange(0.05, 0.46, 0.05), 2)]


def default_k(n: int) -> int:
    return k_grid(n)[0]


def matching_precision(i_and: np.ndarray, i_or: np.ndarray, delta: float, ks: list[int] | np.ndarray) -> np.ndarray:
    """m_k = Σ_topk|I| / (Σ_topk|I| + |Δ - Σ_topk I|) over the pooled non-∅ AND ∪ OR values (AND before OR on
    full ties); Δ = v(x_N) - v(x_∅). A zero denominator gives 1 (spec §2.11, App. M)."""
    n = n_of(i_and.shape[-1])
    sizes = popcounts(n)
    vals = np.concatenate([i_and[1:], i_or[1:]])
    sz = np.concatenate([sizes[1:], sizes[1:]])
    idx = np.concatenate([np.arange(1, 1 << n), np.arange(1, 1 << n)])
    op = np.concatenate([np.zeros(len(sizes) - 1), np.ones(len(sizes) - 1)])
    order = np.lexsort((op, idx, sz, -np.abs(vals)))
    cum_abs = np.concatenate([[0.0], np.cumsum(np.abs(vals[order]))])
    cum = np.concatenate([[0.0], np.cumsum(vals[order])])
    out = []
    for k in ks:
        k = min(int(k), len(vals))
        den = cum_abs[k] + abs(delta - cum[k])
        out.append(1.0 if den == 0 else cum_abs[k] / den)
    return np.array(out)


def matching_error(v: np.ndarray, i_and: np.ndarray, i_or: np.ndarray,
                   keep_and: np.ndarray | None = None, keep_or: np.ndarray | None = None) -> tuple[float, float]:
    """(max, mean) of |v(x_T) - v_approx(x_T)| over T, with v_approx rebuilt by Theorem 2 from all
    interactions or only the kept ones (∅ always kept)."""
    a = np.array(i_and, dtype=np.float64, copy=True)
    o = np.array(i_or, dtype=np.float64, copy=True)
    if keep_and is not None:
        ka = keep_and.copy()
        ka[0] = True
        a[~ka] = 0.0
    if keep_or is not None:
        ko = keep_or.copy()
        ko[0] = True
        o[~ko] = 0.0
    err = np.abs(v - reconstruct(a, o))
    return float(err.max()), float(err.mean())


@dataclass
class OrderWise:
    """Fig. 4 sums per order o = |S| (index o): positive and negative strength over the shared set and over
    the model's own salient set."""

    shared_pos: np.ndarray
    shared_neg: np.ndarray
    all_pos: np.ndarray
    all_neg: np.ndarray


def orderwise(i_and: np.ndarray, i_or: np.ndarray, own: tuple[np.ndarray, np.ndarray],
              shared: tuple[np.ndarray, np.ndarray]) -> OrderWise:
    n = n_of(i_and.shape[-1])
    sizes = popcounts(n)
    res = {k: np.zeros(n + 1) for k in ("shared_pos", "shared_neg", "all_pos", "all_neg")}
    for vals, own_m, sh_m in ((i_and, own[0], shared[0]), (i_or, own[1], shared[1])):
        for name, mask in (("shared", sh_m), ("all", own_m)):
            np.add.at(res[f"{name}_pos"], sizes[mask], np.maximum(vals[mask], 0.0))
            np.add.at(res[f"{name}_neg"], sizes[mask], np.minimum(vals[mask], 0.0))
    return OrderWise(**res)


def pattern_label(op: str, subset: int, names: list[str]) -> str:
    """Symbolic form of a pattern, e.g. ``AND(worst radius, mean texture)``; ∅ is ``const``."""
    members = [names[j] for j in range(len(names)) if subset >> j & 1]
    if not members:
        return "const"
    return f"{op.upper()}({', '.join(members)})"
