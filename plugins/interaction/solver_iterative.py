"""Inexact solvers for large n or many models, and the reference SGD kept for reproduction (spec §2.9.4).

* :func:`solve_smooth_lbfgs`: |z| → √(z²+μ²), max_i → μ·log Σ_i exp(·/μ), L-BFGS-B (boxes handled natively)
  with continuation on μ from 1 to 0.001 × the output scale |v(N) - v(∅)|. Not exact: report its gap.
* :func:`solve_reference_sgd`: SGD with momentum 0.9 from γ = q = 0, clipping to the boxes before every
  step, lr decaying log-uniformly (single model) or constant (joint), as the paper's code does. It did not
  converge on the spec's synthetic fixtures; it is here so that users can reproduce the paper.
* :func:`dual_lower_bound`: a certified lower bound on the Eq. 4 optimum from any point (LP duality, [R]).

All models and both transforms are evaluated in one stacked butterfly per pass (2m rows), so an iteration
costs O(m·n·2ⁿ) with a handful of NumPy calls.
"""

from __future__ import annotations

import time

import numpy as np

from governance_plugins.interaction.problem import Problem, Solution, finish
from governance_plugins.interaction.transforms import (
    complement,
    moebius,
    moebius_adjoint,
    or_transform_adjoint,
    zeta_adjoint,
)


class _Engine:
    """Parameter packing, the stacked forward transform and its adjoint for one problem."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.m, self.size = problem.m, problem.size
        self.has_ghat = problem.m > 1
        self.has_q = problem.error_term
        blocks = [("gbar", 1, np.inf)]
        if self.has_ghat:
            blocks.append(("ghat", self.m, None))
        if self.has_q:
            blocks.append(("q", self.m, None))
        self.blocks = blocks
        lo, hi = [np.full(self.size, -np.inf)], [np.full(self.size, np.inf)]
        if self.has_ghat:
            lo.append(np.repeat(-problem.tau_gamma, self.size))
            hi.append(np.repeat(problem.tau_gamma, self.size))
        if self.has_q:
            lo.append(np.repeat(-problem.tau_eps, self.size))
            hi.append(np.repeat(problem.tau_eps, self.size))
        self.lower, self.upper = np.concatenate(lo), np.concatenate(hi)
        self.dim = len(self.lower)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, m = self.size, self.m
        gbar = x[:s]
        off = s
        ghat = np.zeros((m, s))
        q = np.zeros((m, s))
        if self.has_ghat:
            ghat = x[off : off + m * s].reshape(m, s)
            off += m * s
        if self.has_q:
            q = x[off : off + m * s].reshape(m, s)
        return gbar, ghat, q

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gbar, ghat, q = self.unpack(x)
        w = 0.5 * q + gbar + ghat
        v_and = 0.5 * self.p.v + w
        v_or = 0.5 * self.p.v + q - w
        stacked = moebius(np.concatenate([v_and, complement(v_or)]))
        i_and = stacked[: self.m]
        i_or = -stacked[self.m :]
        i_or[:, 0] = v_or[:, 0]
        return i_and, i_or

    def backward(self, g_and: np.ndarray, g_or: np.ndarray) -> np.ndarray:
        """Gradient with respect to the packed parameters, given dL/dI_and and dL/dI_or."""
        g_or = g_or.copy()
        g0 = g_or[:, 0].copy()
        g_or[:, 0] = 0.0
        back = moebius_adjoint(np.concatenate([g_and, -g_or]))
        d_and = back[: self.m]
        d_or = np.ascontiguousarray(complement(back[self.m :]))
        d_or[:, 0] += g0
        d_w = d_and - d_or
        parts = [d_w.sum(axis=0)]
        if self.has_ghat:
            parts.append(d_w.ravel())
        if self.has_q:
            parts.append((0.5 * (d_and + d_or)).ravel())
        return np.concatenate(parts)

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lower, self.upper)


def _one_blas_thread():
    """L-BFGS-B calls BLAS on short vectors; several BLAS threads only spin there (5x slower measured on a
    busy 2-core machine). Limit BLAS to one thread while it runs."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _scale(problem: Problem) -> float:
    s = float(np.mean(np.abs(problem.v[:, -1] - problem.v[:, 0])))
    return s if s > 0 else float(max(np.abs(problem.v).max(), 1.0))


def _smoothed(problem: Problem, i_and: np.ndarray, i_or: np.ndarray, mu: float):
    """Smoothed loss and its gradient with respect to (I_and, I_or)."""
    stack = np.stack([i_and, i_or])  # (2, m, 2ⁿ)
    a = np.sqrt(stack * stack + mu * mu)
    d_abs = stack / a
    if problem.m == 1:
        return float(a.sum()), d_abs[0], d_abs[1]
    z = a / mu
    zmax = z.max(axis=1, keepdims=True)
    ez = np.exp(z - zmax)
    sez = ez.sum(axis=1, keepdims=True)
    soft = mu * (np.log(sez) + zmax)
    weights = ez / sez
    loss = problem.row_weight * soft.sum() + problem.alpha * a.sum()
    grad = (problem.row_weight * weights + problem.alpha) * d_abs
    return float(loss), grad[0], grad[1]


def solve_smooth_lbfgs(problem: Problem, *, stages: int = 7, max_iter: int = 400, mu_start: float = 1.0,
                       mu_end: float = 1e-3, time_limit: float = 600.0, x0: np.ndarray | None = None) -> Solution:
    """Smoothed objective, L-BFGS-B with continuation on μ (spec §2.9.4). ``trace`` holds the exact loss
    after every stage."""
    from scipy.optimize import Bounds, minimize

    start = time.perf_counter()
    eng = _Engine(problem)
    scale = _scale(problem)
    x = np.zeros(eng.dim) if x0 is None else eng.clip(np.asarray(x0, dtype=float))
    bounds = Bounds(eng.lower, eng.upper)
    trace, iters, message = [], 0, ""
    mus = scale * np.geomspace(mu_start, mu_end, max(stages, 1))
    for mu in mus:
        def fun(params: np.ndarray, mu: float = float(mu)):
            i_and, i_or = eng.forward(params)
            loss, g_and, g_or = _smoothed(problem, i_and, i_or, mu)
            return loss, eng.backward(g_and, g_or)

        with _one_blas_thread():
            res = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": int(max_iter), "maxcor": 20, "ftol": 1e-12, "gtol": 1e-9})
        x = eng.clip(res.x)
        iters += int(res.nit)
        message = str(res.message)
        trace.append(problem.loss(*eng.forward(x)))
        if time.perf_counter() - start > time_limit:
            message = f"time limit reached after μ = {mu:.3g}"
            break
    gbar, ghat, q = eng.unpack(x)
    sol = finish(problem, "smooth_lbfgs", False, gbar.copy(), ghat.copy(), q.copy(), status="stopped",
                 seconds=time.perf_counter() - start, iterations=iters, message=message, trace=trace)
    sol.smoothing = float(mus[-1])
    return sol


def solve_reference_sgd(problem: Problem, *, lr: float = 1e-5, iterations: int = 20000, momentum: float = 0.9,
                        lr_decay: bool | None = None, trace_every: int = 1000) -> Solution:
    """The paper code's optimiser: SGD with momentum from zero, boxes clipped before each step, the last
    iteration clipping without stepping. ``lr_decay=None`` follows the code: log-uniform decay from lr to
    lr/10 for one model, constant for the joint problem. Rowmax ties share the subgradient evenly."""
    start = time.perf_counter()
    eng = _Engine(problem)
    decay = (problem.m == 1) if lr_decay is None else bool(lr_decay)
    x = np.zeros(eng.dim)
    buf = np.zeros(eng.dim)
    trace = []
    total = max(int(iterations), 1)
    rates = lr * (10.0 ** (-np.arange(total) / max(total - 1, 1))) if decay else np.full(total, lr)
    for it in range(total):
        x = eng.clip(x)
        if it == total - 1:
            break
        i_and, i_or = eng.forward(x)
        stack = np.stack([i_and, i_or])
        sign = np.sign(stack)
        if problem.m == 1:
            grad = sign
        else:
            a = np.abs(stack)
            top = a == a.max(axis=1, keepdims=True)
            grad = problem.row_weight * top * sign / top.sum(axis=1, keepdims=True) + problem.alpha * sign
        buf = momentum * buf + eng.backward(grad[0], grad[1])
        x = x - rates[it] * buf
        if trace_every and it % trace_every == 0:
            trace.append(problem.loss(i_and, i_or))
    gbar, ghat, q = eng.unpack(x)
    return finish(problem, "reference", False, gbar.copy(), ghat.copy(), q.copy(), status="stopped",
                  seconds=time.perf_counter() - start, iterations=total, message=f"{total} SGD iterations",
                  trace=trace)


def _or_inverse_adjoint(g: np.ndarray) -> np.ndarray:
    """Transpose of :func:`or_inverse` (B⁻ᵀ)."""
    total = g.sum()
    out = total - zeta_adjoint(complement(g))
    out[0] = total
    return out


def dual_lower_bound(problem: Problem, i_and: np.ndarray, i_or: np.ndarray, *,
                     mu: float | None = None) -> float:
    """A certified lower bound on the Eq. 4 optimum of a single-model ``problem`` [R, derived; weak].

    LP duality: for any y_and, y_or with |y| ≤ 1 and Aᵀy_and = Bᵀy_or =: z, every feasible point has
    L4 ≥ ⟨z, v + q⟩ ≥ ⟨z, v⟩ - τ_ε‖z‖₁. Candidates y = I/√(I²+μ²) from a smoothed optimum are made feasible
    by solving for one side exactly (A⁻ᵀ = zetaᵀ, B⁻ᵀ = or_inverseᵀ) and scaling into the unit box; the best
    over a few μ around the solver's final smoothing is returned. Tight only near a smoothed optimum, and
    far from tight at n = 10 (about half the optimum was seen): use the LP optimum whenever it exists."""
    if problem.m != 1:
        raise ValueError("the dual bound is for one model")
    base = 1e-3 * _scale(problem) if mu is None else mu
    v, te = problem.v[0], problem.tau_eps[0]
    best = -np.inf
    for factor in (0.3, 1.0, 3.0):
        m = base * factor
        g_and = i_and[0] / np.sqrt(i_and[0] ** 2 + m * m)
        g_or = i_or[0] / np.sqrt(i_or[0] ** 2 + m * m)
        at_g = moebius_adjoint(g_and)
        bt_g = or_transform_adjoint(g_or)
        for z, y_and, y_or in ((bt_g, zeta_adjoint(bt_g), g_or), (at_g, g_and, _or_inverse_adjoint(at_g))):
            s = max(1.0, float(np.abs(y_and).max()), float(np.abs(y_or).max()))
            zs = z / s
            best = max(best, float(zs @ v - te * np.abs(zs).sum()))
    return best
