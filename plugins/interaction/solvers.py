"""Solver choice (spec §2.9.4, corrected by the verification record), run-time estimates, one entry point.

* ``lp`` (exact; HiGHS interior point): the default for the joint problem when n ≤ 10 and m ≤ 3, and for the
  single-model ("traditional") problem when n ≤ 12 (measured 1.5 s at n = 10 and 45 s at n = 12, 2 cores).
* ``pdhg`` (first-order primal-dual on torch, certified gap, batched over samples): the default beyond that. On
  real model outputs it does not reach the LP's optimum in the time the LP takes (benchmarks/bench_interaction.py),
  but it ends lower than smoothed L-BFGS-B in the same time (n = 10: 164 vs 242, n = 12: 572 vs 755 after 10 s;
  LP optimum at n = 10: 133.7) and always reports a certified gap.
* ``smooth_lbfgs`` (alias ``lbfgs``): inexact; kept for comparison.
* ``reference`` (alias ``sgd``): the paper code's SGD, for reproduction only.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance_plugins.interaction.problem import Problem, Solution
from governance_plugins.interaction.solver_iterative import solve_reference_sgd, solve_smooth_lbfgs
from governance_plugins.interaction.solver_lp import LPFailed, solve_lp

ALIASES = {"lbfgs": "smooth_lbfgs", "sgd": "reference"}
NAMES = ("auto", "lp", "pdhg", "smooth_lbfgs", "lbfgs", "reference", "sgd")
LP_MAX_N_JOINT, LP_MAX_M_JOINT, LP_MAX_N_SINGLE = 10, 3, 12

#: measured HiGHS interior-point seconds per problem on the 2-core machine (quiet), by (models, n); beyond the
#: table the time grows about 5x per added variable (n = 8 → 10 and 10 → 12)
LP_SECONDS = {(1, 8): 0.1, (1, 9): 0.4, (1, 10): 1.5, (1, 11): 8.0, (1, 12): 45.0,
              (2, 6): 0.05, (2, 7): 0.15, (2, 8): 0.6, (2, 9): 2.5, (2, 10): 15.0, (3, 10): 50.0}
LP_GROWTH_PER_VARIABLE = 5.0
MODEL_FACTOR = 3.5  # one more model in the joint LP (m = 3 vs 2 at n = 10: 37-59 s vs 9.5-17.5 s)


@dataclass
class SolverSettings:
    lp_time_limit: float = 600.0
    lbfgs_stages: int = 10
    lbfgs_max_iter: int = 600
    lbfgs_time_limit: float = 600.0
    sgd_lr: float = 1e-5
    sgd_iterations: int = 20000
    sgd_momentum: float = 0.9
    sgd_lr_decay: bool | None = None
    pdhg_tol: float = 1e-6
    pdhg_time_limit: float = 60.0
    pdhg_max_iter: int = 200_000
    device: str = "cpu"


def choose(name: str, n: int, m: int) -> str:
    """The concrete solver for a requested name and problem size."""
    name = ALIASES.get(name, name)
    if name not in ("auto", "lp", "pdhg", "smooth_lbfgs", "reference"):
        raise ValueError(f"unknown solver {name!r}; choose one of {NAMES}")
    if name != "auto":
        return name
    if m == 1:
        return "lp" if n <= LP_MAX_N_SINGLE else "pdhg"
    return "lp" if n <= LP_MAX_N_JOINT and m <= LP_MAX_M_JOINT else "pdhg"


def lp_seconds(n: int, m: int) -> float:
    """Expected HiGHS seconds for one problem of n variables and m models (table above, extrapolated)."""
    m_key = 1 if m == 1 else 2
    known = [k for (mm, k) in LP_SECONDS if mm == m_key]
    base_n = min(max(n, min(known)), max(known))
    seconds = LP_SECONDS[(m_key, base_n)] * LP_GROWTH_PER_VARIABLE ** (n - base_n)
    return seconds * (MODEL_FACTOR ** (m - 2) if m > 2 else 1.0)


def estimate_seconds(name: str, n: int, m: int, settings: SolverSettings) -> float:
    """Expected seconds for one problem: the LP table, or the iterative solver's own time limit."""
    concrete = choose(name, n, m)
    if concrete == "lp":
        return min(lp_seconds(n, m), settings.lp_time_limit)
    if concrete == "pdhg":
        return settings.pdhg_time_limit
    if concrete == "smooth_lbfgs":
        return settings.lbfgs_time_limit
    return 2e-5 * settings.sgd_iterations * m * (1 << n) / 1024


def _pdhg(problems: list[Problem], s: SolverSettings) -> list[Solution]:
    from governance_plugins.interaction.solver_pdhg import PDHGSettings, solve_pdhg

    return solve_pdhg(problems, PDHGSettings(tol=s.pdhg_tol, time_limit=s.pdhg_time_limit,
                                             max_iter=s.pdhg_max_iter, device=s.device))


def solve(problem: Problem, name: str, settings: SolverSettings | None = None) -> Solution:
    """Solve one problem with the named solver (see :func:`solve_many`)."""
    return solve_many([problem], name, settings)[0]


def solve_many(problems: list[Problem], name: str, settings: SolverSettings | None = None) -> list[Solution]:
    """Solve problems of one size with the named solver; ``pdhg`` runs them as one batch. An LP that stops
    without an optimum falls back to PDHG and says so in ``message`` (lifted into the report's warnings).
    The iterative solvers start from γ = q = 0 on purpose: started from the per-model optima, smoothed
    L-BFGS-B kept their separate supports (sharing s 0.68 vs 0.73, LP 0.72; real digits CNNs, n = 10)."""
    s = settings or SolverSettings()
    if not problems:
        return []
    concrete = choose(name, problems[0].n, problems[0].m)
    if concrete == "pdhg":
        return _pdhg(problems, s)
    out = []
    for problem in problems:
        if concrete == "lp":
            try:
                out.append(solve_lp(problem, time_limit=s.lp_time_limit))
            except LPFailed as exc:
                sol = _pdhg([problem], s)[0]
                sol.message = f"LP failed ({exc}); PDHG used instead: {sol.message}"
                out.append(sol)
        elif concrete == "smooth_lbfgs":
            out.append(solve_smooth_lbfgs(problem, stages=s.lbfgs_stages, max_iter=s.lbfgs_max_iter,
                                          time_limit=s.lbfgs_time_limit))
        else:
            out.append(solve_reference_sgd(problem, lr=s.sgd_lr, iterations=s.sgd_iterations,
                                           momentum=s.sgd_momentum, lr_decay=s.sgd_lr_decay))
    return out
