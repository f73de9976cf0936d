"""The surrogate's terms as text: ranked terms in the basis, the basis form of a formula, the strictly linear
part in the coordinates' own units, and an optional sympy expression (spec B3.4). The readable formula in the
coordinates' units is :mod:`governance_plugins.spectral.readable`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from governance_plugins.spectral.basis import SYMBOL, BasisName
from governance_plugins.spectral.fit import rank_terms, term_energy


def term_label(alpha_row: np.ndarray, names: Sequence[str], basis: BasisName) -> str:
    """``T1(mean radius)·T2(x7)``; ``1`` for the constant term."""
    support = np.flatnonzero(alpha_row)
    if not len(support):
        return "1"
    sym = SYMBOL[basis]
    return "·".join(f"{sym}{int(alpha_row[i])}({names[i]})" for i in support)


def ranked_terms(coef_row: np.ndarray, alpha: np.ndarray, gamma: np.ndarray, names: Sequence[str],
                 basis: BasisName, top: int) -> list[dict[str, Any]]:
    """The ``top`` non-constant terms by |c| sqrt(gamma) (each term's standard deviation under the basis
    measure, spec B3.3), with their share of the surrogate's variance and the cumulative share."""
    energy = term_energy(coef_row, gamma)
    variance = float(energy.sum())
    rows, cumulative = [], 0.0
    for n in rank_terms(coef_row, gamma)[:top]:
        share = float(energy[n] / variance) if variance > 0 else float("nan")
        cumulative += share
        rows.append({"term": term_label(alpha[n], names, basis), "coefficient": float(coef_row[n]),
                     "degree": int(alpha[n].sum()), "order": int(np.count_nonzero(alpha[n])),
                     "std": float(np.sqrt(energy[n])), "variance_share": share, "cumulative_share": cumulative})
    return rows


def chebyshev_text(coef_row: np.ndarray, alpha: np.ndarray, terms: Sequence[int], names: Sequence[str],
                   basis: BasisName, digits: int = 3) -> str:
    """``2.31 + 0.83·T1(mean radius) − 0.41·T1(x3)·T2(x7)``: the constant and ``terms`` in the basis, in the
    box's reference coordinates (each input mapped onto [-1, 1])."""
    c0 = float(coef_row[0])
    parts = [f"{'−' if c0 < 0 else ''}{abs(c0):.{digits}g}"]
    for n in terms:
        c = float(coef_row[n])
        parts.append(f"{'+' if c >= 0 else '−'} {abs(c):.{digits}g}·{term_label(alpha[n], names, basis)}")
    return " ".join(parts)


def linear_in_units(coef_row: np.ndarray, alpha: np.ndarray, box: np.ndarray) -> tuple[float, np.ndarray]:
    """The degree-1 truncation c0 + sum_i c_i z_i rewritten as intercept + sum_i w_i u_i in the coordinates'
    own units (z_i = (2 u_i - a_i - b_i)/(b_i - a_i)). Returns (intercept, weights (d,))."""
    d = alpha.shape[1]
    slopes = np.zeros(d)
    for n in np.flatnonzero(alpha.sum(axis=1) == 1):
        slopes[int(np.flatnonzero(alpha[n])[0])] = coef_row[n]
    a, b = box[:, 0], box[:, 1]
    weights = 2.0 * slopes / (b - a)
    intercept = float(coef_row[0] - np.sum(slopes * (a + b) / (b - a)))
    return intercept, weights


def linear_text(intercept: float, weights: np.ndarray, names: Sequence[str], top: int, digits: int = 3) -> str:
    order = np.argsort(-np.abs(weights))[:top]
    parts = [f"{intercept:.{digits}g}"] + [
        f"{'+' if weights[i] >= 0 else '−'}{abs(weights[i]):.{digits}g}·{names[i]}" for i in order if weights[i] != 0]
    rest = int(np.count_nonzero(weights)) - len(parts) + 1
    if rest > 0:
        parts.append(f"… (+{rest} more)")
    return " ".join(parts)


def to_sympy(coef_row: np.ndarray, alpha: np.ndarray, names: Sequence[str], basis: BasisName,
             box: np.ndarray | None = None, tol: float = 0.0) -> Any:
    """A sympy expression of the surrogate (terms with |c| > tol). With ``box`` the reference coordinates
    are substituted by the affine map of the inputs and the result is expanded into monomials in the
    inputs' own units: exact in rational arithmetic, but ill-conditioned beyond degree ~8 (spec B3.4)."""
    import sympy

    symbols = [sympy.Symbol(str(n)) for n in names]
    poly = sympy.chebyshevt if basis == "chebyshev" else sympy.legendre
    z = list(symbols)
    if box is not None:
        z = [(2 * s - float(lo) - float(hi)) / (float(hi) - float(lo)) for s, (lo, hi) in zip(symbols, box)]
    expr = sympy.Integer(0)
    for n in np.flatnonzero(np.abs(coef_row) > tol):
        term = sympy.Float(float(coef_row[n]))
        for i in np.flatnonzero(alpha[n]):
            term *= poly(int(alpha[n, i]), z[i])
        expr += term
    return sympy.expand(expr) if box is not None else expr
