"""FLINT's interpretations and metrics (methods-flint-bort.md A3.1, A3.2, A3.4), in numpy.

* contribution ``α_j(x) = φ_j(x)·W[j, ŷ]`` with ``ŷ`` the interpreter's class and ``W`` the J×C head;
* relevance ``r_j(x) = α_j(x) / max_i |α_i(x)|`` (the paper's definition, the default here);
* conciseness ``CNS_g(τ) = mean_x #{j : r_j(x) > 1/τ}`` (strict ``>``);
* global relevance ``r_{j,c} = mean_{x : ŷ(x) = c} r_j(x)``, a C×J matrix;
* fidelity: the share of samples where the interpreter's top-1 (or top-k) class is the predictor's class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: relevance normalisations found in the sources (A3.1); "paper" is the one the plugin reports.
RELEVANCE_VARIANTS = ("paper", "abs", "signed_max")
DEFAULT_TAUS: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def contributions(phi: np.ndarray, W: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``α = Φ ⊙ W[:, ŷ]`` per sample: (n, J) from Φ (n, J), W (J, C) and predicted classes (n,)."""
    phi = np.asarray(phi, dtype=np.float64)
    return phi * np.asarray(W, dtype=np.float64)[:, np.asarray(pred)].T


def relevances(alpha: np.ndarray, variant: str = "paper") -> np.ndarray:
    """Normalise contributions per sample. ``paper``: α / max|α| (in [−1, 1]); ``abs``: |α| / max|α| (the
    demo notebook); ``signed_max``: α / max α (flint.py). A sample whose α is all zero gets r = 0."""
    alpha = np.atleast_2d(np.asarray(alpha, dtype=np.float64))
    if variant == "paper":
        num, den = alpha, np.abs(alpha).max(axis=1, keepdims=True)
    elif variant == "abs":
        num, den = np.abs(alpha), np.abs(alpha).max(axis=1, keepdims=True)
    elif variant == "signed_max":
        num, den = alpha, alpha.max(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown relevance variant '{variant}' (use one of {', '.join(RELEVANCE_VARIANTS)})")
    safe = np.where(den == 0, 1.0, den)
    return np.where(den == 0, 0.0, num / safe)


def conciseness(r: np.ndarray, tau: float) -> float:
    """``CNS_g(τ)``: mean number of attributes with relevance strictly above ``1/τ``."""
    r = np.atleast_2d(np.asarray(r, dtype=np.float64))
    if len(r) == 0:
        return float("nan")
    return float((r > 1.0 / tau).sum(axis=1).mean())


def conciseness_curve(r: np.ndarray, taus: Sequence[float] = DEFAULT_TAUS) -> dict[float, float]:
    return {float(t): conciseness(r, t) for t in taus}


def global_relevance(r: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """C×J matrix of mean relevances over the samples the interpreter assigns to each class (NaN rows for
    classes it never predicts)."""
    r = np.atleast_2d(np.asarray(r, dtype=np.float64))
    pred = np.asarray(pred)
    out = np.full((n_classes, r.shape[1]), np.nan)
    counts = np.bincount(pred, minlength=n_classes)
    sums = np.zeros((n_classes, r.shape[1]))
    np.add.at(sums, pred, r)
    seen = counts > 0
    out[seen] = sums[seen] / counts[seen, None]
    return out


def relevant_pairs(R: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(class, attribute, r_{j,c}) with ``r_{j,c} > threshold``, most relevant first."""
    cs, js = np.nonzero(np.nan_to_num(R, nan=-np.inf) > threshold)
    pairs = [(int(c), int(j), float(R[c, j])) for c, j in zip(cs, js)]
    return sorted(pairs, key=lambda p: -p[2])


def fidelity(g_logits: np.ndarray, f_logits: np.ndarray, k: int = 1) -> float:
    """Share of samples whose predictor class is among the interpreter's top-k classes."""
    g_logits, f_logits = np.asarray(g_logits), np.asarray(f_logits)
    if len(g_logits) == 0:
        return float("nan")
    f_cls = f_logits.argmax(axis=1)
    if k == 1:
        return float((g_logits.argmax(axis=1) == f_cls).mean())
    topk = np.argsort(-g_logits, axis=1)[:, :k]
    return float((topk == f_cls[:, None]).any(axis=1).mean())


def dead_attributes(phi: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Indices of attributes never (positively) active on any sample: a known FLINT failure mode (A6).
    With the LeakyReLU attribute layer such an attribute is slightly negative everywhere."""
    return np.nonzero(np.asarray(phi).max(axis=0) <= eps)[0]


def top_attributes(r: np.ndarray, k: int = 3) -> np.ndarray:
    """Per sample, the ``k`` attributes of largest relevance (the paper's local visualisation)."""
    return np.argsort(-np.asarray(r), axis=1)[:, :k]
