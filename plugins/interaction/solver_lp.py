"""Exact solver: Eq. 4 / Eq. 6 as a linear programme (spec §2.9.4, §6.4), solved by HiGHS interior point.

The LP is built in the γ-parameterisation with every transform written as a sparse butterfly chain
(n·2ⁿ⁻¹ auxiliary variables per transform, 3 non-zeros per row), never as dense 2ⁿ×2ⁿ matrices:

* variables: γ̄ (free), γ̂ᵢ ∈ ±τ_γ,i (m ≥ 2 only), qᵢ ∈ ±τ_ε,i (error term on only),
  wᵢ = ½qᵢ + γ̄ + γ̂ᵢ, so v_and,i = ½vᵢ + wᵢ and v_or,i = ½vᵢ + qᵢ - wᵢ;
* I_and,i = c_and,i + Möbius-chain(wᵢ) and I_or,i = c_or,i + OR-chain(qᵢ - wᵢ), with the constants
  c = transforms of ½vᵢ computed numerically;
* epigraphs e ≥ ±I (per entry) and, for m ≥ 2, t ≥ eᵢ (per subset);
* minimise Σe (m = 1) or w_row·Σt + α·Σe.

``method="highs"`` (HiGHS's automatic choice, simplex here) took 738 s at n = 10 in the review; the
interior-point method takes seconds, so it is the only one used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from governance_plugins.interaction.problem import Problem, Solution, finish
from governance_plugins.interaction.transforms import or_transform, moebius


@dataclass
class _Builder:
    """Accumulates a sparse LP: variables with bounds, equality and ≤ rows in COO form."""

    lb: list[np.ndarray] = field(default_factory=list)
    ub: list[np.ndarray] = field(default_factory=list)
    n_vars: int = 0
    eq: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (cols, coefs) per row
    n_eq: int = 0
    le: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (cols, coefs, rhs)
    n_le: int = 0
    eq_rhs: list[np.ndarray] = field(default_factory=list)

    def add_vars(self, count: int, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
        idx = np.arange(self.n_vars, self.n_vars + count)
        self.lb.append(np.full(count, lo))
        self.ub.append(np.full(count, hi))
        self.n_vars += count
        return idx

    def add_eq(self, cols: np.ndarray, coefs: np.ndarray, rhs: np.ndarray | float = 0.0) -> None:
        """Rows Σ_k coefs[r,k]·x[cols[r,k]] = rhs[r]."""
        cols, coefs = np.atleast_2d(cols), np.atleast_2d(coefs)
        self.eq.append((cols, coefs, np.broadcast_to(rhs, (cols.shape[0],)).astype(float)))
        self.n_eq += cols.shape[0]

    def add_le(self, cols: np.ndarray, coefs: np.ndarray, rhs: np.ndarray | float) -> None:
        """Rows Σ_k coefs[r,k]·x[cols[r,k]] ≤ rhs[r]."""
        cols, coefs = np.atleast_2d(cols), np.atleast_2d(coefs)
        self.le.append((cols, coefs, np.broadcast_to(rhs, (cols.shape[0],)).astype(float)))
        self.n_le += cols.shape[0]

    @staticmethod
    def _matrix(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_vars: int):
        from scipy import sparse

        if not blocks:
            return None, None
        rows, cols, vals, rhs, offset = [], [], [], [], 0
        for c, a, b in blocks:
            r = np.repeat(np.arange(offset, offset + c.shape[0]), c.shape[1])
            rows.append(r)
            cols.append(c.ravel())
            vals.append(a.ravel())
            rhs.append(b)
            offset += c.shape[0]
        mat = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(offset, n_vars)).tocsr()
        mat.eliminate_zeros()
        return mat, np.concatenate(rhs)

    def matrices(self):
        a_eq, b_eq = self._matrix(self.eq, self.n_vars)
        a_ub, b_ub = self._matrix(self.le, self.n_vars)
        bounds = np.column_stack([np.concatenate(self.lb), np.concatenate(self.ub)])
        return a_eq, b_eq, a_ub, b_ub, bounds


def _chain(b: _Builder, cols: np.ndarray, coefs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Möbius butterfly on a vector of single-variable terms (col, coef): each pass adds 2ⁿ⁻¹ variables
    y = x[hi] - x[lo] (hi = entries with bit j set). Returns the final (cols, coefs)."""
    cols, coefs = cols.copy(), coefs.astype(float).copy()
    idx = np.arange(1 << n)
    for j in range(n):
        hi = idx[(idx >> j) & 1 == 1]
        lo = hi ^ (1 << j)
        y = b.add_vars(len(hi))
        b.add_eq(np.column_stack([y, cols[hi], cols[lo]]),
                 np.column_stack([np.ones(len(hi)), -coefs[hi], coefs[lo]]))
        cols[hi] = y
        coefs[hi] = 1.0
    return cols, coefs


@dataclass
class LPLayout:
    """Where each block lives in the LP's variable vector (for reading the answer and for face checks)."""

    gbar: np.ndarray
    ghat: list[np.ndarray | None]
    q: list[np.ndarray | None]
    e_and: list[np.ndarray]
    e_or: list[np.ndarray]
    objective: np.ndarray


def build_lp(problem: Problem):
    """Build the sparse LP; returns (builder, layout)."""
    n, size, m = problem.n, problem.size, problem.m
    b = _Builder()
    gbar = b.add_vars(size)
    ghat: list[np.ndarray | None] = []
    qs: list[np.ndarray | None] = []
    e_and: list[np.ndarray] = []
    e_or: list[np.ndarray] = []
    full = size - 1
    for i in range(m):
        tg, te = problem.tau_gamma[i], problem.tau_eps[i]
        gh = b.add_vars(size, -tg, tg) if m > 1 else None
        q = b.add_vars(size, -te, te) if te > 0 else None
        ghat.append(gh)
        qs.append(q)
        # w = ½q + γ̄ + γ̂: its own variable unless it is γ̄ itself
        if gh is None and q is None:
            w = gbar
        else:
            w = b.add_vars(size)
            parts_c, parts_a = [w, gbar], [np.ones(size), -np.ones(size)]
            if gh is not None:
                parts_c.append(gh)
                parts_a.append(-np.ones(size))
            if q is not None:
                parts_c.append(q)
                parts_a.append(np.full(size, -0.5))
            b.add_eq(np.column_stack(parts_c), np.column_stack(parts_a))
        # OR input r = q - w (a variable when q is on, else -w as a signed term)
        if q is not None:
            r = b.add_vars(size)
            b.add_eq(np.column_stack([r, q, w]), np.column_stack([np.ones(size), -np.ones(size), np.ones(size)]))
            r_cols, r_coefs = r, np.ones(size)
        else:
            r_cols, r_coefs = w, -np.ones(size)
        half = 0.5 * problem.v[i]
        c_and = moebius(half)
        c_or = or_transform(half)
        and_cols, and_coefs = _chain(b, w, np.ones(size), n)
        rev = full ^ np.arange(size)
        or_cols, or_coefs = _chain(b, r_cols[rev], r_coefs[rev], n)
        or_coefs = -or_coefs
        or_cols[0], or_coefs[0] = r_cols[0], r_coefs[0]  # I_or(∅) = v_or(∅)
        for cols, coefs, const, store in ((and_cols, and_coefs, c_and, e_and), (or_cols, or_coefs, c_or, e_or)):
            e = b.add_vars(size, 0.0, np.inf)
            store.append(e)
            b.add_le(np.column_stack([cols, e]), np.column_stack([coefs, -np.ones(size)]), -const)
            b.add_le(np.column_stack([cols, e]), np.column_stack([-coefs, -np.ones(size)]), const)
    objective = np.zeros(0)
    if m == 1:
        t_and, t_or = None, None
    else:
        t_and, t_or = b.add_vars(size, 0.0, np.inf), b.add_vars(size, 0.0, np.inf)
        for i in range(m):
            for e, t in ((e_and[i], t_and), (e_or[i], t_or)):
                b.add_le(np.column_stack([e, t]), np.column_stack([np.ones(size), -np.ones(size)]), 0.0)
    objective = np.zeros(b.n_vars)
    if m == 1:
        objective[e_and[0]] = 1.0
        objective[e_or[0]] = 1.0
    else:
        objective[t_and] = problem.row_weight
        objective[t_or] = problem.row_weight
        for e in e_and + e_or:
            objective[e] = problem.alpha
    return b, LPLayout(gbar=gbar, ghat=ghat, q=qs, e_and=e_and, e_or=e_or, objective=objective)


def _linprog(objective, b: _Builder, time_limit: float, extra_le=None):
    from scipy.optimize import linprog
    from scipy import sparse

    a_eq, b_eq, a_ub, b_ub, bounds = b.matrices()
    if extra_le is not None:
        row, rhs = extra_le
        a_ub = sparse.vstack([a_ub, sparse.csr_matrix(row)]).tocsr()
        b_ub = np.concatenate([b_ub, [rhs]])
    return linprog(objective, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs-ipm",
                   options={"time_limit": float(time_limit), "presolve": True})


class LPFailed(RuntimeError):
    """HiGHS stopped without an optimum (time limit, numerical trouble)."""


def solve_lp(problem: Problem, *, time_limit: float = 600.0) -> Solution:
    """Exact optimum of Eq. 4 (m = 1) or Eq. 6 (m ≥ 2). Raises :class:`LPFailed` if HiGHS does not finish."""
    start = time.perf_counter()
    b, layout = build_lp(problem)
    res = _linprog(layout.objective, b, time_limit)
    if res.status != 0 or res.x is None:
        raise LPFailed(f"HiGHS interior point stopped with status {res.status}: {res.message}")
    x = res.x
    gbar = x[layout.gbar]
    ghat = np.stack([x[g] if g is not None else np.zeros(problem.size) for g in layout.ghat])
    q = np.stack([x[g] if g is not None else np.zeros(problem.size) for g in layout.q])
    sol = finish(problem, "lp", True, gbar, ghat, q, status="optimal", seconds=time.perf_counter() - start,
                 iterations=int(getattr(res, "nit", 0) or 0), message=str(res.message), trace=[float(res.fun)])
    return sol


def offsupport_mass(problem: Problem, optimum: float, on_and: np.ndarray, on_or: np.ndarray, *,
                    rel_tol: float = 1e-9, time_limit: float = 120.0) -> float:
    """Optimal-face check (spec §6.4 step 6): the largest total |I| outside the given support (boolean
    (m, 2ⁿ) masks per op) over all points whose loss is within ``rel_tol`` of ``optimum``. About 0 means
    every optimum has that support. On the optimal face every epigraph variable equals its |I|, so
    maximising Σe off the support is exact."""
    b, layout = build_lp(problem)
    target = np.zeros(b.n_vars)
    for i in range(problem.m):
        target[layout.e_and[i][~np.asarray(on_and[i], bool)]] = -1.0
        target[layout.e_or[i][~np.asarray(on_or[i], bool)]] = -1.0
    res = _linprog(target, b, time_limit, extra_le=(layout.objective, optimum * (1 + rel_tol) + rel_tol))
    if res.status != 0:
        raise LPFailed(f"face check failed: {res.message}")
    return float(-res.fun)
