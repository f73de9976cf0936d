"""Memory planning: how many masked inputs to evaluate per chunk, and a clear error when n cannot fit.

Estimated peak = solver working set + cached outputs and interactions + one chunk of masked inputs. The
masked inputs are streamed in chunks, so only the solver and the cache grow with 2ⁿ unconditionally; the
exact LP's working set (about 3 KB per LP variable in HiGHS, measured at n = 8 and 10) dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.errors import MethodError

LP_BYTES_PER_VAR = 3000
ITER_BYTES_PER_PARAM = 600  # L-BFGS-B history (20 pairs) + work arrays
MIN_CHUNK = 64
MAX_CHUNK_BYTES = 256 * 2**20  # larger chunks only cost memory: the model batches them anyway


def lp_variables(n: int, m: int) -> int:
    """Variables of the sparse butterfly LP (γ̄, γ̂, q, w, r, two chains of n·2ⁿ⁻¹, epigraphs)."""
    size = 1 << n
    return size * (1 + (2 if m > 1 else 0) + m * (n + 6))


def solver_bytes(n: int, m: int, solver: str) -> int:
    size = 1 << n
    if solver == "lp":
        return LP_BYTES_PER_VAR * lp_variables(n, m)
    return ITER_BYTES_PER_PARAM * (2 * m + 1) * size


@dataclass
class Plan:
    chunk_rows: int
    estimate_bytes: int
    parts: dict[str, int]


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TiB"


def plan(n: int, m: int, n_samples: int, sample_bytes: int, solvers: dict[str, str], budget_bytes: int) -> Plan:
    """Chunk size for the masked-input stream, or MethodError naming the memory needed."""
    size = 1 << n
    solve = max(solver_bytes(n, mm, s) for mm, s in ((m, solvers["joint"]), (1, solvers["single"])))
    cache = n_samples * m * size * 8 * 8  # v, 2 joint + 2 traditional interaction vectors, γ̂, q, spare
    per_row = sample_bytes * 2 + 64  # the masked input, the keep mask and the outputs
    minimum = min(size, MIN_CHUNK) * per_row
    fixed = solve + cache
    parts = {"solver": solve, "cache": cache, "masked inputs (smallest chunk)": minimum,
             "all 2^n masked inputs of one sample at once": size * sample_bytes}
    if fixed + minimum > budget_bytes:
        detail = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in parts.items())
        raise MethodError(
            f"n = {n} input variables need about {fmt_bytes(fixed + minimum)} of memory ({fixed + minimum} bytes) "
            f"for {m} model(s) and {n_samples} sample(s), more than the budget of {fmt_bytes(budget_bytes)} "
            f"({detail})",
            hint="lower n_variables (each variable doubles the cost), or raise memory_budget_mb if the machine "
            "has the memory",
        )
    rows = int(min(size, max(MIN_CHUNK, min(budget_bytes - fixed, MAX_CHUNK_BYTES) // per_row)))
    return Plan(chunk_rows=rows, estimate_bytes=fixed + min(rows, size) * per_row, parts=parts)


# ------------------------------------------------------------------------------------------ run time
@dataclass
class Workload:
    """What one run will compute (for the run-time estimate made before anything expensive starts)."""

    n: int
    m: int
    n_samples: int
    seconds_per_row: float  # measured forward seconds of all models together per masked input
    joint_seconds: float  # expected seconds of one joint problem (one single-model problem when m = 1)
    single_seconds: float  # expected seconds of one per-model problem
    traditional: bool
    control_draws: int  # extra joint solves for the permuted-peer control
    stability_resolves: int  # extra joint solves for the re-solve check


def estimate_seconds(w: Workload) -> dict[str, float]:
    """Expected seconds by part, and the total."""
    forwards = w.n_samples * (1 << w.n) * w.seconds_per_row
    if w.m == 1:
        solves = w.n_samples * w.single_seconds
        extra = 0.0
    else:
        solves = w.n_samples * (w.joint_seconds + (w.m * w.single_seconds if w.traditional else 0.0))
        extra = (w.control_draws + w.stability_resolves) * w.joint_seconds
    return {"forwards": forwards, "solves": solves, "controls": extra, "total": forwards + solves + extra}


def check_time(w: Workload, budget_s: float, solver: str) -> dict[str, float]:
    """The estimate, or MethodError naming how to reduce n or switch solver when it exceeds the budget."""
    est = estimate_seconds(w)
    if est["total"] <= budget_s:
        return est
    smaller = next((k for k in range(w.n - 1, 0, -1)
                    if estimate_seconds(Workload(**{**w.__dict__, "n": k,
                                                    "joint_seconds": w.joint_seconds / 5 ** (w.n - k),
                                                    "single_seconds": w.single_seconds / 5 ** (w.n - k)}))["total"]
                    <= budget_s), 1)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in est.items() if k != "total")
    raise MethodError(
        f"the interaction run is estimated at {est['total']:.0f} s ({parts}) for n = {w.n} variables, {w.m} "
        f"model(s) and {w.n_samples} sample(s) with solver '{solver}', above the time budget of {budget_s:.0f} s",
        hint=f"lower n_variables (about {smaller} fits the budget; each variable multiplies the exact LP's time by "
        "about 5), lower n_samples or control_draws, set solver='pdhg' with pdhg_time_limit_s (first-order, a "
        "certified gap instead of the exact optimum), or raise interaction.time_budget_s",
    )
