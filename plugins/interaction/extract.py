"""Per-sample extraction: the joint problem of all models (Eq. 6, "shared"), the per-model problems (Eq. 4,
"traditional"), certified lower bounds for inexact answers, and the merged interactions used by every metric.
Problems of one size are handed to the solver together, so the first-order solver batches over samples and, for
the per-model problems, over models."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from governance_plugins.interaction.problem import Problem, Solution
from governance_plugins.interaction.solver_iterative import dual_lower_bound
from governance_plugins.interaction.solvers import SolverSettings, solve_many
from governance_plugins.interaction.transforms import merge_singletons


@dataclass
class ExtractOptions:
    """How one sample's problems are posed and solved (spec §2.7, §2.9)."""

    alpha: float = 0.1
    weighting: str = "paper"
    error_ratio: float = 0.02  # error-term bound / |v(x_N) - v(x_∅)| per model; 0 = off
    solver: str = "auto"
    traditional_solver: str = "auto"
    traditional: bool = True
    settings: SolverSettings = field(default_factory=SolverSettings)


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


def joint_problem(v: np.ndarray, tau_gamma: np.ndarray, options: ExtractOptions) -> Problem:
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    tau_eps = options.error_ratio * np.abs(v[:, -1] - v[:, 0])
    return Problem(v, tau_gamma, tau_eps, alpha=options.alpha, weighting=options.weighting)


def _single_bound(problem: Problem, sol: Solution) -> float:
    """Exact optimum for an LP answer; a first-order answer brings its certificate; else the dual bound."""
    if sol.exact:
        return sol.loss
    if sol.lower_bound is not None:
        return sol.lower_bound
    return dual_lower_bound(problem, sol.i_and, sol.i_or, mu=sol.smoothing)


def _solve_traditional(problems: list[Problem], options: ExtractOptions) -> list[list[Solution]]:
    singles = [p.single(i) for p in problems for i in range(p.m)]
    name = options.traditional_solver if problems[0].m > 1 else options.solver
    sols = solve_many(singles, name, options.settings)
    for sp, sol in zip(singles, sols):
        sol.lower_bound = _single_bound(sp, sol)
    m = problems[0].m
    return [sols[k * m:(k + 1) * m] for k in range(len(problems))]


def _solve_joint(problems: list[Problem], trad: list[list[Solution]], options: ExtractOptions) -> list[Solution]:
    sols = solve_many(problems, options.solver, options.settings)
    for k, (p, sol) in enumerate(zip(problems, sols)):
        o13 = p.lower_bound(np.array([t.lower_bound for t in trad[k]])) if trad[k] else None
        own = sol.lower_bound
        if sol.exact:
            sol.lower_bound = sol.loss if own is None else own
        else:
            sol.lower_bound = max(b for b in (own, o13, -np.inf) if b is not None)
            if not np.isfinite(sol.lower_bound):
                sol.lower_bound = None
    return sols


def extract_all(vs: list[np.ndarray], tau_gamma: np.ndarray, options: ExtractOptions) -> list[Extraction]:
    """Extract the interactions of several samples (each (m, 2ⁿ), v(x_∅) subtracted) for m models."""
    problems = [joint_problem(v, tau_gamma, options) for v in vs]
    m = problems[0].m
    trad = _solve_traditional(problems, options) if (options.traditional or m == 1) else [[] for _ in problems]
    joints = [t[0] for t in trad] if m == 1 else _solve_joint(problems, trad, options)
    out = []
    for p, joint, tr in zip(problems, joints, trad):
        a_j, o_j = merge_singletons(joint.i_and, joint.i_or)
        a_t = o_t = None
        if tr:
            a_t, o_t = merge_singletons(np.concatenate([t.i_and for t in tr]), np.concatenate([t.i_or for t in tr]))
        bound = p.lower_bound(np.array([t.lower_bound for t in tr])) if tr else None
        out.append(Extraction(v=p.v, joint=joint, traditional=tr, and_joint=a_j, or_joint=o_j, and_trad=a_t,
                              or_trad=o_t, bound=bound))
    return out


def extract(v: np.ndarray, tau_gamma: np.ndarray, options: ExtractOptions | None = None) -> Extraction:
    """One sample (see :func:`extract_all`)."""
    return extract_all([v], tau_gamma, options or ExtractOptions())[0]


def joint_only(options: ExtractOptions) -> ExtractOptions:
    """The same options without the per-model problems (for controls and re-solves)."""
    return replace(options, traditional=False)
