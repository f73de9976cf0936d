"""The ``bort`` method: a bounded-orthogonality audit of a model's weights, with reconstruction evidence.

1. Every Linear/Conv weight (torch or ONNX) is audited against Bort's constraint (spec B6.1): the
   scale-free and absolute distances from bounded-orthogonal, the condition number, row-norm bounds,
   next to the same metrics for random weights of the same shapes.
2. Peers (other versions of the model) are audited the same way and compared layer by layer.
3. For torch ``nn.Module`` models that are near bounded-orthogonal, tagged as Bort-trained, or when asked,
   the reconstruction and backtracking-saliency evidence of spec B3 (see ``reconstruction.py``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from governance.errors import GovernanceError, MethodError
from governance import Explanation, Method, MethodConfig, MethodContext, Requirement
from governance_plugins.bort.constants import TAG_GAMMA, TAG_OPTIMIZER


class BortConfig(MethodConfig):
    #: Bort's target amplitude c (squared row norm / singular value) for D_abs and the row bounds
    amplitude: float = Field(1.0, gt=0)
    #: a row is within the bound when ‖w_i‖² <= (1 + row_tolerance)·c (uncalibrated; spec B6.1 caveat)
    row_tolerance: float = Field(0.1, ge=0)
    #: also audit random weights of the same shapes (torch's default initialisation) as context
    init_reference: bool = True
    #: "auto": run the reconstruction evidence when the model is Bort-tagged or near bounded-orthogonal
    reconstruction: Literal["auto", "always", "never"] = "auto"
    #: "auto" counts a model as near bounded-orthogonal when its weighted mean D_orth is at most this
    near_orthogonal_threshold: float = Field(0.25, gt=0)
    #: samples of the dataset used for the reconstruction evidence
    n_samples: int = Field(64, ge=2, le=4096)
    #: module whose activations are traced back for saliency (default: the input of the last Linear/Conv)
    saliency_layer: str | None = None
    #: class score for deletion/insertion: softmax probability (default) or raw logit
    saliency_score: Literal["softmax", "logit"] = "softmax"
    #: pixels per deletion/insertion step (default as in the authors' benchmark: 10 for 28-32 px images)
    deletion_step: int | None = Field(None, ge=1)
    #: images scored by deletion/insertion (two forward passes per step and image)
    deletion_samples: int = Field(16, ge=1, le=1024)
    #: layers shown in the per-layer figure (the worst ones when there are more)
    max_plot_layers: int = Field(48, ge=1)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


class BortAudit(Method):
    name = "bort"
    version = "1.0.0"
    title = "Bounded-orthogonality audit (Bort)"
    description = (
        "Measures how far every linear and convolution layer is from Bort's bounded-orthogonal constraint "
        "(orthogonal rows of bounded norm), the property that makes a layer's units comparable and the layer "
        "invertible by its transpose; compares model versions; and, for models close to the constraint, "
        "reconstructs inputs from hidden layers and traces activations back to the input as saliency."
    )
    reference = ("B. Zhang, W. Zheng, J. Zhou, J. Lu. Bort: Towards Explainable Neural Networks with Bounded "
                 "Orthogonal Constraint. ICLR 2023. arXiv:2212.09062")
    requires = frozenset({Requirement.PARAMETERS, Requirement.PEERS})
    Config = BortConfig
    report_template = "governance_plugins.bort:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        why = super().can_explain(model=model, data=data)
        if why:
            return why
        if not any(np.asarray(a).ndim >= 2 for a in model.parameters().values()):
            return "the model has no weight matrices (no tensor with 2 or more dimensions) to audit"
        return None

    # ------------------------------------------------------------------------------------------ audit
    @staticmethod
    def _audit_model(model: Any, cfg: BortConfig, progress: Any = None) -> tuple[list, list, str, list]:
        from governance_plugins.bort.audit import audit_layers
        from governance_plugins.bort.layers import extract_layers, model_roles

        roles, source = model_roles(model)
        layers, skipped = extract_layers(model.parameters(), roles or None)
        audits = audit_layers(layers, amplitude=cfg.amplitude, row_tolerance=cfg.row_tolerance, progress=progress)
        return layers, audits, source if roles else "tensor shapes", skipped

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        from governance_plugins.bort import audit as A
        from governance_plugins.bort import plots

        cfg: BortConfig = ctx.config  # type: ignore[assignment]
        model = ctx.model
        layers, audits, source, skipped = self._audit_model(model, cfg, lambda f: ctx.progress(0.4 * f, "auditing weights"))
        if not audits:
            raise MethodError(
                f"{model.info.display_name} has no linear or convolution weights to audit"
                + (f" (skipped: {', '.join(s['name'] for s in skipped[:5])})" if skipped else ""),
                hint="the Bort audit applies to models built from Linear/Conv layers (or ONNX Gemm/MatMul/Conv)")
        summary = A.summarize(audits)
        metrics: dict[str, Any] = dict(summary)
        warnings: list[str] = []
        findings: list[str] = []
        details: dict[str, Any] = {"roles_from": source, "amplitude": cfg.amplitude, "row_tolerance": cfg.row_tolerance,
                                   "runtime": model.runtime}
        if source == "tensor shapes":
            warnings.append("Layer kinds were inferred from tensor shapes (2-D = linear, 3-5-D = convolution): "
                            "embedding tables or other matrices may be audited as layers.")
        if model.runtime == "onnxruntime":
            warnings.append("Weights are audited as stored in the ONNX graph. Exporters usually fold BatchNorm into "
                            "the preceding convolution, so those layers differ from the raw torch weights that Bort "
                            "constrains.")

        # random-initialisation context
        init = None
        if cfg.init_reference:
            init = A.init_reference(layers, seed=ctx.seed, amplitude=cfg.amplitude)
            isum = A.summarize(init)
            metrics["d_orth_init_mean"] = isum["d_orth_mean"]
            if "d_orth_hidden_mean" in isum:
                metrics["d_orth_init_hidden_mean"] = isum["d_orth_hidden_mean"]
            metrics["kappa_init_median"] = isum["kappa_median"]
            if isum["d_orth_mean"] > 0:
                metrics["d_orth_vs_init"] = summary["d_orth_mean"] / isum["d_orth_mean"]
        ctx.progress(0.45, "comparing with peers")

        # per-layer table
        rows = []
        for i, a in enumerate(audits):
            r = a.row()
            rows.append({"layer": r["name"], "kind": r["kind"], "shape": r["shape"], "form": r["form"],
                         "d_orth": a.d_orth, "d_orth_init": init[i].d_orth if init else None, "d_abs": a.d_abs,
                         "kappa": a.kappa, "row_norm_min": a.row_norm_min, "row_norm_max": a.row_norm_max,
                         "row_dev_max": a.row_dev_max, "within_bounds": a.within_bounds, "n_params": a.n_params})
        tables: dict[str, list[dict[str, Any]]] = {"layers": rows}
        if skipped:
            tables["skipped"] = skipped

        # peers
        peer_markers: list[tuple[str, dict[str, float]]] = []
        comparison: list[dict[str, Any]] = []
        peer_info: list[dict[str, Any]] = []
        for peer in ctx.peers:
            label = peer.info.display_name
            try:
                _pl, paudits, _src, _sk = self._audit_model(peer, cfg)
            except Exception as exc:  # a peer that cannot be audited is reported, not fatal
                peer_info.append({"label": label, "error": f"{type(exc).__name__}: {exc}"})
                continue
            prow, how = A.comparison_rows(audits, paudits, label)
            psum = A.summarize(paudits) if paudits else {}
            peer_info.append({"label": label, "matched_by": how, "n_matched": len(prow), "n_layers": len(paudits),
                              "d_orth_mean": psum.get("d_orth_mean"), "d_abs_mean": psum.get("d_abs_mean"),
                              "kappa_median": psum.get("kappa_median")})
            comparison += prow
            peer_markers.append((label, {r["layer"]: r["d_orth_peer"] for r in prow}))
            if prow and "peer_d_orth_mean" not in metrics:
                metrics["peer_d_orth_mean"] = psum.get("d_orth_mean")
                metrics["d_orth_mean_delta"] = summary["d_orth_mean"] - psum.get("d_orth_mean", math.nan)
                biggest = max(prow, key=lambda r: abs(r["d_orth_delta"]) if math.isfinite(r["d_orth_delta"]) else -1)
                findings.append(
                    f"Against {label}: weighted mean D_orth {psum['d_orth_mean']:.3g} → {summary['d_orth_mean']:.3g} "
                    f"({summary['d_orth_mean'] - psum['d_orth_mean']:+.3g}); largest change in '{biggest['layer']}' "
                    f"({biggest['d_orth_peer']:.3g} → {biggest['d_orth']:.3g}).")
            elif not prow:
                warnings.append(f"Peer {label}: no layer matched by name or by shape order, so it is not compared.")
        if comparison:
            tables["comparison"] = comparison
        details["peers"] = peer_info

        # findings from the audit itself
        worst = A.worst_layer(audits)
        mean = summary["d_orth_mean"]
        if init is not None:
            isum_all = A.summarize(init)
            findings[:0] = self._init_findings(summary, isum_all)
        if worst is not None:
            findings.append(f"Least orthogonal layer: '{worst.name}' ({worst.m}×{worst.n}) with D_orth = {worst.d_orth:.3g}"
                            f" and condition number {worst.kappa:.3g}.")
        out_of_bounds = [a.name for a in audits if not a.within_bounds]
        if out_of_bounds:
            findings.append(f"{len(out_of_bounds)} of {len(audits)} layers have rows with ‖w‖² above "
                            f"{1 + cfg.row_tolerance:g}·c (c = {cfg.amplitude:g}): "
                            + ", ".join(out_of_bounds[:5]) + (" …" if len(out_of_bounds) > 5 else "") + ".")
        rank_def = [a.name for a in audits if not math.isfinite(a.kappa)]
        if rank_def:
            findings.append(f"Rank-deficient (infinite condition number): {', '.join(rank_def[:5])}.")

        # reconstruction evidence
        ctx.progress(0.5, "reconstruction evidence")
        near = min(mean, summary.get("d_orth_hidden_mean", mean))
        evidences, recon, X_show = self._reconstruction(ctx, cfg, near)
        details["reconstruction"] = recon
        arrays: dict[str, np.ndarray] = {
            "d_orth": np.array([a.d_orth for a in audits]), "d_abs": np.array([a.d_abs for a in audits]),
            "kappa": np.array([a.kappa for a in audits]),
            "sigma2": np.concatenate([a.sigma2 for a in audits]),
            "sigma2_offsets": np.cumsum([0] + [len(a.sigma2) for a in audits]),
        }
        if evidences:
            main = evidences[0]
            if main.layer_rows:
                metrics["layer_rel_error_mean"] = float(np.mean([r["rel_error"] for r in main.layer_rows]))
            tables["reconstruction_layers"] = [{"model": ev.label, **r} for ev in evidences for r in ev.layer_rows]
            taps = [{"model": ev.label, **r} for ev in evidences for r in ev.tap_rows]
            if taps:
                tables["traceback"] = taps
            for ev in evidences:
                entry = {k: v for k, v in ev.auc.items() if not isinstance(v, np.ndarray)}
                recon.setdefault("models", []).append({"label": ev.label, "chain": ev.chain, "reason": ev.chain_reason,
                                                       "saliency_layer": ev.saliency_layer, **entry})
            for key in ("traced_rel_error", "traced_cosine", "deletion_auc", "insertion_auc", "deletion_auc_random",
                        "insertion_auc_random"):
                if key in main.auc:
                    metrics[key] = main.auc[key]
            if main.saliency is not None:
                arrays["saliency"] = main.saliency
                arrays["reconstruction"] = main.reconstruction
                arrays["deletion_curve"] = main.auc["deletion_curve"]
                arrays["insertion_curve"] = main.auc["insertion_curve"]
            findings += self._evidence_findings(evidences)

        # figures
        ctx.progress(0.9, "figures")
        figures = {
            "deviation": ctx.save_figure(plots.deviation_figure(audits, init, peer_markers, cfg.max_plot_layers),
                                         "bort_deviation"),
            "spectra": ctx.save_figure(plots.spectra_figure(audits), "bort_spectra"),
        }
        if evidences and any(ev.tap_rows for ev in evidences):
            figures["traceback"] = ctx.save_figure(plots.traceback_figure(evidences), "bort_traceback")
        if evidences and evidences[0].saliency is not None:
            figures["saliency"] = ctx.save_figure(plots.saliency_figure(X_show, evidences), "bort_saliency")

        details["worst_layer"] = worst.name if worst else None
        text = (f"{len(audits)} weight layers audited; parameter-weighted mean distance from bounded-orthogonal "
                f"D_orth = {mean:.3g} (0 = orthogonal rows up to scale)")
        if init is not None:
            text += f", against {metrics['d_orth_init_mean']:.3g} for random weights of the same shapes"
        text += "."
        if evidences and "traced_rel_error" in evidences[0].auc:
            text += (f" Tracing '{evidences[0].saliency_layer}' back to the input reconstructs it with relative error "
                     f"{evidences[0].auc['traced_rel_error']:.3g}.")
        return Explanation(method=self.name, summary=text, metrics=_finite(metrics), arrays=arrays, figures=figures,
                           tables=tables, details=details, findings=findings, warnings=warnings)

    # ------------------------------------------------------------------------------------------ B3
    def _reconstruction(self, ctx: MethodContext, cfg: BortConfig,
                        d_orth_mean: float) -> tuple[list, dict[str, Any], np.ndarray | None]:
        """Run the B3 evidence when it applies; returns (evidences, details, the samples shown)."""
        model = ctx.model
        recon: dict[str, Any] = {"ran": False, "mode": cfg.reconstruction}
        if cfg.reconstruction == "never":
            recon["reason"] = "switched off (reconstruction: never)"
            return [], recon, None
        module, why = _plain_module(model)
        if module is None:
            recon["reason"] = why
            if cfg.reconstruction == "always":
                raise MethodError(f"reconstruction evidence was requested, but {why}",
                                  hint="use reconstruction: auto or never for this model")
            return [], recon, None
        tagged = TAG_OPTIMIZER in (model.info.tags or {})
        if cfg.reconstruction == "auto" and not tagged and not d_orth_mean <= cfg.near_orthogonal_threshold:
            recon["reason"] = (f"the weights are not near bounded-orthogonal (weighted mean D_orth {d_orth_mean:.3g} with or "
                               f"without the last layer, above {cfg.near_orthogonal_threshold:g}) and the version is not tagged as Bort-trained; "
                               "transpose-based reconstruction is only meaningful near the constraint "
                               "(set reconstruction: always to run it anyway)")
            return [], recon, None
        recon["trigger"] = ("requested" if cfg.reconstruction == "always" else
                            f"tagged Bort-trained ({model.info.tags.get(TAG_OPTIMIZER)}, gamma "
                            f"{model.info.tags.get(TAG_GAMMA, '?')})" if tagged else
                            f"near bounded-orthogonal (D_orth {d_orth_mean:.3g} <= {cfg.near_orthogonal_threshold:g})")
        data = ctx.data
        sub = data.subset(cfg.n_samples, ctx.rng)
        try:
            X = model.check_input(sub.X)
        except GovernanceError as exc:
            recon["reason"] = f"the data does not fit the model ({str(exc).splitlines()[0]})"
            return [], recon, None
        image = data.modality == "image" and X.ndim == 4
        from governance_plugins.bort.reconstruction import gather_evidence

        seed = int(ctx.rng.integers(2**31))
        evidences = []
        targets = [(model.info.display_name, module)]
        for peer in ctx.peers:
            pm, pwhy = _plain_module(peer)
            if pm is None or tuple(peer.input_spec.sample_shape) != tuple(model.input_spec.sample_shape):
                recon.setdefault("peers_skipped", []).append(
                    {"label": peer.info.display_name, "reason": pwhy or "different input shape"})
                continue
            targets.append((peer.info.display_name, pm))
        for i, (label, mod) in enumerate(targets):
            try:
                ev = gather_evidence(mod, X, label=label, image=image, layer=cfg.saliency_layer,
                                     score=cfg.saliency_score, deletion_step=cfg.deletion_step,
                                     deletion_samples=cfg.deletion_samples,
                                     rng=np.random.default_rng(seed))
            except KeyError as exc:
                raise MethodError(f"saliency_layer {exc} is not a module of the traced chain of {label}",
                                  hint="leave saliency_layer unset, or name a module from the model's layer list") from None
            evidences.append(ev)
            ctx.progress(0.5 + 0.4 * (i + 1) / len(targets), f"reconstruction: {label}")
        recon.update({"ran": True, "n_samples": int(len(X)), "score": cfg.saliency_score, "image": image})
        if not evidences[0].chain:
            recon["traceback_unavailable"] = evidences[0].chain_reason
        return evidences, recon, X[:6]

    @staticmethod
    def _init_findings(ours: dict[str, float], init: dict[str, float]) -> list[str]:
        """Compare with random weights of the same shapes, over all layers and without the last one."""
        def verdict(a: float, b: float) -> str:
            if a < 0.5 * b:
                return "much closer to bounded-orthogonal than random weights"
            if a <= b:
                return "about as close to bounded-orthogonal as random weights, or slightly closer"
            return "further from bounded-orthogonal than random weights"

        out = [f"Weighted mean D_orth over all layers = {ours['d_orth_mean']:.3g} against {init['d_orth_mean']:.3g} "
               f"for random weights of the same shapes: {verdict(ours['d_orth_mean'], init['d_orth_mean'])}."]
        if "d_orth_hidden_mean" in ours and "d_orth_hidden_mean" in init:
            a, b = ours["d_orth_hidden_mean"], init["d_orth_hidden_mean"]
            if verdict(a, b) != verdict(ours["d_orth_mean"], init["d_orth_mean"]):
                out.append(f"Without the last layer (the classifier, which Bort training leaves free by default): "
                           f"{a:.3g} against {b:.3g}, {verdict(a, b)}.")
        return out

    @staticmethod
    def _evidence_findings(evidences: list) -> list[str]:
        main = evidences[0]
        out = []
        if main.chain and "traced_rel_error" in main.auc:
            line = (f"Reconstruction from '{main.saliency_layer}' by transposed weights: relative error "
                    f"{main.auc['traced_rel_error']:.3g}, cosine {main.auc['traced_cosine']:.3g}")
            others = [f"{ev.label}: {ev.auc['traced_rel_error']:.3g}" for ev in evidences[1:] if "traced_rel_error" in ev.auc]
            out.append(line + (f" (peers: {'; '.join(others)})." if others else "."))
        elif main.chain_reason:
            out.append(f"No whole-network trace-back: {main.chain_reason}. Per-layer reconstruction errors are reported.")
        if "deletion_auc" in main.auc:
            out.append(f"Backtracking saliency: deletion AUC {main.auc['deletion_auc']:.3g} (random order "
                       f"{main.auc.get('deletion_auc_random', float('nan')):.3g}; lower is better), insertion AUC "
                       f"{main.auc['insertion_auc']:.3g} (random {main.auc.get('insertion_auc_random', float('nan')):.3g}; "
                       "higher is better).")
        return out


def _plain_module(model: Any) -> tuple[Any, str | None]:
    """The model's torch ``nn.Module`` when trace-back rules can use it, else (None, why)."""
    if model.runtime != "torch":
        return None, ("the model runs on ONNX Runtime; trace-back needs the torch model's own modules "
                      "(audit the torch version of the model for reconstruction evidence)")
    module = model.torch_module()
    if module is None:
        return None, model.torch_unavailable_reason or "the model has no torch view"
    import torch

    if isinstance(module, torch.fx.GraphModule):
        return None, ("the model is a torch.export graph (MLflow pt2 format), whose module hooks never fire; "
                      "log it with serialization_format='pickle' for reconstruction evidence")
    return module, None
