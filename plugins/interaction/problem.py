"""The optimisation problem of one sample (spec §2.6–§2.9) and what a solver returns.

For m models with masked outputs v⁽ⁱ⁾ (2ⁿ each, v(x_∅) already subtracted) the unknowns are a shared split
γ̄ (free), model-specific splits γ̂⁽ⁱ⁾ in a box ±τ_γ⁽ⁱ⁾ and error terms q⁽ⁱ⁾ in a box ±τ_ε⁽ⁱ⁾ (q = -ε).
With γ⁽ⁱ⁾ = γ̄ + γ̂⁽ⁱ⁾:

    v_and⁽ⁱ⁾ = ½(v⁽ⁱ⁾ + q⁽ⁱ⁾) + γ⁽ⁱ⁾,  v_or⁽ⁱ⁾ = ½(v⁽ⁱ⁾ + q⁽ⁱ⁾) - γ⁽ⁱ⁾
    I_and⁽ⁱ⁾ = moebius(v_and⁽ⁱ⁾),       I_or⁽ⁱ⁾ = or_transform(v_or⁽ⁱ⁾)

Eq. 6 (paper weighting):     Σ_S max_i |I_and⁽ⁱ⁾(S)| + Σ_S max_i |I_or⁽ⁱ⁾(S)| + α·Σ_i (‖I_and⁽ⁱ⁾‖₁ + ‖I_or⁽ⁱ⁾‖₁)
Eq. 6 (reference weighting): (1-α)·rowmax part + α·entrywise part
Eq. 4 (m = 1, "traditional"): ‖I_and‖₁ + ‖I_or‖₁
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from governance_plugins.interaction.transforms import and_or_interactions, n_of, reconstruct

WEIGHTINGS = ("paper", "reference")


@dataclass
class Problem:
    """One sample's extraction problem for ``m`` models."""

    v: np.ndarray  # (m, 2ⁿ) float64, v(x_∅) subtracted
    tau_gamma: np.ndarray  # (m,) bound of the model-specific split (inf = unbounded)
    tau_eps: np.ndarray  # (m,) bound of the error term (0 = error term off)
    alpha: float = 0.1
    weighting: str = "paper"

    def __post_init__(self) -> None:
        self.v = np.atleast_2d(np.asarray(self.v, dtype=np.float64))
        self.tau_gamma = np.broadcast_to(np.asarray(self.tau_gamma, dtype=np.float64), (self.m,)).copy()
        self.tau_eps = np.broadcast_to(np.asarray(self.tau_eps, dtype=np.float64), (self.m,)).copy()
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if np.any(self.tau_gamma < 0) or np.any(self.tau_eps < 0):
            raise ValueError("bounds must be non-negative")

    @property
    def m(self) -> int:
        return int(self.v.shape[0])

    @property
    def n(self) -> int:
        return n_of(self.v.shape[1])

    @property
    def size(self) -> int:
        return int(self.v.shape[1])

    @property
    def error_term(self) -> bool:
        return bool(np.any(self.tau_eps > 0))

    @property
    def row_weight(self) -> float:
        """Weight of the rowmax part: 1 (paper) or 1-α (reference)."""
        return 1.0 - self.alpha if self.weighting == "reference" else 1.0

    def single(self, i: int) -> "Problem":
        """The one-model ("traditional", Eq. 4) problem of model ``i``."""
        return Problem(self.v[i : i + 1], self.tau_gamma[i : i + 1], self.tau_eps[i : i + 1], self.alpha,
                       self.weighting)

    def interactions(self, gamma_shared: np.ndarray, gamma_specific: np.ndarray | None = None,
                     q: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        gamma = np.broadcast_to(gamma_shared, self.v.shape).copy()
        if gamma_specific is not None:
            gamma = gamma + gamma_specific
        return and_or_interactions(self.v, gamma, 0.0 if q is None else q)

    def loss(self, i_and: np.ndarray, i_or: np.ndarray) -> float:
        """Eq. 4 for one model, Eq. 6 (with this problem's weighting) for several."""
        a, o = np.abs(i_and), np.abs(i_or)
        if self.m == 1:
            return float(a.sum() + o.sum())
        row = a.max(axis=0).sum() + o.max(axis=0).sum()
        return float(self.row_weight * row + self.alpha * (a.sum() + o.sum()))

    def loss_at_gamma0(self) -> float:
        """The loss of the trivial 50/50 split (γ = 0, q = 0): what a solver that never moves reports."""
        return self.loss(*self.interactions(np.zeros(self.size)))

    def lower_bound(self, single_optima: np.ndarray) -> float:
        """max_i L4*_i + α·Σ_i L4*_i (O13), scaled for the reference weighting: no Eq. 6 point is lower."""
        l4 = np.asarray(single_optima, dtype=np.float64)
        if self.m == 1:
            return float(l4[0])
        return float(self.row_weight * l4.max() + self.alpha * l4.sum())


@dataclass
class Solution:
    """A solver's answer: the split, the error term, the raw (unmerged) interactions and how good it is."""

    solver: str
    exact: bool
    gamma_shared: np.ndarray  # (2ⁿ,)
    gamma_specific: np.ndarray  # (m, 2ⁿ)
    q: np.ndarray  # (m, 2ⁿ)
    i_and: np.ndarray  # (m, 2ⁿ)
    i_or: np.ndarray  # (m, 2ⁿ)
    loss: float
    loss_gamma0: float
    status: str
    seconds: float
    iterations: int = 0
    message: str = ""
    trace: list[float] = field(default_factory=list)
    lower_bound: float | None = None
    matching_error: float = 0.0
    smoothing: float | None = None  # final μ of the smoothed solver

    @property
    def improvement(self) -> float:
        """1 - loss / loss at γ = 0: the share of the trivial split's loss the solver removed."""
        return 1.0 - self.loss / self.loss_gamma0 if self.loss_gamma0 > 0 else 0.0

    @property
    def gap(self) -> float | None:
        """Relative gap to the lower bound (0 for an exact optimum up to rounding)."""
        if self.lower_bound is None:
            return None
        return (self.loss - self.lower_bound) / max(abs(self.lower_bound), 1e-12)


def finish(problem: Problem, solver: str, exact: bool, gamma_shared: np.ndarray, gamma_specific: np.ndarray,
           q: np.ndarray, *, status: str, seconds: float, iterations: int = 0, message: str = "",
           trace: list[float] | None = None) -> Solution:
    """Clip to the boxes, recompute the interactions with the exact transforms and check universal matching."""
    tg = problem.tau_gamma[:, None]
    te = problem.tau_eps[:, None]
    gamma_specific = np.clip(gamma_specific, -tg, tg) if problem.m > 1 else np.zeros_like(problem.v)
    q = np.clip(q, -te, te)
    i_and, i_or = problem.interactions(gamma_shared, gamma_specific, q)
    err = float(np.abs(reconstruct(i_and, i_or) - (problem.v + q)).max())
    return Solution(solver=solver, exact=exact, gamma_shared=gamma_shared, gamma_specific=gamma_specific, q=q,
                    i_and=i_and, i_or=i_or, loss=problem.loss(i_and, i_or), loss_gamma0=problem.loss_at_gamma0(),
                    status=status, seconds=seconds, iterations=iterations, message=message, trace=trace or [],
                    matching_error=err)
