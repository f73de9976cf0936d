"""The ``bort`` method: a bounded-orthogonality audit of a model's weights, with reconstruction evidence.

1. Every Linear/Conv weight (torch or ONNX) is audited against Bort's constraint (spec B6.1): the scale-free and
   absolute distances from bounded-orthogonal, the condition number, a two-sided bound on the squared norms.
   The layers Bort constrains by default and the free classifier (the last linear layer) are reported apart.
2. Every headline figure is judged against a random reference of the same shapes over several seeds, with a
   tolerance band (``reference.py``): "closer than random", "within the band" or "further", never an absolute
   threshold; each is recorded as a control of the explanation.
3. Peers (other versions of the model) are audited the same way; when one of them is Bort-trained, a finding says
   what Bort bought and what it cost (``compare.py``).
4. For torch models (``nn.Module`` or ``torch.export`` graphs) that are near bounded-orthogonal, tagged as
   Bort-trained, or when asked: the reconstruction and backtracking-saliency evidence of spec B3, beside controls
   (``reconstruction.py``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from governance import Explanation, Method, MethodConfig, MethodContext, Requirement
from governance.errors import GovernanceError, MethodError
from governance_plugins.bort import findings as W
from governance_plugins.bort.constants import TAG_GAMMA, TAG_INCLUDE_CLASSIFIER, TAG_OPTIMIZER


class BortConfig(MethodConfig):
    #: Bort's target amplitude c (squared row norm / singular value) for D_abs and the norm bound
    amplitude: float = Field(1.0, gt=0)
    #: a layer is within the bound when every squared row norm (column norm, tall weights) is within (1 ± t)·c
    row_tolerance: float = Field(0.1, ge=0, lt=1)
    #: random weight sets of the same shapes (seeds) forming the reference and its band (small models: at least 50)
    reference_draws: int = Field(10, ge=3, le=100)
    #: "near bounded-orthogonal": below the band of the random reference and at most this share of its mean
    near_fraction: float = Field(0.5, gt=0, lt=1)
    #: the last linear layer counts as constrained (None: as the version's governance.bort tags say; default free)
    classifier_constrained: bool | None = None
    #: "auto": run the reconstruction evidence when the model is Bort-tagged or near bounded-orthogonal
    reconstruction: Literal["auto", "always", "never"] = "auto"
    #: samples of the dataset used for the reconstruction evidence
    n_samples: int = Field(64, ge=2, le=4096)
    #: module whose activations are traced back for saliency (default: the input of the last Linear/Conv)
    saliency_layer: str | None = None
    #: steps of the deletion/insertion game (governance.quality.deletion_insertion)
    deletion_steps: int = Field(20, ge=2, le=256)
    #: images scored by deletion/insertion (2 x (steps + 1) forward rows per image and ranking)
    deletion_samples: int = Field(16, ge=1, le=1024)
    #: copies with random weights traced back as the reconstruction control
    control_draws: int = Field(10, ge=3, le=50)
    #: random pixel orders scored as the saliency control
    random_orders: int = Field(10, ge=3, le=50)
    #: layers shown in the per-layer figure (the worst ones when there are more)
    max_plot_layers: int = Field(48, ge=1)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def _classifier_constrained(cfg: BortConfig, model: Any) -> bool:
    if cfg.classifier_constrained is not None:
        return cfg.classifier_constrained
    return str((model.info.tags or {}).get(TAG_INCLUDE_CLASSIFIER, "")).lower() == "true"


class BortAudit(Method):
    name = "bort"
    version = "2.0.0"
    title = "Bounded-orthogonality audit (Bort)"
    description = (
        "Measures how far every linear and convolution layer is from Bort's bounded-orthogonal constraint "
        "(orthogonal rows of bounded norm), the property that makes a layer's units comparable and the layer "
        "invertible by its transpose, against random weights of the same shapes; compares model versions (what "
        "Bort bought, what it cost); and, for models close to the constraint, reconstructs inputs from hidden "
        "layers and traces activations back to the input as saliency, each figure beside its control."
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

    @staticmethod
    def _audit_model(model: Any, cfg: BortConfig, progress: Any = None) -> Any:
        from governance_plugins.bort.audit import audit_model

        return audit_model(model, amplitude=cfg.amplitude, row_tolerance=cfg.row_tolerance,
                           classifier_constrained=_classifier_constrained(cfg, model), progress=progress)

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        from governance_plugins.bort.reference import RandomReference

        cfg: BortConfig = ctx.config  # type: ignore[assignment]
        audit = self._audit_model(ctx.model, cfg, lambda f: ctx.progress(0.3 * f, "auditing weights"))
        if not audit.audits:
            skipped = audit.skipped
            raise MethodError(
                f"{ctx.model.info.display_name} has no linear or convolution weights to audit"
                + (f" (skipped: {', '.join(s['name'] for s in skipped[:5])})" if skipped else ""),
                hint="the Bort audit applies to models built from Linear/Conv layers (or ONNX Gemm/MatMul/Conv)")
        ctx.progress(0.3, "random reference")
        ref = RandomReference.build(audit.layers, audit.split, seed=ctx.seed, draws=cfg.reference_draws,
                                    amplitude=cfg.amplitude, row_tolerance=cfg.row_tolerance)
        exp = Explanation(method=self.name, summary="", metrics={}, tables={}, details={}, findings=[], warnings=[])
        near = W.audit_headline(exp, audit, ref, cfg)
        self._describe(exp, ctx, audit, ref)
        ctx.progress(0.45, "comparing with peers")
        ours, peers = W.peer_comparison(exp, ctx, audit, lambda m: self._audit_model(m, cfg))
        ctx.progress(0.5, "reconstruction evidence")
        evidences = self._reconstruction(exp, ctx, cfg, near)
        W.bought_findings(exp, ours, peers, evidences, ref)
        ctx.progress(0.9, "figures")
        self._figures(exp, ctx, cfg, audit, ref, peers, evidences)
        exp.summary = W.summary_text(exp, audit)
        exp.metrics = _finite(exp.metrics)
        return exp

    @staticmethod
    def _describe(exp: Explanation, ctx: MethodContext, audit: Any, ref: Any) -> None:
        """Per-layer table, details and the warnings that apply to every audit."""
        cfg: BortConfig = ctx.config  # type: ignore[assignment]
        model = ctx.model
        rows = []
        for i, a in enumerate(audit.audits):
            r, band = a.row(), ref.layer_band(i)
            rows.append({"layer": r["name"], "kind": r["kind"], "shape": r["shape"], "form": r["form"],
                         "role": "classifier (free)" if i == audit.split.classifier and i not in audit.split.constrained
                         else "constrained", "d_orth": a.d_orth, "d_orth_random": band.mean,
                         "d_orth_band": band.margin, "position": band.position(a.d_orth), "d_abs": a.d_abs,
                         "kappa": a.kappa, "norm_sq_min": a.norm_sq_min, "norm_sq_max": a.norm_sq_max,
                         "within_bounds": a.within_bounds, "n_params": a.n_params})
        exp.tables["layers"] = rows
        if audit.skipped:
            exp.tables["skipped"] = audit.skipped
        exp.details.update({"roles_from": audit.roles_from, "amplitude": cfg.amplitude,
                            "row_tolerance": cfg.row_tolerance, "runtime": model.runtime,
                            "reference": ref.describe(), "near_fraction": cfg.near_fraction,
                            "classifier": audit.audits[audit.split.classifier].name
                            if audit.split.classifier is not None else None,
                            "classifier_constrained": _classifier_constrained(cfg, model)})
        exp.arrays.update({
            "d_orth": np.array([a.d_orth for a in audit.audits]), "d_abs": np.array([a.d_abs for a in audit.audits]),
            "kappa": np.array([a.kappa for a in audit.audits]),
            "d_orth_random": np.array([[d.d_orth for d in draw] for draw in ref.audits]),
            "sigma2": np.concatenate([a.sigma2 for a in audit.audits]),
            "sigma2_offsets": np.cumsum([0] + [len(a.sigma2) for a in audit.audits]),
        })
        if audit.roles_from == "tensor shapes":
            exp.warnings.append("Layer kinds were inferred from tensor shapes (2-D = linear, 3-5-D = convolution): "
                                "embedding tables or other matrices may be audited as layers.")
        if model.runtime == "onnxruntime":
            exp.warnings.append("Weights are audited as stored in the ONNX graph. Exporters usually fold BatchNorm "
                                "into the preceding convolution, so those layers differ from the raw torch weights "
                                "that Bort constrains.")

    # ------------------------------------------------------------------------------------------ B3
    def _reconstruction(self, exp: Explanation, ctx: MethodContext, cfg: BortConfig, near: str | None) -> list:
        """Run the B3 evidence when it applies (with its controls); returns the evidences, ours first."""
        recon: dict[str, Any] = {"ran": False, "mode": cfg.reconstruction}
        exp.details["reconstruction"] = recon
        why_not = self._skip_reason(ctx.model, cfg, near)
        if why_not:
            recon["reason"] = why_not
            return []
        model = ctx.model
        tagged = TAG_OPTIMIZER in (model.info.tags or {})
        recon["trigger"] = ("requested (reconstruction: always)" if cfg.reconstruction == "always" else
                            f"tagged Bort-trained ({model.info.tags.get(TAG_OPTIMIZER)}, gamma "
                            f"{model.info.tags.get(TAG_GAMMA, '?')})" if tagged else near)
        try:
            X = model.check_input(ctx.data.subset(cfg.n_samples, ctx.rng).X)
        except GovernanceError as exc:
            recon["reason"] = f"the data does not fit the model ({str(exc).splitlines()[0]})"
            return []
        from governance_plugins.bort.evidence import run_evidence

        return run_evidence(exp, ctx, cfg, X, recon)

    @staticmethod
    def _skip_reason(model: Any, cfg: BortConfig, near: str | None) -> str | None:
        if cfg.reconstruction == "never":
            return "switched off (reconstruction: never)"
        module, why = plain_module(model)
        if module is None:
            if cfg.reconstruction == "always":
                raise MethodError(f"reconstruction evidence was requested, but {why}",
                                  hint="use reconstruction: auto or never for this model")
            return why
        tagged = TAG_OPTIMIZER in (model.info.tags or {})
        if cfg.reconstruction == "auto" and not tagged and near is None:
            return ("the layers Bort constrains are not near bounded-orthogonal (see the audit findings) and the "
                    "version is not tagged as Bort-trained; transpose-based reconstruction is only meaningful near "
                    "the constraint (set reconstruction: always to run it anyway)")
        return None

    @staticmethod
    def _figures(exp: Explanation, ctx: MethodContext, cfg: BortConfig, audit: Any, ref: Any, peers: list,
                 evidences: list) -> None:
        from governance_plugins.bort import plots

        markers = [(p.label, {r["layer"]: r["d_orth_peer"] for r in p.rows}) for p in peers if p.rows]
        bands = [ref.layer_band(i) for i in range(len(audit.audits))]
        classifier = audit.split.classifier if audit.split.classifier not in audit.split.constrained else None
        exp.figures["deviation"] = ctx.save_figure(
            plots.deviation_figure(audit.audits, bands, markers, cfg.max_plot_layers, classifier), "bort_deviation")
        exp.figures["spectra"] = ctx.save_figure(plots.spectra_figure(audit.audits), "bort_spectra")
        if evidences and any(ev.trace.tap_rows for ev in evidences):
            random_error = exp.details["reconstruction"].get("control_means", {}).get("traced_rel_error")
            exp.figures["traceback"] = ctx.save_figure(plots.traceback_figure(evidences, random_error), "bort_traceback")
        if evidences and evidences[0].saliency is not None:
            shown = exp.arrays.get("inputs_shown")
            exp.figures["saliency"] = ctx.save_figure(plots.saliency_figure(shown, evidences), "bort_saliency")


def plain_module(model: Any) -> tuple[Any, str | None]:
    """The model's torch module (an ``nn.Module`` or a ``torch.export`` graph) when the trace-back can use it,
    else (None, why)."""
    if model.runtime != "torch":
        return None, ("the model runs on ONNX Runtime; trace-back needs the torch model's own layers "
                      "(audit the torch version of the model for reconstruction evidence)")
    module = model.torch_module()
    if module is None:
        return None, model.torch_unavailable_reason or "the model has no torch view"
    return module, None
