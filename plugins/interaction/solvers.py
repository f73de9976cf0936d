"""Solver choice (spec §2.9.4, corrected by the verification record) and one entry point for all of them.

* ``lp`` (exact; HiGHS interior point): the default for the joint problem when n ≤ 10 and m ≤ 3, and for the
  single-model ("traditional") problem when n ≤ 12 (measured 1.5 s at n = 10 and 45 s at n = 12, 2 cores).
* ``smooth_lbfgs`` (alias ``lbfgs``): the fallback beyond that; inexact, so its gap to a lower bound is
  reported.
* ``reference`` (alias ``sgd``): the paper code's SGD, for reproduction only.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance_plugins.interaction.problem import Problem, Solution
from governance_plugins.interaction.solver_iterative import solve_reference_sgd, solve_smooth_lbfgs
from governance_plugins.interaction.solver_lp import LPFailed, solve_lp

ALIASES = {"lbfgs": "smooth_lbfgs", "sgd": "reference"}
NAMES = ("auto", "lp", "smooth_lbfgs", "lbfgs", "reference", "sgd")
LP_MAX_N_JOINT, LP_MAX_M_JOINT, LP_MAX_N_SINGLE = 10, 3, 12


@dataclass
class SolverSettings:
    lp_time_limit: float = 600.0
    lbfgs_stages: int = 10
    lbfgs_max_iter: int = 600
    sgd_lr: float = 1e-5
    sgd_iterations: int = 20000
    sgd_momentum: float = 0.9
    sgd_lr_decay: bool | None = None


def choose(name: str, n: int, m: int) -> str:
    """The concrete solver for a requested name and problem size."""
    name = ALIASES.get(name, name)
    if name not in ("auto", "lp", "smooth_lbfgs", "reference"):
        raise ValueError(f"unknown solver {name!r}; choose one of {NAMES}")
    if name != "auto":
        return name
    if m == 1:
        return "lp" if n <= LP_MAX_N_SINGLE else "smooth_lbfgs"
    return "lp" if n <= LP_MAX_N_JOINT and m <= LP_MAX_M_JOINT else "smooth_lbfgs"


def solve(problem: Problem, name: str, settings: SolverSettings | None = None) -> Solution:
    """Solve with the named solver. An LP that stops without an optimum falls back to smooth L-BFGS-B and
    says so in ``message``. The smoothed solver starts from γ = q = 0 on purpose: started from the per-model
    optima it reached a lower loss (90.2 vs 92.2; LP optimum 82.9, real digits CNNs, n = 10) but kept their
    separate supports (sharing s 0.68 vs 0.73, LP 0.72; at n = 12 no more sharing than the per-model
    extraction), which defeats the joint extraction."""
    s = settings or SolverSettings()
    concrete = choose(name, problem.n, problem.m)
    if concrete == "lp":
        try:
            return solve_lp(problem, time_limit=s.lp_time_limit)
        except LPFailed as exc:
            sol = solve_smooth_lbfgs(problem, stages=s.lbfgs_stages, max_iter=s.lbfgs_max_iter)
            sol.message = f"LP failed ({exc}); smooth L-BFGS-B used instead"
            return sol
    if concrete == "smooth_lbfgs":
        return solve_smooth_lbfgs(problem, stages=s.lbfgs_stages, max_iter=s.lbfgs_max_iter)
    return solve_reference_sgd(problem, lr=s.sgd_lr, iterations=s.sgd_iterations, momentum=s.sgd_momentum,
                               lr_decay=s.sgd_lr_decay)

