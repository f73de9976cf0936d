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
    solver: Literal["auto", "lp", "smooth_lbfgs", "lbfgs", "reference", "sgd"] = Field(
        "auto", description="auto: exact LP for n<=10 and m<=3 models, else smoothed L-BFGS-B")
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
        from governance_plugins.interaction.budget import fmt_bytes, plan
        from governance_plugins.interaction.extract import extract
        from governance_plugins.interaction.solvers import SolverSettings, choose
        from governance_plugins.interaction.summarize import SampleRecord, summarize
        from governance_plugins.interaction.variables import evaluate_masked

        cfg: InteractionConfig = ctx.config  # type: ignore[assignment]
        started = time.perf_counter()
        models = [ctx.model, *ctx.peers]
        check_compatible(models)
        labels = _labels(models)
        data = ctx.data
        m = len(models)
        warnings: list[str] = []
        if m == 1:
            warnings.append(
                f"No peer models were given or found, so only the single-model extraction ran for {labels[0]}: "
                "shared, gained and lost knowledge need --peers (by default the earlier versions of the model).")
        X = np.asarray(data.X)
        want = tuple(d for d in models[0].input_spec.sample_shape)
        if len(want) != X.ndim - 1 or any(w is not None and w != g for w, g in zip(want, X.shape[1:])):
            raise MethodError(f"the data samples have shape {X.shape[1:]}, but {_spec_text(models[0])}",
                              hint="pass --data with samples of the model's input shape")
        baseline = self._baseline(cfg, data)
        predicts = [lambda x, mdl=mdl: mdl.predict(x, batch_size=cfg.batch_size) for mdl in models]

        ctx.progress(0.0, "choosing samples")
        chosen, targets, probs, notes = self._choose_samples(ctx, cfg, models, predicts, X, data)
        warnings += notes
        values = [self._value_fn(cfg, probs[i]) for i in range(m)]

        ctx.progress(0.03, "choosing input variables")
        var_sets, var_info = self._choose_variables(cfg, data, X[chosen], targets, baseline, predicts, values)
        n = var_sets[0].n
        solvers = {"joint": choose(cfg.solver, n, m), "single": choose(cfg.solver if m == 1 else "auto", n, 1)}
        sample_bytes = int(np.prod(X.shape[1:])) * X.dtype.itemsize
        mem = plan(n, m, len(chosen), sample_bytes, solvers, int(cfg.memory_budget_mb * 2**20))

        # ---------------------------------------------------------------- all 2^n masked outputs
        n_coords = int(np.prod(X.shape[1:]))
        v = np.zeros((len(chosen), m, 1 << n))
        eval_start = time.perf_counter()
        for s, row in enumerate(chosen):
            lab = var_sets[s].labels(n_coords)
            t = int(targets[s])
            v[s] = evaluate_masked(predicts, X[row], baseline, lab, n,
                                   [lambda out, f=f, t=t: f(out, np.full(len(out), t)) for f in values],
                                   mem.chunk_rows)
            ctx.progress(0.05 + 0.3 * (s + 1) / len(chosen), f"evaluated 2^{n} masked inputs of sample {s + 1}")
        eval_seconds = time.perf_counter() - eval_start

        # ---------------------------------------------------------------- extraction per sample
        v_empty = v[:, :, 0].copy()
        shifted = v - v_empty[:, :, None]
        spread = np.abs(shifted[:, :, -1]).mean(axis=0)  # E_x |v(x_N) - v(x_∅)| per model
        tau_gamma = np.full(m, np.inf) if cfg.gamma_ratio is None else cfg.gamma_ratio * spread
        settings = SolverSettings(lp_time_limit=cfg.lp_time_limit_s, lbfgs_stages=cfg.lbfgs_stages,
                                  lbfgs_max_iter=cfg.lbfgs_max_iter, sgd_lr=cfg.sgd_lr,
                                  sgd_iterations=cfg.sgd_iterations, sgd_momentum=cfg.sgd_momentum,
                                  sgd_lr_decay=cfg.sgd_lr_decay)
        records = []
        solve_start = time.perf_counter()
        for s, row in enumerate(chosen):
            ext = extract(shifted[s], tau_gamma, alpha=cfg.alpha, weighting=cfg.weighting,
                          error_ratio=cfg.error_ratio, solver=cfg.solver, traditional=cfg.traditional,
                          settings=settings)
            records.append(SampleRecord(index=int(row), target=int(targets[s]), names=var_sets[s].names, ext=ext,
                                        v_empty=v_empty[s]))
            ctx.progress(0.35 + 0.6 * (s + 1) / len(chosen), f"extracted interactions of sample {s + 1}")
        solve_seconds = time.perf_counter() - solve_start

        summary = summarize(records, labels, salient_ratio=cfg.salient_ratio, top_k=cfg.top_k,
                            show_top=cfg.show_top, class_names=data.class_names)
        warnings += self._solver_warnings(records, labels)

        # ---------------------------------------------------------------- figures
        from governance_plugins.interaction.figures import orders_figure, sharing_figure, top_patterns_figure

        figures = {"top_patterns": ctx.save_figure(top_patterns_figure(summary.patterns, labels), "top_patterns"),
                   "orders": ctx.save_figure(orders_figure(summary.orders, labels[0], m > 1), "orders")}
        if m > 1:
            figures["sharing"] = ctx.save_figure(
                sharing_figure(labels, summary.set_sizes["salient"], summary.set_sizes["shared"][0], summary.curves),
                "sharing")

        metrics = dict(summary.metrics)
        metrics["masked_inputs_per_second"] = float(len(chosen) * m * (1 << n) / max(eval_seconds, 1e-9))
        metrics["evaluation_seconds"] = float(eval_seconds)
        metrics["extraction_seconds"] = float(solve_seconds)
        details = dict(summary.details)
        details.update({
            "variables": var_info,
            "baseline": cfg.baseline if isinstance(cfg.baseline, str) else float(cfg.baseline),
            "output": ("log-odds of the target class, z_y - logsumexp_{j!=y} z_j" if cfg.output == "log_odds"
                       else "raw score of the target class") + "; v(x_empty) subtracted",
            "target_rule": self._target_rule(cfg, data),
            "solver": {"requested": cfg.solver, "joint": solvers["joint"], "single": solvers["single"],
                       "alpha": cfg.alpha, "weighting": cfg.weighting, "error_ratio": cfg.error_ratio,
                       "gamma_ratio": cfg.gamma_ratio, "tau_gamma": [float(t) for t in tau_gamma]},
            "memory": {"chunk_rows": mem.chunk_rows, "estimate": fmt_bytes(mem.estimate_bytes),
                       "budget": fmt_bytes(cfg.memory_budget_mb * 2**20)},
            "model_runtimes": [{"model": labels[i], "runtime": models[i].runtime, "device": models[i].device}
                               for i in range(m)],
            "seconds": {"evaluation": eval_seconds, "extraction": solve_seconds,
                        "total": time.perf_counter() - started},
        })
        arrays = dict(summary.arrays)
        arrays["variables"] = np.array([vs.candidate_index for vs in var_sets])
        return Explanation(
            method=self.name, summary=self._summary_text(summary.metrics, labels, n, len(chosen), records),
            metrics=metrics, arrays=arrays, figures=figures, tables=summary.tables, details=details,
            findings=self._findings(summary.details, labels), warnings=warnings)

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _baseline(cfg: InteractionConfig, data: Any) -> np.ndarray:
        X = np.asarray(data.X)
        if cfg.baseline == "dataset":
            b = data.baseline if data.baseline is not None else np.zeros(X.shape[1:])
        elif cfg.baseline == "mean":
            b = X.mean(axis=0)
        elif cfg.baseline == "zero":
            b = np.zeros(X.shape[1:])
        else:
            b = np.full(X.shape[1:], float(cfg.baseline))
        b = np.asarray(b, dtype=X.dtype)
        if b.shape != X.shape[1:]:
            raise MethodError(f"the dataset's baseline has shape {b.shape}, but samples have shape {X.shape[1:]}",
                              hint="set baseline to 'mean', 'zero' or a number")
        return b

    @staticmethod
    def _value_fn(cfg: InteractionConfig, probabilities: bool):
        from governance_plugins.interaction.variables import output_value

        def value(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
            out = np.empty(len(outputs), dtype=np.float64)
            for t in np.unique(targets):
                rows = targets == t
                out[rows] = output_value(outputs[rows], int(t), kind=cfg.output, probabilities=probabilities)
            return out

        return value

    @staticmethod
    def _target_rule(cfg: InteractionConfig, data: Any) -> str:
        if cfg.target == "label" or (cfg.target == "auto" and data.y is not None):
            return "the true label" + (" (only samples every model classifies correctly)" if cfg.correct_only else "")
        return "the reviewed model's predicted class on the unmasked sample (kept fixed for every model and mask)"

    def _choose_samples(self, ctx: MethodContext, cfg: InteractionConfig, models: list[Any], predicts: list[Any],
                        X: np.ndarray, data: Any):
        """Draw samples in a seeded random order, in small blocks, until ``n_samples`` qualify (every model
        classifies them correctly when the target is the label), looking at no more than
        max(200, 20·n_samples) samples. Returns (rows, targets, output-is-probability per model, notes)."""
        from governance_plugins.interaction.variables import detect_probabilities, predicted_class

        notes: list[str] = []
        n_out = models[0].n_outputs
        use_labels = cfg.target == "label" or (cfg.target == "auto" and data.y is not None)
        if use_labels and data.y is None:
            raise MethodError("target='label' needs labels in the dataset", hint="pass --data with a 'y' array, or "
                              "set target to 'predicted'")
        labels = None
        if use_labels:
            labels = np.asarray(data.y).astype(np.int64).reshape(-1)
            limit = 2 if n_out == 1 else n_out
            if labels.min() < 0 or labels.max() >= limit:
                raise MethodError(f"labels range over {int(labels.min())}..{int(labels.max())}, but the model has "
                                  f"{n_out} output(s)", hint="use class indices as labels, or target='predicted'")
        order = ctx.rng.permutation(len(X))[: min(len(X), max(200, 20 * cfg.n_samples))]
        filtering = use_labels and cfg.correct_only
        block = max(cfg.n_samples, 8) if filtering else cfg.n_samples
        seen_rows, seen_targets, seen_ok, probs = [], [], [], None
        for start in range(0, len(order), block):
            rows = order[start : start + block]
            outs = [np.asarray(p(X[rows])) for p in predicts]
            if probs is None:
                probs = [detect_probabilities(o) for o in outs]
            preds = [predicted_class(o) for o in outs]
            targets = labels[rows] if use_labels else preds[0]
            ok = np.logical_and.reduce([p == targets for p in preds]) if filtering else np.ones(len(rows), bool)
            seen_rows.append(rows)
            seen_targets.append(targets)
            seen_ok.append(ok)
            if sum(int(o.sum()) for o in seen_ok) >= cfg.n_samples:
                break
        rows, targets, ok = np.concatenate(seen_rows), np.concatenate(seen_targets), np.concatenate(seen_ok)
        for i, pr in enumerate(probs or []):
            if pr and cfg.output == "log_odds":
                notes.append(f"{models[i].info.display_name} outputs probabilities, not logits: log-odds are "
                             "computed from them, clipped at 1e-12 (they saturate where logits would not).")
        if filtering and not ok.any():
            notes.append("No sample is classified correctly by every model; samples were drawn regardless.")
            ok[:] = True
        elif filtering and ok.sum() < cfg.n_samples:
            notes.append(f"Only {int(ok.sum())} of the {len(rows)} drawn samples are classified correctly by "
                         f"every model; {int(ok.sum())} samples were explained instead of {cfg.n_samples}.")
        idx = np.flatnonzero(ok)[: cfg.n_samples]
        return rows[idx], targets[idx], probs or [False] * len(models), notes

    def _choose_variables(self, cfg: InteractionConfig, data: Any, Xs: np.ndarray, targets: np.ndarray,
                          baseline: np.ndarray, predicts: list[Any], values: list[Any]):
        from governance_plugins.interaction.variables import (
            VariableSet,
            feature_candidates,
            occlusion_scores,
            patch_candidates,
            resolve_named,
        )

        image = data.modality == "image"
        if image:
            if cfg.features:
                raise MethodError("'features' names tabular features, but this dataset holds images",
                                  hint="use 'patches' (names like r0c1 in the grid) or leave both unset")
            cands = patch_candidates(Xs.shape[1:], cfg.grid)
            named = cfg.patches
        else:
            if cfg.patches:
                raise MethodError("'patches' applies to image data, but this dataset is tabular",
                                  hint="use 'features' with feature names, or leave both unset")
            cands = feature_candidates(int(np.prod(Xs.shape[1:])), data.feature_names)
            named = cfg.features
        what = "patches" if image else "features"
        n_cand = len(cands.names)
        info: dict[str, Any] = {"kind": cands.kind, "candidates": n_cand, "grid": list(cands.grid) if cands.grid else None}
        if named:
            idx = resolve_named(named, cands, what)
            if len(idx) > 20:
                raise MethodError(f"{len(idx)} named {what} means 2^{len(idx)} masked inputs per sample",
                                  hint="name at most 20 (the paper uses 8-10)")
            sets = [idx] * len(Xs)
            rule = f"{len(idx)} {what} named in the configuration"
            scores = None
        elif n_cand <= cfg.n_variables:
            sets = [list(range(n_cand))] * len(Xs)
            rule = f"all {n_cand} {what}"
            scores = None
        else:
            occ = np.mean([occlusion_scores(predicts[i], Xs, baseline, cands,
                                            lambda out, rows, f=values[i]: f(out, targets[rows]))
                           for i in range(len(predicts))], axis=0)  # (S, C)
            if image:
                sets = [sorted(np.argsort(-row, kind="stable")[: cfg.n_variables].tolist()) for row in occ]
                rule = (f"per sample, the {cfg.n_variables} of {n_cand} grid patches whose masking moves v most "
                        "(mean |occlusion| over the models)")
            else:
                mean = occ.mean(axis=0)
                top = sorted(np.argsort(-mean, kind="stable")[: cfg.n_variables].tolist())
                sets = [top] * len(Xs)
                rule = (f"the {cfg.n_variables} of {n_cand} features whose masking moves v most (mean |occlusion| "
                        f"over {len(Xs)} samples and the models); the others stay at their values")
            scores = occ
        var_sets = []
        for s, idx in enumerate(sets):
            var_sets.append(VariableSet(names=[cands.names[c] for c in idx], groups=[cands.groups[c] for c in idx],
                                        candidate_index=list(idx), rule=rule,
                                        scores=[] if scores is None else [float(scores[s][c]) for c in idx]))
        info["rule"] = rule
        info["names"] = var_sets[0].names if all(v.names == var_sets[0].names for v in var_sets) else None
        info["per_sample"] = info["names"] is None
        return var_sets, info

    @staticmethod
    def _solver_warnings(records: list[Any], labels: list[str]) -> list[str]:
        out = []
        joints = [r.ext.joint for r in records]
        inexact = [j for j in joints if not j.exact]
        if inexact:
            gaps = [j.gap for j in inexact if j.gap is not None]
            solver = inexact[0].solver
            text = (f"The joint problem was solved by '{solver}', which is not exact: mean loss "
                    f"{np.mean([j.loss for j in inexact]):.4g} vs {np.mean([j.loss_gamma0 for j in inexact]):.4g} "
                    "at the 50/50 split")
            if gaps:
                text += (f", {100 * float(np.mean(gaps)):.1f} % above the certified lower bound max_i L4*_i + "
                         "α·Σ_i L4*_i (a loose bound when the models differ: even the exact optimum sits above it)")
            out.append(text + ".")
        stuck = [j for j in joints if not j.exact and j.loss_gamma0 > 0 and j.improvement < 0.05]
        if stuck:
            out.append(f"In {len(stuck)} of {len(joints)} samples the inexact solver lowered the loss by less than 5 % "
                       "from the trivial 50/50 AND/OR split (γ = 0): the split stayed near 50/50 and the "
                       "interactions are not sparse (spec §2.9.4); the exact solver='lp' avoids this.")
        fallbacks = {j.message for j in joints if "LP failed" in j.message}
        out += sorted(fallbacks)
        return out

    @staticmethod
    def _findings(details: dict[str, Any], labels: list[str]) -> list[str]:
        def fmt(p: dict[str, Any]) -> str:
            return f"{p['pattern']} (" + " / ".join(f"{s:+.2f}" for s in p["strengths"]) + ")"

        out = []
        if len(labels) == 1:
            for p in details["top_patterns"][:3]:
                out.append(f"Strong interaction: {fmt(p)}")
            return out
        for key, text in (("shared", "Shared by all models"), ("gained", f"Gained by {labels[0]}"),
                          ("lost", f"Lost by {labels[0]} (present in a peer)")):
            items = details.get(key) or []
            if items:
                out.append(f"{text}: " + "; ".join(f"{fmt(p)} in {p['samples']} sample(s)" for p in items[:3]))
        return out

    @staticmethod
    def _summary_text(metrics: dict[str, float], labels: list[str], n: int, n_samples: int, records: list[Any]) -> str:
        exact = all(r.ext.joint.exact for r in records)
        loss_text = (f"{'exact optimum' if exact else 'approximate solution'}: mean loss {metrics['loss']:.3g} vs "
                     f"{metrics['loss_gamma0']:.3g} at the 50/50 split")
        if len(labels) == 1:
            return (f"{labels[0]} was explained by AND/OR interactions among {n} input variables on {n_samples} "
                    f"sample(s), {metrics['salient_count']:.1f} salient patterns per sample ({loss_text}); no peer "
                    "models, so nothing was compared.")
        peers = ", ".join(labels[1:])
        return (f"Across {n_samples} sample(s) and {n} input variables, {labels[0]} shares "
                f"{100 * metrics['shared_fraction']:.0f} % of its salient AND/OR patterns with all peers ({peers}); "
                f"per sample {metrics['gained_count']:.1f} pattern(s) are new in {labels[0]} and "
                f"{metrics['lost_count']:.1f} from the peers are gone; top-{int(metrics['top_k'])} IoU "
                f"AND {metrics['iou_and_topk']:.2f}, OR {metrics['iou_or_topk']:.2f} ({loss_text}).")
