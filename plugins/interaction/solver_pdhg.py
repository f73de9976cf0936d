"""First-order primal-dual solver (PDHG / Chambolle-Pock) with a certified duality gap, on torch [R, derived].

The problem of :mod:`governance_plugins.interaction.problem` as a saddle point: primal x = (γ⁽ⁱ⁾, q⁽ⁱ⁾) per mask,
dual y = one multiplier per interaction entry,

    min_x max_y ⟨y, K x + c⟩ - ι_B°(y) + ι_C(x),
    K x = (Möbius(γ⁽ⁱ⁾ + ½q⁽ⁱ⁾), OR(½q⁽ⁱ⁾ - γ⁽ⁱ⁾)),  c = the transforms of ½v⁽ⁱ⁾.

Every step is closed form and needs only the transforms and their adjoints (:mod:`.torch_ops`):

* primal: C is separable per mask T: q clipped to its box; (γ⁽¹⁾…γ⁽ᵐ⁾)(T) projected onto {∃γ̄: |γ⁽ⁱ⁾ - γ̄| ≤ τ_γ,i}
  (for m = 2 a shrink of the difference, else a one-dimensional convex problem solved by bisection);
* dual: B° is separable per interaction entry S: the dual ball of w·max_i|z_i| + α·Σ_i|z_i| (Eq. 6), i.e. the
  Minkowski sum w·B₁ + α·B_∞ over the models, projected by Moreau: z - prox(z), prox = ℓ∞-prox ∘ soft-threshold;
  for one model it is the box [-1, 1] (Eq. 4).

Diagonal (Pock-Chambolle) step sizes, adaptive restarts to the running average with PDLP's primal-weight
update, and batching over samples (all problems
of one call share n and m). The run stops on a certified relative gap: the primal value is the exact loss of a
feasible x; the dual value comes from y made exactly feasible (:func:`certify`), so primal - dual bounds the
distance to the optimum from above, whatever the iterate. The spec's conditioning warning (§2.9.4) applies: on
real model outputs the gap closes slowly (see benchmarks/bench_interaction.py), so the exact LP stays the default
where it finishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from governance_plugins.interaction.problem import Problem, Solution, finish


@dataclass
class PDHGSettings:
    """Stopping rule and tuning of the first-order solver."""

    tol: float = 1e-6  # certified relative gap (primal - dual) / dual at which it stops
    max_iter: int = 200_000
    time_limit: float = 60.0
    check_every: int = 50
    restart_every: int = 2000  # restart at the latest after this many iterations
    primal_weight: float = 1.0
    device: str = "cpu"


@dataclass
class _Batch:
    """B problems of equal n and m as tensors (B, m, 2ⁿ), with the operators."""

    ops: Any
    v: Any
    tau_gamma: Any  # (B, m, 1)
    tau_eps: Any  # (B, m, 1)
    c_and: Any
    c_or: Any
    row_weight: float
    alpha: float
    bounded: bool  # γ̂ box finite (m ≥ 2)

    @property
    def m(self) -> int:
        return int(self.v.shape[1])


def _batch(problems: list[Problem], device: str) -> _Batch:
    import torch

    from governance_plugins.interaction.torch_ops import LatticeOps

    p0 = problems[0]
    if any(p.n != p0.n or p.m != p0.m or p.alpha != p0.alpha or p.weighting != p0.weighting for p in problems):
        raise ValueError("a PDHG batch needs problems of one size, alpha and weighting")
    ops = LatticeOps(p0.n, device)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
    v = t(np.stack([p.v for p in problems]))
    c_and, c_or = ops.and_or(0.5 * v, 0.5 * v)
    bounded = p0.m > 1 and all(np.all(np.isfinite(p.tau_gamma)) for p in problems)
    tg = np.stack([p.tau_gamma for p in problems])[:, :, None]
    return _Batch(ops=ops, v=v, tau_gamma=t(np.where(np.isfinite(tg), tg, 0.0)),
                  tau_eps=t(np.stack([p.tau_eps for p in problems])[:, :, None]), c_and=c_and, c_or=c_or,
                  row_weight=p0.row_weight if p0.m > 1 else 1.0, alpha=p0.alpha if p0.m > 1 else 0.0,
                  bounded=bounded)


# ------------------------------------------------------------------------------------------ proximal steps
def _project_l1(u: Any, radius: float) -> Any:
    """Rows (last axis) of u projected onto the ℓ1 ball of the given radius (sort-based, exact)."""
    import torch

    a = u.abs()
    inside = a.sum(-1, keepdim=True) <= radius
    s, _ = a.sort(-1, descending=True)
    cs = s.cumsum(-1)
    k = torch.arange(1, u.shape[-1] + 1, dtype=u.dtype, device=u.device)
    rho = ((s - (cs - radius) / k) > 0).sum(-1, keepdim=True).clamp(min=1)
    theta = ((cs.gather(-1, rho - 1) - radius) / rho).clamp(min=0)
    return torch.where(inside, u, torch.sign(u) * (a - theta).clamp(min=0))


def project_dual_ball(z: Any, weight: float, alpha: float) -> Any:
    """Projection onto weight·B₁ + alpha·B_∞ (last axis = models): z minus the prox of its support function."""
    if z.shape[-1] == 1:
        return z.clamp(-(weight + alpha), weight + alpha)
    import torch

    s = torch.sign(z) * (z.abs() - alpha).clamp(min=0)
    return z - (s - _project_l1(s, weight))


def dual_norm(y: Any, weight: float, alpha: float) -> Any:
    """Gauge of weight·B₁ + alpha·B_∞ (≤ 1 inside): max_j (sum of the j largest |y|) / (weight + j·alpha)."""
    import torch

    s, _ = y.abs().sort(-1, descending=True)
    k = torch.arange(1, y.shape[-1] + 1, dtype=y.dtype, device=y.device)
    return (s.cumsum(-1) / (weight + k * alpha)).max(-1).values


def project_splits(z: Any, tau: Any) -> Any:
    """(..., m, 2ⁿ) splits onto {∃γ̄: |γ⁽ⁱ⁾ - γ̄| ≤ τ_i} per mask (Euclidean, exact for m = 2)."""
    import torch

    if z.shape[-2] == 2:
        d = z[..., 0, :] - z[..., 1, :]
        excess = (d.abs() - tau[..., 0, :] - tau[..., 1, :]).clamp(min=0) * torch.sign(d)
        return torch.stack([z[..., 0, :] - excess / 2, z[..., 1, :] + excess / 2], dim=-2)
    lo = (z - tau).min(-2).values
    hi = (z + tau).max(-2).values
    for _ in range(80):  # h'(g) = Σ_i -sign(z_i - g)·(|z_i - g| - τ_i)₊ is monotone in g
        g = (lo + hi) / 2
        dist = ((z - g.unsqueeze(-2)).abs() - tau).clamp(min=0)
        slope = (-torch.sign(z - g.unsqueeze(-2)) * dist).sum(-2)
        lo, hi = torch.where(slope < 0, g, lo), torch.where(slope < 0, hi, g)
    g = ((lo + hi) / 2).unsqueeze(-2)
    return torch.maximum(torch.minimum(z, g + tau), g - tau)


# ------------------------------------------------------------------------------------------ values
def _interactions(b: _Batch, gamma: Any, q: Any) -> tuple[Any, Any]:
    i_and, i_or = b.ops.and_or(gamma + 0.5 * q, 0.5 * q - gamma)
    return i_and + b.c_and, i_or + b.c_or


def _adjoint(b: _Batch, y_and: Any, y_or: Any) -> tuple[Any, Any]:
    """Kᵀy split into its γ part (μ) and its q part (λ)."""
    d_and, d_or = b.ops.and_or_adjoint(y_and, y_or)
    return d_and - d_or, 0.5 * (d_and + d_or)


def primal_values(b: _Batch, gamma: Any, q: Any) -> Any:
    """The exact loss (Eq. 4 / Eq. 6) of each batch element at a feasible point."""
    a, o = _interactions(b, gamma, q)
    st = torch_abs_stack(a, o)
    if b.m == 1:
        return st.sum(dim=(1, 2, 3))
    return b.row_weight * st.max(dim=2).values.sum(dim=(1, 2)) + b.alpha * st.sum(dim=(1, 2, 3))


def torch_abs_stack(a: Any, o: Any) -> Any:
    import torch

    return torch.stack([a, o], dim=1).abs()  # (B, 2, m, 2ⁿ)


def certify(b: _Batch, y_and: Any, y_or: Any) -> tuple[Any, Any, Any]:
    """A certified lower bound per batch element from any dual estimate y (float64, exact up to rounding).

    Dual of the saddle problem: max ⟨y, c⟩ - Σ_i τ_ε,i‖λ_i‖₁ - Σ_i τ_γ,i‖μ_i‖₁ subject to y in B° per entry and
    Σ_i μ_i = 0 (γ̄ is free; every μ_i = 0 when the splits are unbounded). The equality is restored exactly by
    shifting μ with the inverse transforms (y_and -= ½ζᵀδ, y_or += ½(OR⁻¹)ᵀδ changes μ by -δ and leaves λ),
    then y is scaled into B°; the dual objective is positively homogeneous, so value / scale is a valid bound.
    Returns (bound, scale, repaired y as a pair)."""
    mu, _ = _adjoint(b, y_and, y_or)
    if b.m == 1 or not b.bounded:
        delta = mu
    else:
        delta = mu.mean(dim=1, keepdim=True).expand_as(mu)
    y_and = y_and - 0.5 * b.ops.zeta_adjoint(delta.contiguous())
    y_or = y_or + 0.5 * b.ops.or_inverse_adjoint(delta.contiguous())
    mu, lam = _adjoint(b, y_and, y_or)
    import torch

    rows = torch.stack([y_and, y_or], dim=1).transpose(-1, -2)  # (B, 2, 2ⁿ, m)
    scale = dual_norm(rows, b.row_weight, b.alpha).amax(dim=(1, 2)).clamp(min=1.0)
    value = (y_and * b.c_and).sum(dim=(1, 2)) + (y_or * b.c_or).sum(dim=(1, 2))
    value = value - (b.tau_eps * lam.abs()).sum(dim=(1, 2))
    if b.bounded:
        value = value - (b.tau_gamma * mu.abs()).sum(dim=(1, 2))
    return value / scale, scale, (y_and / scale[:, None, None], y_or / scale[:, None, None])


# ------------------------------------------------------------------------------------------ the iteration
def _step_sizes(b: _Batch, weight: float) -> tuple[Any, Any, Any, Any]:
    """Pock-Chambolle diagonal steps: σ_r = 1/Σ_j|K_rj| per interaction row, τ_j = 1/Σ_r|K_rj| per mask (the
    same for every model, so that the per-mask and per-entry projections stay Euclidean)."""
    import torch

    ones = torch.ones(1, 1, b.ops.size, dtype=torch.float64, device=b.v.device)
    rows = b.ops.zeta(ones)[0, 0]  # 2^|S| non-zeros in row S of M and of OR
    rows_or = rows.clone()
    rows_or[0] = 1.0
    cols = b.ops.zeta_adjoint(ones)[0, 0]
    inner = ones.clone()
    inner[..., 0] = 0.0
    cols_or = b.ops.zeta_adjoint(inner).flip(-1)[0, 0].clone()
    cols_or[0] += 1.0
    col_gamma = cols + cols_or
    return weight / (1.5 * rows), weight / (1.5 * rows_or), 1.0 / (weight * col_gamma), 2.0 / (weight * col_gamma)


@dataclass
class _State:
    gamma: Any
    q: Any
    y_and: Any
    y_or: Any

    def copy(self) -> "_State":
        return _State(self.gamma.clone(), self.q.clone(), self.y_and.clone(), self.y_or.clone())


def _iterate(b: _Batch, s: _State, steps: tuple[Any, Any, Any, Any]) -> _State:
    sig_a, sig_o, tau_g, tau_q = steps
    mu, lam = _adjoint(b, s.y_and, s.y_or)
    gamma = s.gamma - tau_g * mu
    if b.bounded:
        gamma = project_splits(gamma, b.tau_gamma)
    import torch

    q = torch.maximum(torch.minimum(s.q - tau_q * lam, b.tau_eps), -b.tau_eps)
    g_bar, q_bar = 2 * gamma - s.gamma, 2 * q - s.q
    i_and, i_or = _interactions(b, g_bar, q_bar)
    z = torch.stack([s.y_and + sig_a * i_and, s.y_or + sig_o * i_or], dim=1).transpose(-1, -2)
    y = project_dual_ball(z, b.row_weight, b.alpha).transpose(-1, -2)
    return _State(gamma, q, y[:, 0].contiguous(), y[:, 1].contiguous())


@dataclass
class _Tracker:
    """Best feasible primal point and best certified dual bound seen, per batch element."""

    primal: Any
    dual: Any
    gamma: Any
    q: Any

    def update(self, b: _Batch, s: _State) -> Any:
        import torch

        p = primal_values(b, s.gamma, s.q)
        d, _, _ = certify(b, s.y_and, s.y_or)
        better = p < self.primal
        self.primal = torch.where(better, p, self.primal)
        self.gamma = torch.where(better[:, None, None], s.gamma, self.gamma)
        self.q = torch.where(better[:, None, None], s.q, self.q)
        self.dual = torch.maximum(self.dual, d)
        return p - d

    def relative_gap(self) -> Any:
        """(primal - dual) / dual: how far above the certified bound the primal is (inf while dual ≤ 0)."""
        import torch

        gap = (self.primal - self.dual) / self.dual.clamp(min=1e-300)
        return torch.where(self.dual > 0, gap, torch.where(self.primal <= self.dual, 0.0 * gap, gap.abs() + float("inf")))


def _restart_weight(s: _State, last: _State, weight: float) -> float:
    """PDLP's primal-weight update at a restart: the geometric mean of the old weight and the ratio of how far
    the dual and the primal moved since the last restart (the median over the batch keeps one step size)."""
    import torch

    dx = torch.sqrt(((s.gamma - last.gamma) ** 2).sum(dim=(1, 2)) + ((s.q - last.q) ** 2).sum(dim=(1, 2)))
    dy = torch.sqrt(((s.y_and - last.y_and) ** 2).sum(dim=(1, 2)) + ((s.y_or - last.y_or) ** 2).sum(dim=(1, 2)))
    ok = (dx > 1e-12) & (dy > 1e-12)
    if not bool(ok.any()):
        return weight
    ratio = float(torch.median(dy[ok] / dx[ok]))
    return float(np.exp(0.5 * np.log(ratio) + 0.5 * np.log(weight)))


def _run(b: _Batch, settings: PDHGSettings) -> tuple[_Tracker, int, float]:
    """Restarted PDHG: every ``check_every`` iterations the better of the iterate and the running average is
    scored by its certified gap; an element restarts from it when that gap halved since its last restart (or
    after ``restart_every`` iterations without), and the primal weight is updated at restarts."""
    import torch

    zeros = torch.zeros_like(b.v)
    s = _State(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())
    inf = torch.full((b.v.shape[0],), float("inf"), dtype=torch.float64, device=b.v.device)
    track = _Tracker(inf.clone(), -inf, zeros.clone(), zeros.clone())
    weight = settings.primal_weight
    steps = _step_sizes(b, weight)
    start = time.perf_counter()
    avg, last, last_gap = s.copy(), s.copy(), inf.clone()
    count = torch.zeros(b.v.shape[0], 1, 1, dtype=torch.float64, device=b.v.device)
    it = 0
    while it < settings.max_iter:
        it += 1
        s = _iterate(b, s, steps)
        for name in ("gamma", "q", "y_and", "y_or"):
            getattr(avg, name).add_(getattr(s, name))
        count += 1
        if it % settings.check_every:
            continue
        mean = _State(*(getattr(avg, k) / count for k in ("gamma", "q", "y_and", "y_or")))
        gap_now, gap_mean = track.update(b, s), track.update(b, mean)
        if bool((track.relative_gap() <= settings.tol).all()) or time.perf_counter() - start > settings.time_limit:
            break
        use_mean = gap_mean < gap_now
        gap = torch.where(use_mean, gap_mean, gap_now)
        restart = (gap < 0.5 * last_gap) | (count[:, 0, 0] >= settings.restart_every)
        if not bool(restart.any()):
            continue
        pick, reset = use_mean[:, None, None], restart[:, None, None]
        cand = _State(*(torch.where(pick, getattr(mean, k), getattr(s, k)) for k in ("gamma", "q", "y_and", "y_or")))
        weight = _restart_weight(cand, last, weight)
        steps = _step_sizes(b, weight)
        s = _State(*(torch.where(reset, getattr(cand, k), getattr(s, k)) for k in ("gamma", "q", "y_and", "y_or")))
        last = _State(*(torch.where(reset, getattr(cand, k), getattr(last, k)) for k in ("gamma", "q", "y_and",
                                                                                         "y_or")))
        last_gap = torch.where(restart, gap, last_gap)
        avg = _State(*(torch.where(reset, 0.0 * getattr(avg, k), getattr(avg, k)) for k in ("gamma", "q", "y_and",
                                                                                             "y_or")))
        count = torch.where(reset, 0.0 * count, count)
    return track, it, time.perf_counter() - start


def _shared_split(gamma: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """A γ̄ with |γ⁽ⁱ⁾ - γ̄| ≤ τ_i for every model (the mean, clipped into the feasible interval)."""
    if gamma.shape[0] == 1:
        return gamma[0]
    t = tau[:, None]
    lo, hi = (gamma - t).max(axis=0), (gamma + t).min(axis=0)
    return np.clip(gamma.mean(axis=0), lo, np.maximum(lo, hi))


def solve_pdhg(problems: list[Problem], settings: PDHGSettings | None = None) -> list[Solution]:
    """Solve a batch of problems (same n and m). Each Solution carries the certified lower bound (``lower_bound``),
    so ``gap`` is a certified relative duality gap; ``exact`` is True only when it reached ``settings.tol``."""
    import torch

    settings = settings or PDHGSettings()
    b = _batch(problems, settings.device)
    threads = torch.get_num_threads()
    if str(settings.device) == "cpu":
        torch.set_num_threads(1)  # small tensors: extra threads only contend (20x slower on a busy 2-core CPU)
    try:
        track, iters, seconds = _run(b, settings)
    finally:
        torch.set_num_threads(threads)
    out = []
    rel = track.relative_gap().cpu().numpy()
    for k, problem in enumerate(problems):
        gamma = track.gamma[k].cpu().numpy()
        q = track.q[k].cpu().numpy()
        converged = bool(rel[k] <= settings.tol)
        g_shared = _shared_split(gamma, problem.tau_gamma)
        sol = finish(problem, "pdhg", converged, g_shared, gamma - g_shared, q, status="optimal" if converged
                     else "stopped", seconds=seconds / len(problems), iterations=iters,
                     message=(f"certified relative gap {rel[k]:.2e} after {iters} iterations"
                              + ("" if converged else f" (target {settings.tol:g} not reached within "
                                 f"{settings.time_limit:g} s / {settings.max_iter} iterations)")))
        sol.lower_bound = float(track.dual[k].cpu())
        out.append(sol)
    return out
