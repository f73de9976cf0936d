"""NeFLAG's mathematics: negative flux of the gradient field through an ε-sphere around the input.

Definitions (spec methods-specxai-neflag.md §A2.3; which form the paper used is unknown, both are here):

* form A, "projected":    A_A = 2d · E_u[ min(0, ∇f(x+εu)·u) · u ]              (u uniform on the sphere)
* form B, "per_feature":  A_B = E_{s∈S⁻}[ ∇f(s) ⊙ (x − s) ] = −ε · E_u[ ∇f ⊙ u | ∇f·u < 0 ]

Samplers (§A2.5): S1 uniform-antithetic, S2 orthogonal-antithetic, S3 rejection ("n negative-flux points",
NeFLAG-n), S4 descent-guided. Everything works in a scaled space z = x / scale (``scale=None``: z = x); the
sphere lives in z, the field there is ``scale ⊙ ∇_x f`` and attributions are reported in z-units (§A6).

The model enters as ``score_fn(points, targets) -> (P,)``, a differentiable torch function of a batch of
points ``(P, *sample_shape)``; every sphere point of a chunk of inputs goes through one forward/backward.
Randomness comes from one torch generator per input, so an input's attribution does not depend on which
other inputs share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

Form = Literal["A", "B"]
Sampler = Literal["uniform_antithetic", "orthogonal_antithetic", "rejection", "descent"]
Derivative = Literal["gradient", "finite_difference"]


class NonFiniteError(ValueError):
    """The model produced NaN or infinite scores or gradients on the sphere."""


@dataclass(frozen=True)
class FluxSettings:
    """The estimator's hyper-parameters. Defaults: the plugin's measured choice (form A, descent S4 with n = 8,
    m = 3; plugins/neflag/README.md), except ε, which the plugin scales to the data; S3's m = 10 is the spec's."""

    form: Form = "A"
    sampler: Sampler = "descent"
    epsilon: float = 0.1  # ε, sphere radius in z-units (the plugin scales it to the data)
    n_points: int = 8  # n: negative-flux points (S3) or descent starts (S4)
    n_directions: int | None = None  # N: directions for S1/S2 (2N points); None -> min(d, 1024)
    m: int | None = None  # tries per point (S3, default 10) or descent steps (S4, default 3)
    step_size: float = 0.5  # η for S4
    derivative: Derivative = "gradient"  # "finite_difference": form A only, forward passes only
    fd_step: float | None = None  # h for central differences; None -> 1e-3·ε (float32) / 1e-5·ε (float64)
    clip: tuple[float, float] | None = None  # keep sphere points inside [lo, hi] (x-units); off by default
    antipodes: Literal["lazy", "paired"] = "lazy"  # S3: probe an antipode only when needed, or always with its pair
    max_batch: int = 512  # sphere points per forward/backward

    def resolved_m(self) -> int:
        if self.m is not None:
            return int(self.m)
        return 3 if self.sampler == "descent" else 10

    def resolved_directions(self, d: int) -> int:
        return int(self.n_directions) if self.n_directions else min(d, 1024)


@dataclass
class FluxResult:
    """Attributions ``(n, d)`` (z-units, flattened) and what the estimator saw, per input."""

    attribution: torch.Tensor
    positive: torch.Tensor | None  # A_A⁺ (form A with S1/S2), for the P5 identity
    n_negative: torch.Tensor  # accepted negative-flux points
    n_evaluations: torch.Tensor  # points probed (gradient evaluations, or derivative evaluations)
    mean_negative_score: torch.Tensor  # mean f(s) over the negative-flux points (NaN where none)
    first_draw_acceptance: float | None  # S3: share of first draws φ(x+εu) < 0 (not accepted/evaluated)
    n_clipped: int  # sphere points moved by ``clip``
    records: dict[str, torch.Tensor] | None = None  # per probed point, when asked for (tests, diagnostics)


@dataclass
class _Probe:
    """What probing a batch of sphere points returns (one row per point)."""

    phi: torch.Tensor  # flux density ∇_z f(s)·ν
    score: torch.Tensor  # f(s)
    normal: torch.Tensor  # actual outward unit normal ν (recomputed when clipped)
    displacement: torch.Tensor  # s − x in z-units
    grad: torch.Tensor | None  # ∇_z f(s), None for finite differences
    clipped: torch.Tensor  # bool


# ------------------------------------------------------------------------------------------ directions
def draw_directions(gen: torch.Generator, k: int, d: int, kind: Literal["gaussian", "orthogonal"],
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``k`` unit vectors in R^d on the CPU: i.i.d. uniform (normalised Gaussians), or blocks of orthonormal
    columns of Q from a QR of a Gaussian matrix with signs fixed by diag(R) (Haar-distributed)."""
    if k == 0:
        return torch.empty(0, d, dtype=dtype)
    if kind == "gaussian":
        g = torch.randn(k, d, generator=gen, dtype=torch.float64)
        u = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return u.to(dtype)
    blocks, left = [], k
    while left > 0:
        b = min(left, d)
        q, r = torch.linalg.qr(torch.randn(d, b, generator=gen, dtype=torch.float64), mode="reduced")
        signs = torch.sign(torch.diagonal(r))
        signs[signs == 0] = 1.0
        blocks.append((q * signs).T)
        left -= b
    return torch.cat(blocks).to(dtype)


# ------------------------------------------------------------------------------------------------ probes
class GradientProbe:
    """Full gradients at sphere points, by one forward and one backward pass per ``max_batch`` points."""

    needs_gradients = True

    def __init__(self, score_fn: ScoreFn, sample_shape: Sequence[int], scale: torch.Tensor | None,
                 clip: tuple[float, float] | None, max_batch: int) -> None:
        self.score_fn = score_fn
        self.sample_shape = tuple(sample_shape)
        self.scale = scale
        self.clip = clip
        self.max_batch = max(1, int(max_batch))

    def _points(self, centres: torch.Tensor, normals: torch.Tensor, radius: float):
        step = radius * normals if self.scale is None else radius * normals * self.scale
        points = centres + step
        clipped = torch.zeros(len(points), dtype=torch.bool, device=points.device)
        if self.clip is None:
            return points, normals, radius * normals, clipped
        inside = points.clamp(self.clip[0], self.clip[1])
        clipped = (inside != points).any(dim=1)
        points = inside
        disp = points - centres if self.scale is None else (points - centres) / self.scale
        norm = disp.norm(dim=1, keepdim=True)
        normals = torch.where(norm > 0, disp / norm.clamp_min(1e-300), normals)
        return points, normals, disp, clipped

    def _grad(self, points: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pts = points.detach().reshape(len(points), *self.sample_shape).requires_grad_(True)
        with torch.enable_grad():
            s = self.score_fn(pts, targets)
            g = None
            if s.requires_grad:
                (g,) = torch.autograd.grad(s.sum(), pts, allow_unused=True)
        if g is None:  # the score does not depend on the input at all (constant model)
            g = torch.zeros_like(pts)
        g = g.reshape(len(points), -1)
        if self.scale is not None:
            g = g * self.scale
        return s.detach(), g.detach()

    def __call__(self, centres: torch.Tensor, normals: torch.Tensor, targets: torch.Tensor, radius: float) -> _Probe:
        parts = []
        for lo in range(0, len(centres), self.max_batch):
            sl = slice(lo, lo + self.max_batch)
            points, nu, disp, clipped = self._points(centres[sl], normals[sl], radius)
            score, g = self._grad(points, targets[sl])
            parts.append(_Probe((g * nu).sum(dim=1), score, nu, disp, g, clipped))
        return _cat(parts)


class FiniteDifferenceProbe:
    """Radial derivative only (form A, P6): ``(f(x+(ε+h)ν) − f(x+(ε−h)ν)) / 2h``, two forward passes per
    point, no backward. ``score_fn`` is evaluated without gradients (it may wrap ONNX Runtime)."""

    needs_gradients = False

    def __init__(self, score_fn: ScoreFn, sample_shape: Sequence[int], scale: torch.Tensor | None,
                 h: float, max_batch: int) -> None:
        self.score_fn = score_fn
        self.sample_shape = tuple(sample_shape)
        self.scale = scale
        self.h = float(h)
        self.max_batch = max(2, int(max_batch))

    def __call__(self, centres: torch.Tensor, normals: torch.Tensor, targets: torch.Tensor, radius: float) -> _Probe:
        parts = []
        half = self.max_batch // 2
        for lo in range(0, len(centres), half):
            sl = slice(lo, lo + half)
            c, nu = centres[sl], normals[sl]
            dirn = nu if self.scale is None else nu * self.scale
            pts = torch.cat([c + (radius + self.h) * dirn, c + (radius - self.h) * dirn])
            t = targets[sl]
            with torch.no_grad():
                s = self.score_fn(pts.reshape(len(pts), *self.sample_shape), torch.cat([t, t])).detach()
            hi, lo_ = s[: len(c)], s[len(c):]
            phi = (hi - lo_) / (2.0 * self.h)
            parts.append(_Probe(phi, 0.5 * (hi + lo_), nu, radius * nu, None,
                                torch.zeros(len(c), dtype=torch.bool, device=c.device)))
        return _cat(parts)


def radial_derivative(score_fn: ScoreFn, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor, epsilon: float,
                      *, derivative: Derivative = "gradient", h: float = 1e-5) -> torch.Tensor:
    """φ = ∇f(x+εu)·u for rows of ``x`` (n, d) and unit ``u`` (n, d), by autograd or central differences."""
    shape = tuple(x.shape[1:])
    if derivative == "gradient":
        probe = GradientProbe(score_fn, shape, None, None, len(x))
    else:
        probe = FiniteDifferenceProbe(score_fn, shape, None, h, 2 * len(x))
    return probe(x.reshape(len(x), -1), u.reshape(len(u), -1), target, epsilon).phi


def _cat(parts: list[_Probe]) -> _Probe:
    if len(parts) == 1:
        return parts[0]
    return _Probe(*(None if getattr(parts[0], f) is None else torch.cat([getattr(p, f) for p in parts])
                    for f in ("phi", "score", "normal", "displacement", "grad", "clipped")))


def _check_finite(p: _Probe) -> None:
    bad = ~torch.isfinite(p.phi) | ~torch.isfinite(p.score)
    if p.grad is not None:  # a row holding NaN or ±inf sums to NaN or ±inf: one reduction instead of P·d flags
        bad |= ~torch.isfinite(p.grad.sum(dim=1))
    if bool(bad.any()):
        raise NonFiniteError(f"the model returned NaN or infinite scores or gradients at {int(bad.sum())} "
                             f"of {len(bad)} points on the ε-sphere")


# ------------------------------------------------------------------------------------------ estimators
class _Accumulator:
    """Per-input running sums over accepted negative-flux points."""

    def __init__(self, n: int, d: int, dtype: torch.dtype, device: torch.device) -> None:
        z = dict(dtype=dtype, device=device)
        self.phi_nu = torch.zeros(n, d, **z)  # Σ φ ν over accepted points (form A under S3/S4)
        self.contrib = torch.zeros(n, d, **z)  # Σ ∇f ⊙ (x − s) over accepted points (form B)
        self.score = torch.zeros(n, dtype=torch.float64, device=device)
        self.count = torch.zeros(n, dtype=torch.long, device=device)
        self.evals = torch.zeros(n, dtype=torch.long, device=device)
        self.clipped = 0

    def add(self, idx: torch.Tensor, p: _Probe, accept: torch.Tensor, form: Form) -> None:
        w = accept.to(p.phi.dtype)
        if form == "A":
            self.phi_nu.index_add_(0, idx, (w * p.phi)[:, None] * p.normal)
        else:
            self.contrib.index_add_(0, idx, -w[:, None] * p.grad * p.displacement)
        self.score.index_add_(0, idx, (w * p.score).to(torch.float64))
        self.count.index_add_(0, idx, accept.long())

    def mean_score(self) -> torch.Tensor:
        nan = torch.full_like(self.score, float("nan"))
        return torch.where(self.count > 0, self.score / self.count.clamp_min(1), nan)

    def conditional_mean(self, form: Form, d: int) -> torch.Tensor:
        """Mean over accepted points with the explicit 0/0 guard (oracle N7): zero where none. Form A is
        scaled by d (S3's normalisation; a factor 1 is passed for S4, whose points concentrate at −ĝ)."""
        total = self.phi_nu * d if form == "A" else self.contrib
        return total / self.count.clamp_min(1)[:, None].to(total.dtype)


def _rows(chunk: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, per: torch.Tensor):
    """Row tensors for ``per[i]`` points of each input in ``chunk``."""
    idx = torch.repeat_interleave(chunk, per)
    return idx, x[idx], targets[idx]


def _antithetic(probe, x, targets, gens, s: FluxSettings, record) -> FluxResult:
    n, d = x.shape
    N = s.resolved_directions(d)
    kind = "orthogonal" if s.sampler == "orthogonal_antithetic" else "gaussian"
    acc = _Accumulator(n, d, x.dtype, x.device)
    neg_sum = torch.zeros(n, d, dtype=x.dtype, device=x.device)
    pos_sum = torch.zeros_like(neg_sum)
    per_chunk = max(1, s.max_batch // (2 * N))
    for lo in range(0, n, per_chunk):
        chunk = torch.arange(lo, min(n, lo + per_chunk), device=x.device)
        u = torch.stack([draw_directions(gens[i], N, d, kind, x.dtype) for i in chunk.tolist()]).to(x.device)
        nu = torch.cat([u, -u], dim=1).reshape(-1, d)  # (c·2N, d): +u then −u per input
        idx, centres, tg = _rows(chunk, x, targets, torch.full_like(chunk, 2 * N))
        p = probe(centres, nu, tg, s.epsilon)
        _check_finite(p)
        neg = p.phi < 0
        neg_sum.index_add_(0, idx, p.phi.clamp(max=0)[:, None] * p.normal)
        pos_sum.index_add_(0, idx, p.phi.clamp(min=0)[:, None] * p.normal)
        acc.add(idx, p, neg, s.form)
        acc.evals.index_add_(0, idx, torch.ones_like(idx))
        acc.clipped += int(p.clipped.sum())
        _record(record, idx, p, neg)
    if s.form == "A":  # (2d / 2N) Σ_points min(0, φ) ν over all 2N points
        attribution, positive = neg_sum * (d / N), pos_sum * (d / N)
    else:
        attribution, positive = acc.conditional_mean("B", d), None
    return FluxResult(attribution, positive, acc.count, acc.evals, acc.mean_score(), None, acc.clipped,
                      _stack(record))


def _rejection(probe, x, targets, gens, s: FluxSettings, record) -> FluxResult:
    """S3: for each of n slots, up to m tries of a random u; accept x+εu if its flux is negative, else the
    antipode if its flux is negative, else draw again.

    ``antipodes="lazy"`` probes an antipode only when its first point failed (the spec's 1.5n-2n evaluations,
    two passes per try); ``"paired"`` probes both points of every try in the same pass (2n evaluations, one
    pass). Both make the same decisions from the same draws, so they return the same attributions."""
    n, d = x.shape
    acc = _Accumulator(n, d, x.dtype, x.device)
    missing = torch.full((n,), s.n_points, dtype=torch.long, device=x.device)
    first_neg = first_total = 0
    per_chunk = max(1, s.max_batch // ((2 if s.antipodes == "paired" else 1) * s.n_points))
    for lo in range(0, n, per_chunk):
        chunk = torch.arange(lo, min(n, lo + per_chunk), device=x.device)
        for _ in range(s.resolved_m()):
            want = missing[chunk]
            if int(want.sum()) == 0:
                break
            u = torch.cat([draw_directions(gens[i], int(k), d, "gaussian", x.dtype)
                           for i, k in zip(chunk.tolist(), want.tolist())]).to(x.device)
            idx, centres, tg = _rows(chunk, x, targets, want)
            k = len(idx)
            if s.antipodes == "paired":
                p = probe(torch.cat([centres, centres]), torch.cat([u, -u]), torch.cat([tg, tg]), s.epsilon)
                _check_finite(p)
                plus_neg = p.phi[:k] < 0
                minus_neg = (p.phi[k:] < 0) & ~plus_neg
                rows, accept = torch.cat([idx, idx]), torch.cat([plus_neg, minus_neg])
            else:
                p = probe(centres, u, tg, s.epsilon)
                _check_finite(p)
                plus_neg = p.phi < 0
                rows, accept = idx, plus_neg
                retry = torch.nonzero(~plus_neg).squeeze(1)
                if len(retry):
                    q = probe(centres[retry], -u[retry], tg[retry], s.epsilon)
                    _check_finite(q)
                    p = _cat([p, q])
                    rows = torch.cat([idx, idx[retry]])
                    accept = torch.cat([plus_neg, q.phi < 0])
            minus_neg = accept[k:]
            acc.add(rows, p, accept, s.form)
            acc.evals.index_add_(0, rows, torch.ones_like(rows))
            acc.clipped += int(p.clipped.sum())
            filled = plus_neg.clone()
            if s.antipodes == "paired":
                filled |= minus_neg
            else:
                filled[retry] = minus_neg
            missing.index_add_(0, idx, -filled.long())
            first_neg += int(plus_neg.sum())
            first_total += k
            _record(record, rows, p, accept)
    return FluxResult(acc.conditional_mean(s.form, d), None, acc.count, acc.evals, acc.mean_score(),
                      first_neg / first_total if first_total else None, acc.clipped, _stack(record))


def _descent(probe, x, targets, gens, s: FluxSettings, record) -> FluxResult:
    """S4: from n random directions, m projected steps that lower f on the sphere, then keep the final
    point if its flux is negative.

    Form A is the plain mean of φ·ν over the kept points, without S3's factor d: S3's factor assumes points
    spread evenly over the negative half-sphere, whereas descent concentrates them where the flux is most
    negative, around u = −ĝ, where φ·ν = ∇f for a linear model. So S4's form A tends to ∇f as m grows (with the
    factor d it would tend to d·∇f)."""
    n, d = x.shape
    acc = _Accumulator(n, d, x.dtype, x.device)
    per_chunk = max(1, s.max_batch // s.n_points)
    for lo in range(0, n, per_chunk):
        chunk = torch.arange(lo, min(n, lo + per_chunk), device=x.device)
        u = torch.cat([draw_directions(gens[i], s.n_points, d, "gaussian", x.dtype) for i in chunk.tolist()])
        u = u.to(x.device)
        idx, centres, tg = _rows(chunk, x, targets, torch.full_like(chunk, s.n_points))
        for _ in range(s.resolved_m()):
            p = probe(centres, u, tg, s.epsilon)
            _check_finite(p)
            g = p.grad
            tangent = g - (g * u).sum(dim=1, keepdim=True) * u
            gn = g.norm(dim=1, keepdim=True)
            step = torch.where(gn > 0, tangent / gn.clamp_min(1e-300), torch.zeros_like(tangent))
            u = u - s.step_size * step
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
        p = probe(centres, u, tg, s.epsilon)
        _check_finite(p)
        neg = p.phi < 0
        acc.add(idx, p, neg, s.form)
        acc.evals[chunk] += s.n_points * (s.resolved_m() + 1)
        acc.clipped += int(p.clipped.sum())
        _record(record, idx, p, neg)
    return FluxResult(acc.conditional_mean(s.form, 1), None, acc.count, acc.evals, acc.mean_score(), None,
                      acc.clipped, _stack(record))


def _record(record: list | None, idx: torch.Tensor, p: _Probe, accept: torch.Tensor) -> None:
    if record is not None:
        record.append({"input": idx, "phi": p.phi, "score": p.score, "normal": p.normal,
                       "displacement": p.displacement, "negative": accept})


def _stack(record: list | None) -> dict[str, torch.Tensor] | None:
    if record is None:
        return None
    return {k: torch.cat([r[k] for r in record]) for k in record[0]} if record else {}


def neflag(
    score_fn: ScoreFn,
    x: torch.Tensor,
    targets: torch.Tensor,
    settings: FluxSettings,
    seeds: Sequence[int],
    *,
    scale: torch.Tensor | None = None,
    record: bool = False,
) -> FluxResult:
    """NeFLAG attributions for inputs ``x`` (n, *sample_shape) in z-units (flattened to (n, d)).

    ``seeds[i]`` seeds input i's directions. ``scale`` (d,) or (sample_shape) maps z to x (x = scale ⊙ z).
    ``record=True`` keeps every probed point (for tests and diagnostics).
    """
    s = settings
    if s.form not in ("A", "B"):
        raise ValueError(f"unknown form {s.form!r}")
    if s.derivative == "finite_difference" and (s.form == "B" or s.sampler == "descent"):
        raise ValueError("finite differences give only the radial derivative: they need form A and a "
                         "sampler other than 'descent'")
    if s.derivative == "finite_difference" and s.clip is not None:
        raise ValueError("clipping is not supported with finite differences")
    if len(seeds) != len(x):
        raise ValueError("one seed per input is needed")
    n = len(x)
    sample_shape = tuple(x.shape[1:])
    flat = x.reshape(n, -1)
    sc = None if scale is None else scale.reshape(-1).to(dtype=x.dtype, device=x.device)
    if s.derivative == "gradient":
        probe = GradientProbe(score_fn, sample_shape, sc, s.clip, s.max_batch)
    else:
        h = s.fd_step or s.epsilon * (1e-5 if x.dtype == torch.float64 else 1e-3)
        probe = FiniteDifferenceProbe(score_fn, sample_shape, sc, h, s.max_batch)
    gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
    rec: list | None = [] if record else None
    run = {"uniform_antithetic": _antithetic, "orthogonal_antithetic": _antithetic,
           "rejection": _rejection, "descent": _descent}[s.sampler]
    return run(probe, flat, targets.reshape(-1).to(x.device), gens, s, rec)
