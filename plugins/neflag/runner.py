"""One NeFLAG run: resolve the configuration against the model and data (targets, form, sampler, feature scale,
the sphere's radius), explain with NeFLAG and the baselines, measure them (evidence.py) and assemble the
Explanation (assembly.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from governance.errors import MethodError
from governance import Explanation, MethodContext
from governance_plugins.neflag import flux
from governance_plugins.neflag.attributions import Attributor
from governance_plugins.neflag.figures import LABELS
from governance_plugins.neflag.method import check_finite_inputs, timed
from governance_plugins.neflag.scoring import detect_output_kind, to_logits

#: input elements per forward/backward batch when ``max_batch`` is not set (about 32 MiB of float32 points).
_ELEMENTS_PER_BATCH = 1 << 23

METRIC_PREFIX = {"neflag": "", "integrated_gradients": "ig_", "saliency": "saliency_"}


@dataclass(frozen=True)
class Sphere:
    """How the sphere's radius was chosen (recorded in the run's details and metrics)."""

    epsilon: float  # in the sphere's units (z-units for scaled tabular features, model-input units otherwise)
    rule: str  # in words
    sigma: float | None  # the data's RMS per-feature standard deviation in the sphere's units (None: user's ε)
    epsilon_scale: float | None  # ε / (σ·√d) when scaled to the data
    d: int


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
    sphere: Sphere


@dataclass
class Attributions:
    """Every method's attributions on the explained inputs, their cost and NeFLAG's diagnostics."""

    maps: dict[str, np.ndarray]
    seconds: dict[str, float]
    diag: flux.FluxResult


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

    def _check_derivative(self) -> None:
        cfg = self.cfg
        if cfg.derivative != "finite_difference":
            return
        if cfg.form == "B" or cfg.sampler == "descent":
            raise MethodError(
                f"derivative='finite_difference' gives only the radial derivative, which form {cfg.form} with the "
                f"{cfg.sampler} sampler cannot use",
                hint="set form='A' and a sampler other than 'descent', or derivative='gradient'")
        if cfg.input_range is not None:
            raise MethodError("input_range (clipping) is not supported with derivative='finite_difference'",
                              hint="drop input_range or use derivative='gradient'")

    def _scale(self, image_like: bool, sample_shape: tuple[int, ...]) -> np.ndarray | None:
        mode = self.cfg.feature_scale
        if mode == "none" or (mode == "auto" and image_like):
            return None
        X = np.asarray(self.ctx.data.X, dtype=np.float64)
        std = np.nanstd(X, axis=0) if len(X) > 1 else np.ones(sample_shape)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return std.reshape(sample_shape)

    def _sphere(self, scale: np.ndarray | None, d: int) -> Sphere:
        """ε as configured, or ``epsilon_scale``·σ·√d: σ√d is the data's RMS distance from its mean in the sphere's
        units, so the sphere reaches as far as typical data points lie apart (ε = 0.1 pixels was 0.03 σ√d on
        8x8 digits: a point, where the map degenerates into the gradient)."""
        cfg = self.cfg
        if cfg.epsilon is not None:
            return Sphere(float(cfg.epsilon), f"set in the configuration (epsilon = {cfg.epsilon:g})", None, None, d)
        X = np.asarray(self.ctx.data.X)
        var = np.nanvar(X.reshape(len(X), -1), axis=0, dtype=np.float64) if len(X) > 1 else np.zeros(d)
        if scale is not None:
            var = var / np.asarray(scale, dtype=np.float64).reshape(-1) ** 2
        sigma = float(math.sqrt(np.nanmean(var))) if np.isfinite(var).any() else 0.0
        if not sigma > 0:
            self.warnings.append("the data has no spread to scale the sphere by (a single row, or constant features): "
                                 "ε uses σ = 1 model-input unit; set neflag.epsilon to choose the radius")
            sigma = 1.0
        eps = cfg.epsilon_scale * sigma * math.sqrt(d)
        rule = (f"{cfg.epsilon_scale:g} × σ·√d with σ = {sigma:.3g} (the data's RMS per-feature standard deviation"
                f"{' in z-units' if scale is not None else ''}) and d = {d}")
        return Sphere(eps, rule, sigma, float(cfg.epsilon_scale), d)

    # ------------------------------------------------------------------------------------------- run
    def prepare(self) -> Prepared:
        """Select and check the inputs, read the model's outputs, resolve targets, form, sampler, scale and
        radius, and build the attribution functions. (Benchmarks call this to time the methods exactly as run.)"""
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
        self._check_derivative()
        scale = self._scale(image_like, sample_shape)
        sphere = self._sphere(scale, d)
        settings = flux.FluxSettings(
            form=cfg.form, sampler=cfg.sampler, epsilon=sphere.epsilon, n_points=cfg.n_points,
            n_directions=cfg.n_directions, m=cfg.m, antipodes=cfg.antipodes, step_size=cfg.step_size,
            derivative=cfg.derivative, clip=cfg.input_range,
            max_batch=cfg.max_batch or max(1, min(1024, _ELEMENTS_PER_BATCH // d)))
        attributor = Attributor(module=module, kind=kind, output=cfg.output, settings=settings,
                                dtype=np.dtype(X.dtype), baseline=np.asarray(ctx.data.baseline, dtype=X.dtype),
                                scale=scale, ig_steps=cfg.ig_steps, predict=model.predict, seed=ctx.seed,
                                times_input=cfg.map == "times_input")
        return Prepared(data, X, targets, kind, settings, scale, image_like, attributor, sphere)

    def attribute(self, p: Prepared) -> Attributions:
        """NeFLAG, then each baseline, on the explained inputs, timed. Each method first explains one input
        untimed, so that one-off costs (imports, thread pools, first autograd graph) are not charged per input."""
        ctx = self.ctx
        maps: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        if self.cfg.baselines:
            import captum.attr  # noqa: F401  (its import, ~2 s, is not the baselines' cost per input)
        for i, m in enumerate(["neflag", *self.cfg.baselines]):
            ctx.progress(0.05 + 0.05 * i, f"{LABELS[m]} attributions")
            p.attributor.run(m, p.X[:1], p.targets[:1])
            maps[m], seconds[m] = timed(p.attributor.run, m, p.X, p.targets)
            if m == "neflag":
                diag = p.attributor.last["result"]
        return Attributions(maps, seconds, diag)

    def run(self) -> Explanation:
        from governance_plugins.neflag.assembly import Outcome, assemble
        from governance_plugins.neflag.evidence import Evidence

        p = self.prepare()
        try:
            attrs = self.attribute(p)
            measured = Evidence(self.ctx, p, attrs.maps, self.warnings).measure()
        except flux.NonFiniteError as exc:
            raise MethodError(str(exc), hint="the model is not finite around these inputs: check for overflow "
                              "(try output='log_prob' or a smaller epsilon) or unsupported input ranges") from exc
        self.ctx.progress(0.9, "figures")
        return assemble(Outcome(self.ctx, p, attrs, measured, self.warnings))
