"""One sample's extraction: the joint problem of all models (Eq. 6, "shared"), the per-model problems (Eq. 4,
"traditional"), lower bounds for inexact answers, and the merged interactions used by every metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance_plugins.interaction.problem import Problem, Solution
from governance_plugins.interaction.solver_iterative import dual_lower_bound
from governance_plugins.interaction.solvers import SolverSettings, solve
from governance_plugins.interaction.transforms import merge_singletons


@dataclass
class Extraction:
    v: np.ndarray  # (m, 2ⁿ), v(x_∅) subtracted
    joint: Solution
    traditional: list[Solution]
    and_joint: np.ndarray  # merged (m, 2ⁿ)
    or_joint: np.ndarray
    and_trad: np.ndarray | None
    or_trad: np.ndarray | None
    bound: float | None = None  # O13 lower bound max_i L4*_i + α·Σ_i L4*_i (loose when the models differ)

    @property
    def m(self) -> int:
        return int(self.v.shape[0])


def _single_bound(problem: Problem, sol: Solution) -> float:
    """Exact optimum for an LP answer, else the (weaker) certified dual bound."""
    if sol.exact:
        return sol.loss
    return dual_lower_bound(problem, sol.i_and, sol.i_or, mu=sol.smoothing)


def extract(v: np.ndarray, tau_gamma: np.ndarray, *, alpha: float = 0.1, weighting: str = "paper",
            error_ratio: float = 0.02, solver: str = "auto", traditional_solver: str = "auto",
            traditional: bool = True, settings: SolverSettings | None = None) -> Extraction:
    """Extract the interactions of one sample for m models. ``v`` must already have v(x_∅) subtracted.
    The error bound is error_ratio·|v(x_N) - v(x_∅)| per model (spec §2.7)."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    tau_eps = error_ratio * np.abs(v[:, -1] - v[:, 0])
    problem = Problem(v, tau_gamma, tau_eps, alpha=alpha, weighting=weighting)
    singles = [problem.single(i) for i in range(problem.m)]
    trad: list[Solution] = []
    if traditional or problem.m == 1:
        for sp in singles:
            sol = solve(sp, traditional_solver if problem.m > 1 else solver, settings)
            sol.lower_bound = _single_bound(sp, sol)
            trad.append(sol)
    bound = problem.lower_bound(np.array([t.lower_bound for t in trad])) if trad else None
    if problem.m == 1:
        joint = trad[0]
    else:
        joint = solve(problem, solver, settings)
        joint.lower_bound = joint.loss if joint.exact else bound
    a_j, o_j = merge_singletons(joint.i_and, joint.i_or)
    a_t = o_t = None
    if trad:
        a_t, o_t = merge_singletons(np.concatenate([t.i_and for t in trad]), np.concatenate([t.i_or for t in trad]))
    return Extraction(v=v, joint=joint, traditional=trad, and_joint=a_j, or_joint=o_j, and_trad=a_t, or_trad=o_t,
                      bound=bound)
