"""The surrogate as a formula a person can read (spec B3.4, "symbolic export"): the fewest basis terms that
explain a stated share of the surrogate's variance, written out in the coordinates' own names and units.

Each coordinate u_i enters the basis through the box mapping z_i = (u_i - m_i) / h_i (m_i the box centre, h_i
its half-width). Substituting it into the kept polynomials T_k(z_i) gives an exact polynomial in the centred
coordinates (u_i - m_i), so every coefficient is in output units per unit of that coordinate and the
intercept is the formula's value at the box centre. Centring keeps the expansion well conditioned; plain
monomials in u_i would cancel each other in large numbers far from 0 (spec B3.4 warns beyond degree ~8).

The printed coefficients are rounded to a few significant digits and the formula's fidelity is measured on
exactly what is printed (:meth:`ReadableFormula.evaluate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from governance_plugins.spectral.basis import BasisName
from governance_plugins.spectral.fit import fewest_terms

#: significant digits of printed coefficients and box centres
COEF_DIGITS = 3
CENTRE_DIGITS = 4
#: monomials smaller than this fraction of the largest one (over the box) are dropped: they are residue of rounding
#: the box centres (or float noise), below what the 3-digit rounding of the printed coefficients already changes
NEGLIGIBLE = 1e-4
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def round_sig(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant digits (0 stays 0)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def fmt_number(x: float, digits: int = COEF_DIGITS) -> str:
    """|x| to ``digits`` significant digits, without an exponent between 1e-3 and 1e6 (``0.0123``, ``1230``).
    The sign is left to the caller, which writes it as an operator."""
    ax = abs(round_sig(float(x), digits))
    if ax == 0:
        return "0"
    if 1e-3 <= ax < 1e6:
        decimals = max(0, digits - 1 - int(math.floor(math.log10(ax))))
        text = f"{ax:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{ax:.{digits}g}"


@dataclass
class BoxMap:
    """The box mapping written out: z_i = (u_i - centre_i) / half_width_i, with the centre as printed."""

    names: list[str]
    centre: np.ndarray  # (d,) box centres rounded to CENTRE_DIGITS (0 when negligible)
    exact_centre: np.ndarray  # (d,)
    half_width: np.ndarray  # (d,)

    @classmethod
    def from_box(cls, names: Sequence[str], box: np.ndarray) -> "BoxMap":
        centre = 0.5 * (box[:, 0] + box[:, 1])
        half = 0.5 * (box[:, 1] - box[:, 0])
        shown = np.array([0.0 if abs(c) <= 1e-6 * h else round_sig(float(c), CENTRE_DIGITS)
                          for c, h in zip(centre, half)])
        return cls(names=list(names), centre=shown, exact_centre=centre, half_width=half)

    def centred(self, i: int) -> str:
        """``(age − 41.5)``, ``(x + 2)`` or ``x`` when the printed centre is 0."""
        c = float(self.centre[i])
        if c == 0:
            return self.names[i]
        return f"({self.names[i]} {'−' if c > 0 else '+'} {fmt_number(c, CENTRE_DIGITS)})"

    def mapping_text(self, i: int) -> str:
        """``z(age) = (age − 41.5) / 12.25``: the half-width to 4 significant digits (the formula itself uses
        the exact one)."""
        return f"z({self.names[i]}) = {self.centred(i)} / {fmt_number(float(self.half_width[i]), 4)}"

    def univariate(self, i: int, k: int, basis: BasisName) -> np.ndarray:
        """Ascending coefficients in v = u_i - centre_i of the degree-k basis polynomial T_k(z_i(u_i))."""
        from numpy.polynomial import chebyshev as C
        from numpy.polynomial import legendre as Lg
        from numpy.polynomial import polynomial as P

        unit = np.zeros(k + 1)
        unit[k] = 1.0
        in_z = C.cheb2poly(unit) if basis == "chebyshev" else Lg.leg2poly(unit)
        h = float(self.half_width[i])
        shift = (float(self.centre[i]) - float(self.exact_centre[i])) / h  # z = shift + v / h
        out, power = np.zeros(1), np.ones(1)
        for j, c in enumerate(in_z):
            if j:
                power = P.polymul(power, [shift, 1.0 / h])
            out = P.polyadd(out, c * power)
        return out


@dataclass(frozen=True)
class Monomial:
    """coefficient * prod_i (u_i - centre_i)^power_i, as printed."""

    coefficient: float
    powers: tuple[tuple[int, int], ...]  # (coordinate, power > 0), sorted by coordinate


@dataclass
class ReadableFormula:
    """One output's readable formula, the basis terms it came from, and the share of variance they carry."""

    output: str  # the output's name and index (set by the caller)
    index: int
    terms: np.ndarray  # indices into the index set, largest energy first (the ones written out)
    n_needed: int  # terms the stated share needs (> len(terms) when capped at formula_max_terms)
    share: float  # share of the surrogate's variance the written-out terms carry (nan: constant surrogate)
    target: float  # the stated share (config formula_share)
    intercept: float
    monomials: list[Monomial]
    box_map: BoxMap
    coordinates: list[int] = field(default_factory=list)  # coordinates that appear in the formula

    def evaluate(self, U: np.ndarray) -> np.ndarray:
        """The printed formula at points U (n, d) in the coordinates' own units."""
        V = np.asarray(U, dtype=np.float64) - self.box_map.centre
        out = np.full(len(V), self.intercept)
        for m in self.monomials:
            term = np.full(len(V), m.coefficient)
            for i, power in m.powers:
                term = term * V[:, i] ** power
            out += term
        return out

    @property
    def text(self) -> str:
        parts = [fmt_number(self.intercept) if self.intercept >= 0 else "−" + fmt_number(self.intercept)]
        for m in self.monomials:
            factors = "·".join(self.box_map.centred(i) + (str(power).translate(_SUPERSCRIPT) if power > 1 else "")
                               for i, power in m.powers)
            parts.append(f"{'+' if m.coefficient >= 0 else '−'} {fmt_number(m.coefficient)}·{factors}")
        return " ".join(parts)


def readable_formula(coef_row: np.ndarray, alpha: np.ndarray, gamma: np.ndarray, box_map: BoxMap,
                     basis: BasisName, *, share: float, max_terms: int, constant: bool = False) -> ReadableFormula:
    """The fewest terms holding ``share`` of the variance (at most ``max_terms``), written out in units.
    ``constant``: the network's output does not vary, so the formula is its constant term alone (the other
    coefficients are float noise)."""
    selected, reached = fewest_terms(coef_row, gamma, share)
    if constant:
        selected, reached = selected[:0], float("nan")
    shown = selected[:max_terms]
    energy = np.asarray(coef_row, dtype=np.float64) ** 2 * gamma
    total = float(energy[1:].sum()) if len(energy) > 1 else 0.0
    if len(shown) < len(selected):
        reached = float(energy[shown].sum() / total)
    polynomial, rank = _expand(coef_row, alpha, shown, box_map, basis)
    constant = polynomial.pop((), 0.0)
    # a monomial's swing: its largest size on the box; rounding residue (e.g. T1 + T3 cancelling in z) is dropped
    swing = {key: abs(c) * math.prod(float(box_map.half_width[i]) ** j for i, j in key)
             for key, c in polynomial.items()}
    scale = max(swing.values(), default=0.0)
    # order: the rank of the largest term a monomial comes from, then higher powers first (T3 -> z^3 before z)
    keep = sorted((key for key in polynomial if swing[key] > NEGLIGIBLE * scale),
                  key=lambda k: (rank[k], -sum(j for _, j in k)))
    monomials = [Monomial(round_sig(polynomial[key], COEF_DIGITS), key) for key in keep]
    intercept = round_sig(constant, COEF_DIGITS) if abs(constant) > NEGLIGIBLE * scale else 0.0
    used = sorted({i for m in monomials for i, _ in m.powers})
    return ReadableFormula(output="", index=0, terms=shown, n_needed=len(selected), share=reached,
                           target=share, intercept=intercept, monomials=monomials, box_map=box_map,
                           coordinates=used)


Polynomial = dict[tuple[tuple[int, int], ...], float]


def _expand(coef_row: np.ndarray, alpha: np.ndarray, terms: np.ndarray, box_map: BoxMap,
            basis: BasisName) -> tuple[Polynomial, dict[tuple[tuple[int, int], ...], int]]:
    """The constant term plus ``terms``, as {((coordinate, power), ...): coefficient} in centred units, and for
    each monomial the position (in ``terms``) of the first term it comes from."""
    polynomial: Polynomial = {(): float(coef_row[0])}
    rank: dict[tuple[tuple[int, int], ...], int] = {(): -1}
    cache: dict[tuple[int, int], np.ndarray] = {}
    for position, n in enumerate(terms):
        partial: Polynomial = {(): float(coef_row[n])}
        for i in np.flatnonzero(alpha[n]):
            i, k = int(i), int(alpha[n, i])
            poly = cache.setdefault((i, k), box_map.univariate(i, k, basis))
            partial = {key + (((i, j),) if j else ()): c * float(poly[j])
                       for key, c in partial.items() for j in range(len(poly)) if poly[j] != 0.0}
        for key, c in partial.items():
            polynomial[key] = polynomial.get(key, 0.0) + c
            rank.setdefault(key, position)
    return polynomial, rank


def coordinate_definitions(reduction: object, coordinates: Sequence[int], top: int = 8) -> list[dict[str, str]]:
    """What each expansion coordinate in a formula is, in the model's inputs: PCA scores with their largest
    loadings (pc1 = 0.41·px[3,4] − 0.22·px[2,5] + … − 0.37), image blocks as pixel means. Empty for
    coordinates that are inputs themselves."""
    kind = getattr(reduction, "kind")
    names, inputs = reduction.names, reduction.input_names  # type: ignore[attr-defined]
    out = []
    for c in coordinates:
        if kind == "pca":
            out.append({"coordinate": names[c], "definition": _loading_text(reduction, c, inputs, top)})
        elif kind == "pool":
            out.append({"coordinate": names[c], "definition": "mean of the pixels in that block (rows, columns "
                        "as Python slices), every pixel of the block moving together"})
    return out


def _loading_text(reduction: object, c: int, inputs: Sequence[str], top: int) -> str:
    w = np.asarray(reduction.encoder[c], dtype=np.float64)  # type: ignore[attr-defined]
    order = np.argsort(-np.abs(w), kind="stable")[:top]
    offset = -float(w @ reduction.e0)  # type: ignore[attr-defined]
    parts = []
    for n, i in enumerate(order):
        coef = round_sig(float(w[i]), COEF_DIGITS)
        sign = ("−" if coef < 0 else "") if n == 0 else ("− " if coef < 0 else "+ ")
        parts.append(f"{sign}{fmt_number(coef)}·{inputs[i]}")  # coef is already rounded
    rest = int(np.count_nonzero(w)) - len(order)
    carried = float((w[order] ** 2).sum() / max((w**2).sum(), 1e-300))
    text = f"{reduction.names[c]} = " + " ".join(parts)  # type: ignore[attr-defined]
    if rest > 0:
        text += f" + … ({rest} more loadings)"
    text += f" {'−' if offset < 0 else '+'} {fmt_number(offset)}"
    return text + (f"; the {len(order)} loadings shown carry {carried:.0%} of the squared loadings" if rest > 0 else "")
