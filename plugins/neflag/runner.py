"""One NeFLAG run: resolve the configuration against the model and data, explain with NeFLAG and the
baselines, measure all of them with governance.quality, and assemble the Explanation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from governance import quality
from governance.errors import MethodError
from governance import Explanation, MethodContext
from governance_plugins.neflag import flux
from governance_plugins.neflag.attributions import Attributor
from governance_plugins.neflag.figures import LABELS, attribution_maps, deletion_insertion_curves, feature_bars
from governance_plugins.neflag.method import FORM_LABELS, SAMPLER_LABELS, check_finite_inputs, timed
from governance_plugins.neflag.scoring import detect_output_kind, to_logits

#: input elements per forward/backward batch when ``max_batch`` is not set (about 32 MiB of float32 points).
_ELEMENTS_PER_BATCH = 1 << 23

METRIC_PREFIX = {"neflag": "", "integrated_gradients": "ig_", "saliency": "saliency_"}


@dataclass
class Prepared:
    """A run's resolved inputs and attribution functions."""

    data: Any
    X: np.ndarray
    targets: np.ndarray
    kind: str
    settings: flux.FluxSettings
    scale: np.ndarray | None
    image_like: bool
    attributor: Attributor


class NeflagRun:
    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.model = ctx.model
        self.warnings: list[str] = []

    # ------------------------------------------------------------------------------------ resolution
    def _targets(self, raw: np.ndarray, data: Any, kind: str) -> np.ndarray:
        import torch

        n_classes = 2 if kind == "binary_logit" else int(np.asarray(raw).reshape(len(raw), -1).shape[1])
        t = self.cfg.target
        if t == "predicted":
            logits = to_logits(torch.from_numpy(np.asarray(raw, dtype=np.float64)), kind)
            return logits.argmax(dim=1).numpy().astype(np.int64)
        if t == "label":
            if data.y is None:
                raise MethodError("target='label' needs labels, but the dataset has none",
                                  hint="pass data with labels, or use target='predicted' or a class index")
            y = np.asarray(data.y).astype(np.int64).reshape(-1)
            if y.min() < 0 or y.max() >= n_classes:
                raise MethodError(f"labels range over {y.min()}..{y.max()} but the model has {n_classes} classes",
                                  hint="use target='predicted' or check that the labels are class indices")
            return y
        if not 0 <= int(t) < n_classes:
            raise MethodError(f"target class {t} does not exist: the model has {n_classes} classes (0..{n_classes - 1})",
                              hint="set neflag.target to a class index in range, or 'predicted'")
        return np.full(len(raw), int(t), dtype=np.int64)

    def _form_and_sampler(self, d: int, image_like: bool) -> tuple[str, str]:
        """Spec §A2.5: form B with S3 for images, form A with S2 for tabular inputs (both [R])."""
        cfg = self.cfg
        big = image_like or d > 1024
        form = cfg.form if cfg.form != "auto" else ("B" if big else "A")
        if cfg.sampler != "auto":
            sampler = cfg.sampler
        else:
            sampler = "rejection" if big else "orthogonal_antithetic"
        if cfg.derivative == "finite_difference":
            if form == "B" or sampler == "descent":
                raise MethodError(
                    f"derivative='finite_difference' gives only the radial derivative, which form {form} with the "
                    f"{sampler} sampler cannot use",
                    hint="set form='A' and a sampler other than 'descent', or derivative='gradient'")
            if cfg.input_range is not None:
                raise MethodError("input_range (clipping) is not supported with derivative='finite_difference'",
                                  hint="drop input_range or use derivative='gradient'")
        return form, sampler

    def _scale(self, image_like: bool, sample_shape: tuple[int, ...]) -> np.ndarray | None:
        mode = self.cfg.feature_scale
        if mode == "none" or (mode == "auto" and image_like):
            return None
        X = np.asarray(self.ctx.data.X, dtype=np.float64)
        std = np.nanstd(X, axis=0) if len(X) > 1 else np.ones(sample_shape)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return std.reshape(sample_shape)

    # ------------------------------------------------------------------------------------------- run
    def prepare(self) -> Prepared:
        """Select and check the inputs, read the model's outputs, resolve targets, form, sampler and scale,
        and build the attribution functions. (Benchmarks call this to time the methods exactly as run.)"""
        ctx, cfg, model = self.ctx, self.cfg, self.model
        data = ctx.data.subset(cfg.n_samples, ctx.rng)
        X = model.check_input(data.X)
        check_finite_inputs(X)
        module = model.torch_module()
        if module is None:
            raise MethodError(f"NeFLAG needs gradients, but {model.torch_unavailable_reason or 'the model has no torch view'}",
                              hint="use a PyTorch model or an ONNX model whose operators the torch view supports")
        sample_shape = tuple(X.shape[1:])
        d = int(np.prod(sample_shape))
        image_like = ctx.data.modality == "image" or X.ndim >= 4
        ctx.progress(0.02, "scoring the inputs")
        raw = model.predict(X)
        if not np.all(np.isfinite(raw)):
            raise MethodError("the model returns NaN or infinite outputs on the selected inputs",
                              hint="check the model and the input preprocessing; NeFLAG needs finite class scores")
        kind = detect_output_kind(raw)
        if kind == "probabilities":
            self.warnings.append("the model's outputs are probabilities (each row sums to one); "
                                 "they were read as such, so 'logit' means log-probability here")
        targets = self._targets(raw, data, kind)
        form, sampler = self._form_and_sampler(d, image_like)
        scale = self._scale(image_like, sample_shape)
        settings = flux.FluxSettings(
            form=form, sampler=sampler, epsilon=cfg.epsilon, n_points=cfg.n_points, n_directions=cfg.n_directions,
            m=cfg.m, antipodes=cfg.antipodes, step_size=cfg.step_size, derivative=cfg.derivative, clip=cfg.input_range,
            max_batch=cfg.max_batch or max(1, min(1024, _ELEMENTS_PER_BATCH // d)))
        attributor = Attributor(module=module, kind=kind, output=cfg.output, settings=settings,
                                dtype=np.dtype(X.dtype), baseline=np.asarray(ctx.data.baseline, dtype=X.dtype),
                                scale=scale, ig_steps=cfg.ig_steps, predict=model.predict, seed=ctx.seed)
        return Prepared(data, X, targets, kind, settings, scale, image_like, attributor)

    def run(self) -> Explanation:
        ctx, cfg = self.ctx, self.cfg
        p = self.prepare()
        data, X, targets, kind, settings, scale, image_like, attributor = (
            p.data, p.X, p.targets, p.kind, p.settings, p.scale, p.image_like, p.attributor)

        ctx.progress(0.05, "NeFLAG attributions")
        try:
            attrs: dict[str, np.ndarray] = {}
            seconds: dict[str, float] = {}
            attrs["neflag"], seconds["neflag"] = timed(attributor.neflag, X, targets)
            diag = attributor.last["result"]
            if cfg.baselines:
                import captum.attr  # noqa: F401  (its import, ~2 s, is not the baselines' cost per input)
            for i, b in enumerate(cfg.baselines):
                ctx.progress(0.25 + 0.1 * i, f"{LABELS[b]} attributions")
                attrs[b], seconds[b] = timed(attributor.run, b, X, targets)
            metrics, extra = self._quality(attributor, X, targets, attrs, scale, kind, image_like)
        except flux.NonFiniteError as exc:
            raise MethodError(str(exc), hint="the model is not finite around these inputs: check for overflow "
                              "(try output='log_prob' or a smaller epsilon) or unsupported input ranges") from exc

        ctx.progress(0.9, "figures")
        return self._assemble(data, X, targets, attrs, seconds, diag, metrics, extra, settings, kind, scale,
                              image_like, attributor)

    # --------------------------------------------------------------------------------------- quality
    def _quality(self, attributor: Attributor, X: np.ndarray, targets: np.ndarray, attrs: dict[str, np.ndarray],
                 scale: np.ndarray | None, kind: str, image_like: bool) -> tuple[dict[str, float], dict[str, Any]]:
        ctx, qc, model = self.ctx, self.cfg.quality, self.model
        methods = list(attrs)
        metrics: dict[str, float] = {}
        extra: dict[str, Any] = {"curves": {}, "aucs": {}, "layers": {}}
        outputs = "probabilities" if kind == "probabilities" else "logits"
        channel_axis = 0 if image_like and X.ndim == 4 else None
        if qc.deletion_insertion:
            for i, m in enumerate(methods):
                ctx.progress(0.45 + 0.1 * i, f"deletion/insertion for {LABELS[m]}")
                res = quality.deletion_insertion(model.predict, X, attrs[m], np.asarray(ctx.data.baseline), targets,
                                                 steps=qc.steps, channel_axis=channel_axis, outputs=outputs,
                                                 rng=np.random.default_rng(ctx.seed))
                p = METRIC_PREFIX[m]
                metrics[f"{p}deletion_auc"] = res.mean_deletion_auc
                metrics[f"{p}insertion_auc"] = res.mean_insertion_auc
                metrics[f"{p}difference_auc"] = res.mean_difference_auc
                extra["curves"][m] = {"deletion": res.deletion, "insertion": res.insertion}
                extra["aucs"][m] = {"deletion": res.mean_deletion_auc, "insertion": res.mean_insertion_auc}
                extra["fractions"] = res.fractions
        k = min(qc.robustness_inputs, len(X))
        Xr, tr = X[:k], targets[:k]
        if qc.max_sensitivity:
            ctx.progress(0.7, "max-sensitivity")
            for m in methods:
                sens = quality.max_sensitivity(
                    lambda Xp, t, m=m: attributor.run(m, Xp, t, stream=1000), Xr, tr, radius=qc.sensitivity_radius,
                    n_samples=qc.sensitivity_samples, rng=np.random.default_rng(ctx.seed + 1),
                    scale=scale, attributions=attrs[m][:k])
                metrics[f"{METRIC_PREFIX[m]}max_sensitivity"] = float(np.mean(sens))
        if qc.randomisation:
            ctx.progress(0.78, "parameter randomisation check")
            for m in methods:
                rr = quality.randomisation_sanity_check(
                    attributor.module, lambda mod, Xq, t, m=m: attributor.run(m, Xq, t, module=mod), Xr, tr,
                    mode=qc.randomisation_mode, seed=ctx.seed, attributions=attrs[m][:k])
                metrics[f"{METRIC_PREFIX[m]}randomisation_spearman"] = rr.mean_spearman
                metrics[f"{METRIC_PREFIX[m]}randomisation_spearman_abs"] = rr.mean_spearman_abs
                if rr.layers:
                    extra["layers"][m] = rr.layers
        if qc.seed_stability:
            ctx.progress(0.85, "seed stability")
            main = attrs["neflag"][:k]

            def seeded(Xs: np.ndarray, t: np.ndarray, s: int) -> np.ndarray:
                return main if s == 0 else attributor.neflag(Xs, t, stream=s)

            st = quality.seed_stability(seeded, Xr, tr, list(range(qc.stability_seeds)))
            metrics["seed_stability"] = st.mean_spearman
            metrics["seed_stability_pearson"] = st.mean_pearson
        return metrics, extra

    # -------------------------------------------------------------------------------------- assembly
    def _assemble(self, data, X, targets, attrs, seconds, diag: flux.FluxResult, metrics, extra, settings, kind,
                  scale, image_like, attributor: Attributor) -> Explanation:
        ctx, cfg = self.ctx, self.cfg
        n = len(X)
        methods = list(attrs)
        for m in methods:
            metrics[f"{METRIC_PREFIX[m]}seconds_per_input"] = seconds[m] / n
        n_neg = diag.n_negative.cpu().numpy()
        zero_rows = int(np.sum(~np.any(attrs["neflag"].reshape(n, -1) != 0, axis=1)))
        metrics["negative_points_mean"] = float(n_neg.mean())
        metrics["evaluations_per_input"] = float(diag.n_evaluations.double().mean())
        metrics["zero_attribution_fraction"] = zero_rows / n
        metrics["n_inputs"] = float(n)
        if diag.first_draw_acceptance is not None:
            metrics["first_draw_acceptance"] = float(diag.first_draw_acceptance)
        if settings.form == "B" and settings.derivative == "gradient":
            gap = self._completeness_gap(attributor, X, targets, attrs["neflag"], diag)
            if gap is not None:
                metrics["completeness_gap"] = gap
        if zero_rows:
            self.warnings.append(
                f"{zero_rows} of {n} inputs had no negative-flux point on the sphere (zero or saturated gradients): "
                "their NeFLAG attribution is all zeros" + ("; output='log_prob' or 'logit' avoids softmax saturation"
                                                            if cfg.output == "prob" else ""))
        if diag.n_clipped:
            self.warnings.append(f"{diag.n_clipped} sphere points were clipped into input_range {cfg.input_range}; "
                                 "their normals were recomputed from the clipped displacement")

        arrays = {"inputs": X, "targets": targets, "negative_points": n_neg.astype(np.int64)}
        arrays.update({m: a.astype(np.float32) for m, a in attrs.items()})
        if "fractions" in extra:
            arrays["fractions"] = extra["fractions"]
            for m, c in extra["curves"].items():
                arrays[f"deletion_{m}"] = c["deletion"]
                arrays[f"insertion_{m}"] = c["insertion"]

        figures = {}
        if image_like and X.ndim >= 3:
            fig = attribution_maps(X, attrs, targets, data.class_names)
            figures["attribution_maps"] = ctx.save_figure(fig, "attribution_maps")
        else:
            names = data.feature_names or [f"x{i}" for i in range(X.reshape(n, -1).shape[1])]
            fig = feature_bars({m: a.reshape(n, -1) for m, a in attrs.items()}, names)
            figures["feature_importance"] = ctx.save_figure(fig, "feature_importance")
        if extra["curves"]:
            unit = "pixels" if image_like and X.ndim == 4 else "features"
            fig = deletion_insertion_curves(extra["fractions"], extra["curves"], extra["aucs"], unit)
            figures["deletion_insertion"] = ctx.save_figure(fig, "deletion_insertion")

        tables = {"comparison": self._comparison_rows(methods, metrics)}
        if not (image_like and X.ndim >= 3):
            tables["top_features"] = self._top_features(attrs, data, n)
        if extra["layers"]:
            tables["randomisation_layers"] = [
                {"method": LABELS[m], "layer": row["layer"], "spearman": row["spearman"]}
                for m, rows in extra["layers"].items() for row in rows]

        variant = f"NeFLAG-{settings.n_points}" if settings.sampler == "rejection" else "NeFLAG"
        details = {
            "variant": variant,
            "form": settings.form, "form_label": FORM_LABELS[settings.form],
            "sampler": settings.sampler, "sampler_label": SAMPLER_LABELS[settings.sampler],
            "form_auto": cfg.form == "auto", "sampler_auto": cfg.sampler == "auto",
            "epsilon": settings.epsilon, "n_points": settings.n_points, "m": settings.resolved_m(),
            "antipodes": settings.antipodes,
            "n_directions": settings.resolved_directions(int(np.prod(X.shape[1:]))),
            "output": cfg.output, "output_kind": kind, "derivative": settings.derivative,
            "units": "standardised (z) units: x divided by each feature's standard deviation" if scale is not None
                     else "model-input units",
            "modality": ctx.data.modality, "n_inputs": n, "baselines": [LABELS[b] for b in cfg.baselines],
            "ig_steps": cfg.ig_steps, "first_draw_acceptance": diag.first_draw_acceptance,
            "clipped_points": diag.n_clipped, "quality": cfg.quality.model_dump(),
            "methods": [{"key": m, "label": LABELS[m], "prefix": METRIC_PREFIX[m]} for m in methods],
            "target": cfg.target if isinstance(cfg.target, str) else int(cfg.target),
            "target_counts": {str(c): int(v) for c, v in zip(*np.unique(targets, return_counts=True))},
        }
        findings = self._findings(metrics, methods)
        summary = self._summary(variant, settings, n, metrics, methods)
        return Explanation(method="neflag", summary=summary, metrics={k: float(v) for k, v in metrics.items()},
                           arrays=arrays, figures=figures, tables=tables, details=details, findings=findings,
                           warnings=self.warnings)

    @staticmethod
    def _completeness_gap(attributor, X, targets, A, diag: flux.FluxResult) -> float | None:
        """P3: Σ_i A_B,i ≈ f(x) − mean f(s) over negative-flux points. Median relative gap over inputs."""
        fx = attributor.score_at(X, targets)
        mean_s = diag.mean_negative_score.cpu().numpy()
        drop = fx - mean_s
        ok = np.isfinite(drop) & (np.abs(drop) > 1e-12)
        if not ok.any():
            return None
        total = A.reshape(len(A), -1).astype(np.float64).sum(axis=1)
        return float(np.median(np.abs(total[ok] - drop[ok]) / np.abs(drop[ok])))

    @staticmethod
    def _comparison_rows(methods: list[str], metrics: dict[str, float]) -> list[dict[str, Any]]:
        rows = []
        for m in methods:
            p = METRIC_PREFIX[m]
            row = {"method": LABELS[m]}
            for key in ("deletion_auc", "insertion_auc", "difference_auc", "max_sensitivity",
                        "randomisation_spearman", "seconds_per_input"):
                row[key] = metrics.get(p + key)
            row["seed_stability"] = metrics.get("seed_stability") if m == "neflag" else None  # deterministic
            rows.append(row)
        return rows

    @staticmethod
    def _top_features(attrs: dict[str, np.ndarray], data: Any, n: int, top: int = 10) -> list[dict[str, Any]]:
        mean_abs = {m: np.abs(a.reshape(n, -1)).mean(axis=0) for m, a in attrs.items()}
        signed = attrs["neflag"].reshape(n, -1).mean(axis=0)
        names = data.feature_names or [f"x{i}" for i in range(len(signed))]
        order = np.argsort(-mean_abs["neflag"], kind="stable")[:top]
        return [{"feature": str(names[i]), "neflag_mean_abs": float(mean_abs["neflag"][i]),
                 "neflag_mean": float(signed[i]),
                 **{f"{m}_mean_abs": float(v[i]) for m, v in mean_abs.items() if m != "neflag"}} for i in order]

    @staticmethod
    def _findings(metrics: dict[str, float], methods: list[str]) -> list[str]:
        out = []
        baselines = [m for m in methods if m != "neflag"]
        if "deletion_auc" in metrics:
            if baselines:
                dels = ", ".join(f"{metrics[METRIC_PREFIX[b] + 'deletion_auc']:.3f} for {LABELS[b]}" for b in baselines)
                ins = ", ".join(f"{metrics[METRIC_PREFIX[b] + 'insertion_auc']:.3f} for {LABELS[b]}" for b in baselines)
                best = min(methods, key=lambda m: metrics[METRIC_PREFIX[m] + "deletion_auc"])
                best_i = max(methods, key=lambda m: metrics[METRIC_PREFIX[m] + "insertion_auc"])
                out.append(f"Deletion AUC (lower is better): NeFLAG {metrics['deletion_auc']:.3f}, against {dels}; "
                           f"removing the features {LABELS[best]} ranks first lowers the class probability fastest.")
                out.append(f"Insertion AUC (higher is better): NeFLAG {metrics['insertion_auc']:.3f}, against {ins}; "
                           f"best: {LABELS[best_i]}.")
            else:
                out.append(f"Deletion AUC {metrics['deletion_auc']:.3f} (lower is better) and insertion AUC "
                           f"{metrics['insertion_auc']:.3f} (higher is better); no baseline was computed to compare with.")
        rho = metrics.get("randomisation_spearman")
        if rho is not None and np.isfinite(rho):
            verdict = ("depend strongly on the learned weights (the sanity check passes)" if abs(rho) < 0.3 else
                       "depend only partly on the learned weights" if abs(rho) < 0.7 else
                       "barely change when the weights are randomised (the sanity check fails)")
            out.append(f"With the model's weights randomised, NeFLAG's attributions keep a rank correlation of "
                       f"{rho:.2f} with the trained model's: they {verdict}.")
        st = metrics.get("seed_stability")
        if st is not None and np.isfinite(st):
            out.append(f"Re-running NeFLAG with other seeds gives attributions with a mean rank correlation of "
                       f"{st:.2f} with each other ({'stable' if st >= 0.8 else 'noticeably seed-dependent'}).")
        if "max_sensitivity" in metrics:
            vals = ", ".join(f"{LABELS[m]} {metrics[METRIC_PREFIX[m] + 'max_sensitivity']:.3f}" for m in methods
                             if METRIC_PREFIX[m] + "max_sensitivity" in metrics)
            out.append(f"Max-sensitivity (relative change under small input noise, lower is better): {vals}.")
        return out

    @staticmethod
    def _summary(variant, settings, n, metrics, methods) -> str:
        s = (f"{variant} ({'form ' + settings.form}, ε = {settings.epsilon:g}) explained {n} input"
             f"{'s' if n != 1 else ''} at {metrics['seconds_per_input']:.3g} s each.")
        if "deletion_auc" in metrics:
            parts = [f"{LABELS[m]} {metrics[METRIC_PREFIX[m] + 'deletion_auc']:.3f}" for m in methods]
            s += " Deletion AUC (lower is better): " + ", ".join(parts) + "."
        return s
