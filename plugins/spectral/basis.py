"""Tensor-product orthogonal polynomial bases on the reference cube [-1, 1]^d (spec B3.1).

A multi-index ``alpha`` (one row of an ``(L, d)`` integer array) names the basis function
``T_alpha(z) = prod_i T_{alpha_i}(z_i)``. The index set ``Lambda(p, q)`` keeps total degree <= p and at
most q interacting coordinates. Everything here is pure numpy: the fit, the formula and the tests share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Iterator, Literal

import numpy as np

BasisName = Literal["chebyshev", "legendre"]

#: name used in formulas: T_k for Chebyshev (first kind), P_k for Legendre.
SYMBOL = {"chebyshev": "T", "legendre": "P"}
#: the measure under which each basis is orthogonal (spec B3.1).
MEASURE = {"chebyshev": "arcsine (Chebyshev) product measure", "legendre": "uniform product measure"}


def index_set_size(d: int, p: int, q: int) -> int:
    """|Lambda(p, q)| in closed form: sum over support sizes s of C(d, s) * C(p, s).

    C(p, s) counts the ways to give s coordinates positive degrees with total <= p. For q = d this is
    C(d + p, p); for q = 2 it is 1 + d p + C(d, 2) p (p - 1) / 2 (spec B3.1). Exact Python integers, so
    it can be checked before anything of that size is allocated.
    """
    return sum(comb(d, s) * comb(p, s) for s in range(0, min(q, d, p) + 1))


def max_dimension(p: int, q: int, max_terms: int) -> int:
    """Largest d whose index set Lambda(p, q) has at most ``max_terms`` terms (0 if none)."""
    d = 0
    while index_set_size(d + 1, p, q) <= max_terms and d < 100_000:
        d += 1
    return d


def _compositions(total_max: int, parts: int) -> Iterator[tuple[int, ...]]:
    """All tuples of ``parts`` positive integers with sum <= total_max."""
    if parts == 0:
        yield ()
        return
    for first in range(1, total_max - parts + 2):
        for rest in _compositions(total_max - first, parts - 1):
            yield (first, *rest)


def index_set(d: int, p: int, q: int) -> np.ndarray:
    """The multi-indices of Lambda(p, q) as an ``(L, d)`` int16 array, ordered by total degree, then by
    support and degrees. Row 0 is the constant term."""
    rows: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
    for s in range(0, min(q, d, p) + 1):
        for support in combinations(range(d), s):
            for degrees in _compositions(p, s):
                rows.append((sum(degrees), support, degrees))
    rows.sort(key=lambda r: (r[0], len(r[1]), r[1], r[2]))
    alpha = np.zeros((len(rows), d), dtype=np.int16)
    for n, (_, support, degrees) in enumerate(rows):
        alpha[n, list(support)] = degrees
    return alpha


def norms(alpha: np.ndarray, basis: BasisName) -> np.ndarray:
    """gamma_alpha = E_mu[T_alpha^2] under the basis's own measure (spec B3.1)."""
    a = np.asarray(alpha, dtype=np.float64)
    if basis == "chebyshev":
        return np.prod(np.where(a > 0, 0.5, 1.0), axis=1)
    if basis == "legendre":
        return np.prod(1.0 / (2.0 * a + 1.0), axis=1)
    raise ValueError(f"unknown basis {basis!r}")


def univariate_table(z: np.ndarray, p: int, basis: BasisName) -> np.ndarray:
    """Values of the 1-D basis polynomials of degree 0..p at every entry of ``z``: shape ``(*z.shape, p+1)``.

    Three-term recurrences: T_{k+1} = 2 z T_k - T_{k-1}; (k+1) P_{k+1} = (2k+1) z P_k - k P_{k-1}.
    """
    z = np.asarray(z, dtype=np.float64)
    out = np.empty((*z.shape, p + 1), dtype=np.float64)
    out[..., 0] = 1.0
    if p >= 1:
        out[..., 1] = z
    for k in range(1, p):
        if basis == "chebyshev":
            out[..., k + 1] = 2.0 * z * out[..., k] - out[..., k - 1]
        elif basis == "legendre":
            out[..., k + 1] = ((2 * k + 1) * z * out[..., k] - k * out[..., k - 1]) / (k + 1)
        else:
            raise ValueError(f"unknown basis {basis!r}")
    return out


@dataclass(frozen=True)
class TermPlan:
    """Each term as a fixed number of (coordinate, degree) factors, padded with a constant-one factor, so
    the design matrix is a product of a few gathers instead of a loop over terms."""

    factor_columns: np.ndarray  # (L, width) column indices into the flattened univariate table (+1 column of ones)
    d: int
    p: int

    @classmethod
    def from_alpha(cls, alpha: np.ndarray, p: int) -> "TermPlan":
        alpha = np.asarray(alpha)
        L, d = alpha.shape
        width = max(1, int((alpha > 0).sum(axis=1).max(initial=0)))
        ones = d * (p + 1)  # index of the appended column of ones
        cols = np.full((L, width), ones, dtype=np.int64)
        for n in range(L):
            support = np.flatnonzero(alpha[n])
            cols[n, : len(support)] = support * (p + 1) + alpha[n, support]
        return cls(factor_columns=cols, d=d, p=p)


def design_matrix(z: np.ndarray, alpha: np.ndarray, basis: BasisName, plan: TermPlan | None = None) -> np.ndarray:
    """Phi[m, n] = T_{alpha_n}(z_m) for points ``z`` of shape ``(M, d)``; returns ``(M, L)`` float64."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    alpha = np.asarray(alpha)
    p = int(alpha.max(initial=0))
    plan = plan if plan is not None and plan.p == p else TermPlan.from_alpha(alpha, p)
    table = univariate_table(z, p, basis).reshape(len(z), -1)
    table = np.concatenate([table, np.ones((len(z), 1))], axis=1)
    phi = table[:, plan.factor_columns[:, 0]]
    for s in range(1, plan.factor_columns.shape[1]):
        phi *= table[:, plan.factor_columns[:, s]]
    return phi


# ------------------------------------------------------------------------------------------- box mapping
def to_reference(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """z = (2x - a - b) / (b - a): the affine map of the box onto [-1, 1]^d (spec B3.1)."""
    a, b = box[:, 0], box[:, 1]
    return (2.0 * np.asarray(x, dtype=np.float64) - a - b) / (b - a)


def from_reference(z: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_reference`: x = (a + b)/2 + z (b - a)/2."""
    a, b = box[:, 0], box[:, 1]
    return 0.5 * (a + b) + 0.5 * (b - a) * np.asarray(z, dtype=np.float64)


def univariate_monomials(k: int, a: float, b: float, basis: BasisName = "chebyshev") -> np.ndarray:
    """Coefficients (ascending powers of x) of T_k(z(x)) with z = (2x - a - b)/(b - a) (spec B3.4).

    Example: T_2 on [0, 10] is 0.08 x^2 - 0.8 x + 1. Monomial coefficients are ill-conditioned beyond
    degree ~8; the Chebyshev form is the one to compute with.
    """
    from numpy.polynomial import chebyshev as C
    from numpy.polynomial import legendre as Lg
    from numpy.polynomial import polynomial as P

    unit = np.zeros(k + 1)
    unit[k] = 1.0
    in_z = C.cheb2poly(unit) if basis == "chebyshev" else Lg.leg2poly(unit)
    scale, shift = 2.0 / (b - a), -(a + b) / (b - a)
    out = np.zeros(1)
    power = np.ones(1)  # (scale x + shift)^j
    for j, c in enumerate(in_z):
        if j:
            power = P.polymul(power, [shift, scale])
        out = P.polyadd(out, c * power)
    return np.trim_zeros(out, "b") if np.any(out) else np.zeros(1)
