"""The ``interaction`` method: AND/OR interactions shared by a model and its peers (Chen, Lou, Huang & Zhang,
ICLR 2024, arXiv 2401.16318), as specified in research/methods-interactions.md.

Flow: choose samples and a target class → choose n input variables (named, all, or top-n by an occlusion
screen) → evaluate all 2ⁿ masked inputs of every sample on every model (forward only, streamed in chunks
sized to a memory budget) → v = log-odds of the target → per sample, the joint extraction (Eq. 6) and the
per-model "traditional" extraction (Eq. 4) → merged interactions → shared / gained / lost patterns, overlap
per pair of models, solver quality → figures and the report section.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from governance.errors import MethodError
from governance import Explanation, Method, MethodConfig, MethodContext, Requirement


class InteractionConfig(MethodConfig):
    """Configuration of the interaction method (defaults from the spec; [R] marks reconstructions)."""

    n_variables: int = Field(10, ge=1, le=20, description="n: input variables per sample (2^n masked inputs)")
    n_samples: int = Field(5, ge=1, le=1000, description="samples explained")
    features: Optional[list[str]] = Field(None, description="tabular: named features instead of the screen")
    patches: Optional[list[str]] = Field(None, description="images: named patches 'r{row}c{col}' of the grid")
    grid: tuple[int, int] = Field((4, 4), description="images: rows x columns of the patch grid")
    baseline: float | Literal["dataset", "mean", "zero"] = Field(
        "dataset", description="masking value: the dataset's baseline (feature means / zero image), the data "
        "mean, zero, or a constant")
    target: Literal["auto", "label", "predicted"] = Field(
        "auto", description="class whose log-odds is explained: labels when present, else the reviewed "
        "model's prediction")
    correct_only: bool = Field(True, description="with labels, keep samples every model classifies correctly")
    output: Literal["log_odds", "raw"] = Field("log_odds", description="v: log-odds of the target or its raw score")
    solver: Literal["auto", "lp", "pdhg", "smooth_lbfgs", "lbfgs", "reference", "sgd"] = Field(
        "auto", description="auto: exact LP (HiGHS) for n<=10 and m<=3 models, else the first-order PDHG solver "
        "with a certified gap")
    traditional: bool = Field(True, description="also run the per-model (Eq. 4) extraction as the baseline")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the entrywise L1 term of Eq. 6")
    weighting: Literal["paper", "reference"] = Field("paper", description="Eq. 6 form: paper or reference code")
    error_ratio: float = Field(0.02, ge=0.0, le=1.0, description="error-term bound / |v(N)-v(0)|; 0 = off")
    gamma_ratio: Optional[float] = Field(0.5, ge=0.0, description="model-specific split bound / mean |v(N)-v(0)|; "
                                         "None = unbounded")
    salient_ratio: float = Field(0.05, gt=0.0, lt=1.0, description="salient: |I| > ratio x max |I|")
    top_k: Optional[int] = Field(None, ge=1, description="k of the top-k overlap; default int(0.05 x 2^n)")
    show_top: int = Field(10, ge=1, le=100, description="patterns listed per sample")
    memory_budget_mb: float = Field(2048.0, gt=0, description="memory for masked inputs, solver and cache")
    batch_size: Optional[int] = Field(None, ge=1, description="forward batch size (default: the model's)")
    lp_time_limit_s: float = Field(600.0, gt=0)
    pdhg_tol: float = Field(1e-6, gt=0, lt=1, description="PDHG stops at this certified relative duality gap")
    pdhg_time_limit_s: float = Field(60.0, gt=0, description="PDHG time limit per batch of problems")
    lbfgs_time_limit_s: float = Field(120.0, gt=0, description="smoothed L-BFGS-B time limit per problem")
    time_budget_s: float = Field(900.0, gt=0, description="refuse a run whose estimated time exceeds this")
    control_draws: int = Field(3, ge=0, le=50, description="joint re-solves with randomly relabelled peer "
                                "variables: the control of the sharing figures (0 = no control)")
    stability_check: bool = Field(True, description="re-solve the first sample with relabelled variables and "
                                  "report how much the optimum moves (non-unique optima)")
    lbfgs_stages: int = Field(10, ge=1, le=30)
    lbfgs_max_iter: int = Field(600, ge=1)
    sgd_lr: float = Field(1e-5, gt=0)
    sgd_iterations: int = Field(20000, ge=1)
    sgd_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    sgd_lr_decay: Optional[bool] = Field(None, description="None: as the reference code (decay for one model)")

    @field_validator("grid")
    @classmethod
    def _grid_positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1 or v[1] < 1:
            raise ValueError("grid rows and columns must be >= 1")
        return v


def _spec_text(model: Any) -> str:
    shape = ", ".join("batch" if d is None else str(d) for d in model.input_spec.shape)
    return f"{model.info.display_name}: input '{model.input_spec.name}' ({shape}) {model.input_spec.dtype}, " \
           f"{model.n_outputs} output(s)"


def check_compatible(models: list[Any]) -> None:
    """All models must read the same input (shape and dtype) and produce the same number of outputs."""
    ref = models[0]
    for peer in models[1:]:
        same = (tuple(peer.input_spec.sample_shape) == tuple(ref.input_spec.sample_shape)
                and peer.input_spec.dtype == ref.input_spec.dtype and peer.n_outputs == ref.n_outputs)
        if not same:
            raise MethodError(
                "the interaction method compares models on the same input variables, but the peer and the "
                f"reviewed model differ: peer {_spec_text(peer)}; reviewed {_spec_text(ref)}",
                hint="pass --peers with versions that share the reviewed model's input signature and classes, "
                "or run without --peers",
            )


def _labels(models: list[Any]) -> list[str]:
    names = [str(m.info.display_name) for m in models]
    out = []
    for i, nm in enumerate(names):
        out.append(nm if names.count(nm) == 1 else f"{nm} #{i}")
    return out


class InteractionMethod(Method):
    name = "interaction"
    version = "1.0.0"
    title = "Shared AND/OR interactions (generalizable interaction primitives)"
    description = (
        "Explains a model by the AND and OR interactions among n input variables that rebuild its output on "
        "every masked input, and extracts jointly the interactions the model shares with its peer versions, "
        "so that a reviewer sees what knowledge a new version kept, gained and lost."
    )
    reference = ("L. Chen, S. Lou, B. Huang, Q. Zhang. Defining and Extracting Generalizable Interaction "
                 "Primitives from DNNs. ICLR 2024. arXiv:2401.16318")
    requires = frozenset({Requirement.FORWARD, Requirement.PEERS})
    Config = InteractionConfig
    report_template = "governance_plugins.interaction:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        why = super().can_explain(model=model, data=data)
        if why:
            return why
        if getattr(model, "task", "classification") == "regression":
            return (f"explains a classifier's class log-odds, but the model is a regressor ({model.task_reason}); "
                    "pass --task classification if its one output is a binary logit")
        if len(data) == 0:
            return "the dataset has no samples"
        if data.modality == "image" and len(data.sample_shape) not in (2, 3):
            return f"image samples of shape {data.sample_shape} are not (C,H,W), (H,W,C) or (H,W)"
        return None


    # ------------------------------------------------------------------------------------------ explain
    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        from governance_plugins.interaction.selection import choose_samples, choose_variables, value_fn

        cfg: InteractionConfig = ctx.config  # type: ignore[assignment]
        started = time.perf_counter()
        run = _prepare(ctx, cfg)
        ctx.progress(0.0, "choosing samples")
        pick = choose_samples(ctx, cfg, run.models, run.predicts, run.X, ctx.data)
        run.warnings += pick.notes
        values = [value_fn(cfg, pick.probabilities[i]) for i in range(run.m)]
        ctx.progress(0.03, "choosing input variables")
        var_sets, var_info = choose_variables(cfg, ctx.data, run.X[pick.rows], pick.targets, run.baseline,
                                              run.predicts, values)
        options = _options(cfg, run)
        plan = _plan(cfg, run, pick, var_sets[0].n, options)
        v, eval_seconds = _evaluate(ctx, run, pick, var_sets, values, plan["chunk_rows"])
        solved = _solve(ctx, cfg, run, pick, var_sets, v, options)
        from governance_plugins.interaction.summarize import SummaryOptions, summarize

        summary = summarize(solved.records, run.labels, SummaryOptions(
            salient_ratio=cfg.salient_ratio, top_k=cfg.top_k, show_top=cfg.show_top,
            class_names=ctx.data.class_names))
        timing = {"evaluation": eval_seconds, "extraction": solved.seconds, "total": time.perf_counter() - started}
        return _assemble(ctx, cfg, run, summary, solved, {"variables": var_info, "plan": plan, "seconds": timing,
                                                          "var_sets": var_sets})


@dataclass
class _Run:
    """The models, data and model calls of one explain() call."""

    models: list[Any]
    labels: list[str]
    X: np.ndarray
    baseline: np.ndarray
    predicts: list[Any]
    warnings: list[str]

    @property
    def m(self) -> int:
        return len(self.models)


def _prepare(ctx: MethodContext, cfg: InteractionConfig) -> _Run:
    from governance_plugins.interaction.selection import baseline_of

    models = [ctx.model, *ctx.peers]
    check_compatible(models)
    labels = _labels(models)
    warnings: list[str] = []
    if len(models) == 1:
        warnings.append(
            f"No peer models were given or found, so only the single-model extraction ran for {labels[0]}: "
            "shared, gained and lost knowledge need --peers (by default the earlier versions of the model).")
    X = np.asarray(ctx.data.X)
    want = tuple(models[0].input_spec.sample_shape)
    if len(want) != X.ndim - 1 or any(w is not None and w != g for w, g in zip(want, X.shape[1:])):
        raise MethodError(f"the data samples have shape {X.shape[1:]}, but {_spec_text(models[0])}",
                          hint="pass --data with samples of the model's input shape")
    predicts = [lambda x, mdl=mdl: mdl.predict(x, batch_size=cfg.batch_size) for mdl in models]
    return _Run(models, labels, X, baseline_of(cfg, ctx.data), predicts, warnings)


def _options(cfg: InteractionConfig, run: _Run) -> Any:
    from governance_plugins.interaction.extract import ExtractOptions
    from governance_plugins.interaction.solvers import SolverSettings

    device = "cpu"
    if str(run.models[0].device).startswith("cuda"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = SolverSettings(lp_time_limit=cfg.lp_time_limit_s, lbfgs_stages=cfg.lbfgs_stages,
                              lbfgs_max_iter=cfg.lbfgs_max_iter, lbfgs_time_limit=cfg.lbfgs_time_limit_s,
                              sgd_lr=cfg.sgd_lr, sgd_iterations=cfg.sgd_iterations, sgd_momentum=cfg.sgd_momentum,
                              sgd_lr_decay=cfg.sgd_lr_decay, pdhg_tol=cfg.pdhg_tol,
                              pdhg_time_limit=cfg.pdhg_time_limit_s, device=device)
    return ExtractOptions(alpha=cfg.alpha, weighting=cfg.weighting, error_ratio=cfg.error_ratio, solver=cfg.solver,
                          traditional_solver=cfg.solver if run.m == 1 else "auto", traditional=cfg.traditional,
                          settings=settings)


def _plan(cfg: InteractionConfig, run: _Run, pick: Any, n: int, options: Any) -> dict[str, Any]:
    """Memory plan and run-time estimate before any masked input is evaluated; refuses above the budgets."""
    from governance_plugins.interaction.budget import Workload, check_time, fmt_bytes, plan
    from governance_plugins.interaction.solvers import choose, estimate_seconds

    m, samples = run.m, len(pick.rows)
    solvers = {"joint": choose(cfg.solver, n, m), "single": choose(options.traditional_solver, n, 1)}
    sample_bytes = int(np.prod(run.X.shape[1:])) * run.X.dtype.itemsize
    mem = plan(n, m, samples, sample_bytes, solvers, int(cfg.memory_budget_mb * 2**20))
    joint_s = estimate_seconds(cfg.solver, n, m, options.settings) / (samples if solvers["joint"] == "pdhg" else 1)
    single_s = estimate_seconds(options.traditional_solver, n, 1, options.settings)
    if solvers["single"] == "pdhg":
        single_s /= samples * m
    work = Workload(n=n, m=m, n_samples=samples, seconds_per_row=pick.seconds_per_row,
                    joint_seconds=joint_s if m > 1 else single_s, single_seconds=single_s,
                    traditional=cfg.traditional, control_draws=cfg.control_draws if m > 1 else 0,
                    stability_resolves=1 if (cfg.stability_check and m > 1 and solvers["joint"] == "lp") else 0)
    est = check_time(work, cfg.time_budget_s, solvers["joint"])
    return {"chunk_rows": mem.chunk_rows, "estimate": fmt_bytes(mem.estimate_bytes), "solvers": solvers,
            "budget": fmt_bytes(cfg.memory_budget_mb * 2**20), "seconds_estimate": est,
            "time_budget_s": cfg.time_budget_s}


def _evaluate(ctx: MethodContext, run: _Run, pick: Any, var_sets: list[Any], values: list[Any],
              chunk_rows: int) -> tuple[np.ndarray, float]:
    """v(x_T) of every model on all 2ⁿ masked inputs of every sample: (samples, m, 2ⁿ)."""
    from governance_plugins.interaction.variables import evaluate_masked

    n = var_sets[0].n
    n_coords = int(np.prod(run.X.shape[1:]))
    v = np.zeros((len(pick.rows), run.m, 1 << n))
    start = time.perf_counter()
    for s, row in enumerate(pick.rows):
        t = int(pick.targets[s])
        outputs = [lambda out, f=f, t=t: f(out, np.full(len(out), t)) for f in values]
        v[s] = evaluate_masked(run.predicts, run.X[row], run.baseline, var_sets[s].labels(n_coords), n, outputs,
                               chunk_rows)
        ctx.progress(0.05 + 0.3 * (s + 1) / len(pick.rows), f"evaluated 2^{n} masked inputs of sample {s + 1}")
    return v, time.perf_counter() - start


@dataclass
class _Solved:
    records: list[Any]
    controls: Any  # narrative.ControlData
    stability: Any  # controls.Stability | None
    tau_gamma: np.ndarray
    seconds: float


def _solve(ctx: MethodContext, cfg: InteractionConfig, run: _Run, pick: Any, var_sets: list[Any], v: np.ndarray,
           options: Any) -> _Solved:
    """The joint and per-model extractions of every sample, then the controls and the re-solve check."""
    from governance_plugins.interaction import controls as ctl
    from governance_plugins.interaction.extract import extract_all
    from governance_plugins.interaction.narrative import ControlData
    from governance_plugins.interaction.summarize import SampleRecord, sharing_figures

    start = time.perf_counter()
    v_empty = v[:, :, 0].copy()
    shifted = v - v_empty[:, :, None]
    spread = np.abs(shifted[:, :, -1]).mean(axis=0)  # E_x |v(x_N) - v(x_∅)| per model
    tau_gamma = np.full(run.m, np.inf) if cfg.gamma_ratio is None else cfg.gamma_ratio * spread
    ctx.progress(0.4, f"extracting interactions of {len(pick.rows)} sample(s)")
    exts = extract_all(list(shifted), tau_gamma, options)
    records = [SampleRecord(index=int(row), target=int(pick.targets[s]), names=var_sets[s].names, ext=exts[s],
                            v_empty=v_empty[s]) for s, row in enumerate(pick.rows)]
    rng = np.random.default_rng(ctx.seed)
    sharing = None
    if run.m > 1 and cfg.control_draws:
        ctx.progress(0.8, "control: peers with relabelled variables")
        again = [shifted[k % len(exts)] for k in range(cfg.control_draws)]
        sharing = sharing_figures(ctl.permuted_peer_extractions(again, tau_gamma, options, rng), cfg.salient_ratio)
    trivial = [ctl.trivial_split_figures(e.v[0], cfg.salient_ratio) for e in exts]
    data = ControlData(sharing=sharing, trivial_salient=[t[0] for t in trivial], trivial_error=[t[1] for t in trivial])
    stability = None
    if cfg.stability_check and run.m > 1 and exts[0].joint.exact and exts[0].joint.solver == "lp":
        stability = ctl.resolve_stability(exts[0], tau_gamma, options, cfg.salient_ratio, rng)
    return _Solved(records, data, stability, tau_gamma, time.perf_counter() - start)


def _figures(ctx: MethodContext, summary: Any, labels: list[str]) -> dict[str, Any]:
    from governance_plugins.interaction.figures import orders_figure, sharing_figure, top_patterns_figure

    figures = {"top_patterns": ctx.save_figure(top_patterns_figure(summary.patterns, labels), "top_patterns"),
               "orders": ctx.save_figure(orders_figure(summary.orders, labels[0], len(labels) > 1), "orders")}
    if len(labels) > 1:
        figures["sharing"] = ctx.save_figure(
            sharing_figure(labels, summary.set_sizes["salient"], summary.set_sizes["shared"][0], summary.curves),
            "sharing")
    return figures


def _stability_notes(stability: Any, metrics: dict[str, float]) -> list[str]:
    if stability is None:
        return []
    metrics.update({"resolve_max_change": stability.max_change, "resolve_salient_agreement":
                    stability.salient_agreement})
    if stability.max_change <= 1e-6 * max(metrics["output_range"], 1.0):
        return []
    return [f"The optimum is not unique: re-solving the first sample with relabelled variables gave the same loss "
            f"(difference {stability.loss_change:.2g}) but moved a merged interaction by {stability.max_change:.3g}; "
            f"the salient sets agree {100 * stability.salient_agreement:.0f} % (IoU). Read individual patterns as "
            "one faithful description among equally good ones."]


def _assemble(ctx: MethodContext, cfg: InteractionConfig, run: _Run, summary: Any, solved: _Solved,
              extra: dict[str, Any]) -> Explanation:
    from governance_plugins.interaction.narrative import (
        add_controls, control_findings, pattern_findings, solved_text, solver_warnings, summary_text)
    from governance_plugins.interaction.selection import target_rule

    records, plan = solved.records, extra["plan"]
    metrics = dict(summary.metrics)
    seconds = extra["seconds"]
    n, m = int(metrics["n_variables"]), run.m
    metrics.update({"masked_inputs_per_second": float(len(records) * m * (1 << n) / max(seconds["evaluation"],
                                                                                         1e-9)),
                    "evaluation_seconds": float(seconds["evaluation"]), "extraction_seconds": float(
                        seconds["extraction"]), "estimated_seconds": float(plan["seconds_estimate"]["total"])})
    warnings = run.warnings + solver_warnings(records) + _stability_notes(solved.stability, metrics)
    details = dict(summary.details)
    details.update({
        "variables": extra["variables"],
        "baseline": cfg.baseline if isinstance(cfg.baseline, str) else float(cfg.baseline),
        "output": ("log-odds of the target class, z_y - logsumexp_{j!=y} z_j" if cfg.output == "log_odds"
                   else "raw score of the target class") + "; v(x_empty) subtracted",
        "target_rule": target_rule(cfg, ctx.data),
        "solver": {"requested": cfg.solver, **plan["solvers"], "alpha": cfg.alpha, "weighting": cfg.weighting,
                   "error_ratio": cfg.error_ratio, "gamma_ratio": cfg.gamma_ratio,
                   "tau_gamma": [float(t) for t in solved.tau_gamma]},
        "memory": {"chunk_rows": plan["chunk_rows"], "estimate": plan["estimate"], "budget": plan["budget"]},
        "time": {"estimate": plan["seconds_estimate"], "budget_s": plan["time_budget_s"]},
        "model_runtimes": [{"model": run.labels[i], "runtime": run.models[i].runtime,
                            "device": run.models[i].device} for i in range(m)],
        "seconds": seconds})
    arrays = dict(summary.arrays)
    arrays["variables"] = np.array([vs.candidate_index for vs in extra["var_sets"]])
    exp = Explanation(method="interaction", metrics=metrics, arrays=arrays, figures=_figures(ctx, summary,
                      run.labels), tables=summary.tables, details=details, warnings=warnings)
    add_controls(exp, solved.controls)
    exp.findings = control_findings(exp) + pattern_findings(summary.details, run.labels)
    exp.summary = summary_text(exp, run.labels, solved_text(records), cfg.error_ratio)
    return exp
