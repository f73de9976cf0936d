"""FLINT's interpretations and metrics (methods-flint-bort.md A3.1, A3.2, A3.4), in numpy.

* contribution ``α_j(x) = φ_j(x)·W[j, ŷ]`` with ``ŷ`` the interpreter's class and ``W`` the J×C head;
* relevance ``r_j(x) = α_j(x) / max_i |α_i(x)|`` (the paper's definition, the default here);
* conciseness ``CNS_g(τ) = mean_x #{j : r_j(x) > 1/τ}`` (strict ``>``) over the samples with at least one relevant
  attribute; the samples with none are counted apart (:class:`Conciseness`). Counting them as 0 would make an
  interpreter that explains nothing look concise;
* global relevance ``r_{j,c} = mean_{x : ŷ(x) = c} r_j(x)``, a C×J matrix;
* fidelity: the share of samples where the interpreter's top-1 (or top-k) class is the predictor's class;
* attribute purity: the share of an attribute's top-k activating samples (over all classes) that carry its most
  common label. It does not look at the class an attribute was found for, so an attribute shared by classes scores
  low.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def relevant_counts(r: np.ndarray, tau: float) -> np.ndarray:
    """Per sample, the number of attributes with relevance strictly above ``1/τ`` (0 is possible: A3.4)."""
    r = np.atleast_2d(np.asarray(r, dtype=np.float64))
    return (r > 1.0 / tau).sum(axis=1)


@dataclass(frozen=True)
class Conciseness:
    """``CNS_g(τ)`` over the samples with at least one relevant attribute, and how many had none."""

    tau: float
    mean: float  # NaN when no sample has a relevant attribute
    sd: float  # of the counts over the samples with at least one relevant attribute
    n_samples: int
    n_none: int  # samples with no attribute above 1/τ (a negative-evidence or bias-driven decision)

    @property
    def n_explained(self) -> int:
        return self.n_samples - self.n_none

    @property
    def share_none(self) -> float:
        return self.n_none / self.n_samples if self.n_samples else float("nan")

    @property
    def standard_error(self) -> float:
        return self.sd / np.sqrt(self.n_explained) if self.n_explained > 1 else float("nan")


def conciseness_stats(r: np.ndarray, tau: float) -> Conciseness:
    counts = relevant_counts(r, tau)
    some = counts[counts > 0]
    mean = float(some.mean()) if len(some) else float("nan")
    sd = float(some.std(ddof=1)) if len(some) > 1 else float("nan")
    return Conciseness(float(tau), mean, sd, int(len(counts)), int((counts == 0).sum()))


def conciseness(r: np.ndarray, tau: float) -> float:
    """``CNS_g(τ)``: mean number of attributes with relevance strictly above ``1/τ``, over the samples that have
    at least one (NaN when none has)."""
    return conciseness_stats(r, tau).mean


def conciseness_curve(r: np.ndarray, taus: Sequence[float] = DEFAULT_TAUS) -> dict[float, Conciseness]:
    return {float(t): conciseness_stats(r, t) for t in taus}


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


@dataclass(frozen=True)
class Purity:
    """Mean over live attributes of the share of each one's top-``k`` activating samples that carry its most
    common label; ``per_attribute`` lists the shares in the order of ``attributes``."""

    mean: float
    per_attribute: np.ndarray
    attributes: np.ndarray
    k: int

    @property
    def standard_error(self) -> float:
        n = len(self.per_attribute)
        return float(np.std(self.per_attribute, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def top_k_purity(phi: np.ndarray, labels: np.ndarray, k: int = 10, eps: float = 1e-6) -> Purity:
    """Class-independent purity of the attributes (dead attributes, never above ``eps``, are left out)."""
    phi = np.asarray(phi, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    live = np.nonzero(phi.max(axis=0) > eps)[0] if len(phi) else np.zeros(0, dtype=np.int64)
    k = int(min(k, len(phi)))
    shares = np.empty(len(live))
    for n, j in enumerate(live):
        top = np.argsort(-phi[:, j], kind="stable")[:k]
        shares[n] = np.bincount(labels[top]).max() / k
    return Purity(float(shares.mean()) if len(shares) else float("nan"), shares, live, k)


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement of two classifiers and Cohen's κ: the agreement beyond what their class frequencies alone
    give (``p_e = Σ_c p_f(c)·p_g(c)``). κ is set to 0 when ``p_e = 1`` (both predict one and the same class:
    every agreement is expected by chance)."""

    observed: float
    expected: float
    kappa: float
    n: int

    @property
    def kappa_standard_error(self) -> float:
        if self.n == 0 or self.expected >= 1:
            return float("nan")
        return float(np.sqrt(self.observed * (1 - self.observed) / self.n) / (1 - self.expected))


def agreement(g_pred: np.ndarray, f_pred: np.ndarray, n_classes: int) -> Agreement:
    g_pred, f_pred = np.asarray(g_pred, dtype=np.int64), np.asarray(f_pred, dtype=np.int64)
    n = len(f_pred)
    if n == 0:
        return Agreement(float("nan"), float("nan"), float("nan"), 0)
    p_o = float((g_pred == f_pred).mean())
    p_e = float(np.dot(np.bincount(f_pred, minlength=n_classes), np.bincount(g_pred, minlength=n_classes))) / n**2
    kappa = 0.0 if p_e >= 1 - 1e-12 else (p_o - p_e) / (1 - p_e)
    return Agreement(p_o, p_e, float(kappa), n)
