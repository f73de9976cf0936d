"""Reconstruction and backtracking-saliency evidence of spec B3, each figure measured beside its control.

* One-step reconstruction of every Linear/Conv layer on its real inputs, ``‖x - W^T D W x‖/‖x‖`` (B6.1): works for
  any model structure.
* Whole-network trace-back (B3.1, :mod:`~governance_plugins.bort.tracing`) from every hidden activation, for
  models whose forward pass is a chain: the relative error and cosine of the reconstructed input.
* Backtracking saliency (B3.2): the positive part of one layer's traced-back activations, summed over channels,
  normalised by its maximum; scored by the deletion/insertion game of :func:`governance.quality.deletion_insertion`
  (one implementation and one normalisation for every method: the target-class probability, AUC over the share
  of pixels moved to the data's baseline).

Controls (:func:`control_evidence`): the same trace-back on copies of the model with random weights (the same
architecture, untrained; several seeds), and, for the saliency, random pixel orders and the saliency traced
through the random copies, both scored on the real model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from governance.quality import DeletionInsertion, deletion_insertion
from governance_plugins.bort import tracing as T


@dataclass(frozen=True)
class EvidenceSettings:
    """What the evidence measures: the traced layer, the deletion/insertion game, how many samples are shown."""

    layer: str | None = None
    deletion_steps: int = 20
    deletion_samples: int = 16
    n_show: int = 6


@dataclass
class Trace:
    """The trace-back of one model on one batch."""

    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    chain_reason: str | None = None
    tap_rows: list[dict[str, Any]] = field(default_factory=list)
    saliency_layer: str | None = None
    traced: torch.Tensor | None = None  # the input reconstructed from the saliency layer
    rel_error: float = float("nan")
    cosine: float = float("nan")

    @property
    def chain(self) -> bool:
        return self.traced is not None

    @property
    def layer_rel_error_mean(self) -> float:
        vals = [r["rel_error"] for r in self.layer_rows if np.isfinite(r["rel_error"])]
        return float(np.mean(vals)) if vals else float("nan")


@dataclass
class Evidence:
    """Everything the reconstruction part of the audit found for one model."""

    label: str
    trace: Trace
    saliency: np.ndarray | None = None  # (n_show, *spatial)
    reconstruction: np.ndarray | None = None  # (n_show, *sample_shape)
    scores: DeletionInsertion | None = None
    deletion_samples: int = 0

    @property
    def metrics(self) -> dict[str, float]:
        out = {"layer_rel_error_mean": self.trace.layer_rel_error_mean}
        if self.trace.chain:
            out.update(traced_rel_error=self.trace.rel_error, traced_cosine=self.trace.cosine)
        if self.scores is not None:
            out.update(deletion_auc=self.scores.mean_deletion_auc, insertion_auc=self.scores.mean_insertion_auc)
        return out


def module_device(module: Any) -> torch.device:
    """Where the module's weights live (inputs are moved there; results come back to the CPU)."""
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def layer_reconstruction(module: Any, x: torch.Tensor) -> list[dict[str, Any]]:
    """One-step reconstruction error of every Linear/Conv layer on its real inputs (spec B6.1), bias removed."""
    rows: list[dict[str, Any]] = []

    def visit(step: T.Step) -> None:
        try:
            xh = T.invert_step(step, step.out)
        except T.NotInvertible:
            return
        rel, cos = T.relative_error(step.inp, xh)
        rows.append({"layer": step.name, "kind": step.op.kind, "rel_error": _mean(rel), "cosine": _mean(cos)})

    with torch.no_grad():
        T.weight_steps(module, x, visit)
    return rows


@torch.no_grad()
def trace(module: Any, x: torch.Tensor, layer: str | None) -> Trace:
    """Per-layer reconstruction, then (chain models) the trace-back from every tap and from the saliency layer."""
    x = x.to(module_device(module))
    tr = Trace(layer_rows=layer_reconstruction(module, x))
    probe = T.record(module, x[: min(2, len(x))])
    if probe.problem is not None:
        tr.chain_reason = probe.problem
        return tr
    steps = T.record(module, x).steps
    try:
        for tap in T.default_taps(steps):
            rel, cos = T.relative_error(x, T.traceback(steps, tap, steps[tap].out))
            tr.tap_rows.append({"tap": steps[tap].name, "depth": tap + 1, "module": steps[tap].op.kind,
                                "rel_error": _mean(rel), "cosine": _mean(cos)})
        tap = T.saliency_tap(steps, layer)
        traced = T.traceback(steps, tap, steps[tap].out)
    except T.NotInvertible as exc:
        tr.chain_reason, tr.tap_rows = str(exc), []
        return tr
    rel, cos = T.relative_error(x, traced)
    tr.saliency_layer, tr.traced, tr.rel_error, tr.cosine = steps[tap].name, traced, _mean(rel), _mean(cos)
    return tr


def saliency_maps(x_traced: torch.Tensor) -> np.ndarray:
    """Positive part, summed over channels, normalised by each sample's maximum: (n, *spatial)."""
    pos = x_traced.clamp_min(0)
    sal = pos.sum(1) if pos.ndim >= 3 else pos
    flat = sal.reshape(len(sal), -1)
    mx = flat.max(1).values.reshape(-1, *([1] * (sal.ndim - 1)))
    return torch.where(mx > 0, sal / mx.clamp_min(1e-30), torch.zeros_like(sal)).detach().double().cpu().numpy()


def forward_fn(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    """numpy in, numpy scores out, without gradients."""
    device = module_device(module)

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch)).to(device)).double().cpu().numpy()

    return forward


def score_saliency(forward: Callable[[np.ndarray], np.ndarray], X: np.ndarray, saliency: np.ndarray,
                   baseline: np.ndarray | float, steps: int, seed: int) -> DeletionInsertion:
    """Deletion/insertion of whole pixels (all channels) in the order of ``saliency`` (n, H, W), scored with the
    probability of the class ``forward`` predicts for the intact image."""
    target = np.argmax(forward(X), axis=1)
    attributions = np.broadcast_to(saliency[:, None].astype(np.float64), X.shape)
    return deletion_insertion(forward, X, attributions, baseline, target, steps=steps, channel_axis=0,
                              outputs="auto", rng=np.random.default_rng(seed))


def gather_evidence(module: Any, X: np.ndarray, *, label: str, image: bool, settings: EvidenceSettings,
                    baseline: np.ndarray | float = 0.0, seed: int = 0) -> Evidence:
    """The trace-back of ``module`` on ``X`` and, for images, its saliency scored by deletion/insertion."""
    x = torch.from_numpy(np.ascontiguousarray(X))
    ev = Evidence(label=label, trace=trace(module, x, settings.layer))
    if not ev.trace.chain or not (image and x.ndim == 4):
        return ev
    sal = saliency_maps(ev.trace.traced)
    ev.saliency = sal[: settings.n_show]  # float64: exactly the ranking that was scored
    ev.reconstruction = ev.trace.traced[: settings.n_show].cpu().numpy().astype(np.float32)
    k = min(settings.deletion_samples, len(X))
    ev.scores = score_saliency(forward_fn(module), X[:k], sal[:k], baseline, settings.deletion_steps, seed)
    ev.deletion_samples = k
    return ev


@dataclass
class ControlEvidence:
    """The evidence figures of the controls, one value per draw."""

    random_weights: dict[str, list[float]] = field(default_factory=dict)  # trace-back of untrained copies
    random_order: dict[str, list[float]] = field(default_factory=dict)  # deletion/insertion of random rankings
    seeds: list[int] = field(default_factory=list)

    def add(self, group: dict[str, list[float]], metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            group.setdefault(key, []).append(float(value))


def control_evidence(module: Any, X: np.ndarray, evidence: Evidence, *, seeds: Sequence[int],
                     settings: EvidenceSettings, baseline: np.ndarray | float = 0.0, random_orders: int = 3) -> ControlEvidence:
    """The controls of :func:`gather_evidence`'s figures: for each seed, a copy of ``module`` with random weights
    traced back the same way (its saliency scored on the real ``module``); and ``random_orders`` random pixel
    rankings scored on the real module."""
    from governance_plugins.bort.reference import randomised_copy

    out = ControlEvidence(seeds=list(seeds))
    x = torch.from_numpy(np.ascontiguousarray(X))
    forward = forward_fn(module)
    k = evidence.deletion_samples
    for s in seeds:
        tr = trace(randomised_copy(module, s), x, evidence.trace.saliency_layer or settings.layer)
        metrics = {"layer_rel_error_mean": tr.layer_rel_error_mean}
        if tr.chain:
            metrics.update(traced_rel_error=tr.rel_error, traced_cosine=tr.cosine)
            if evidence.scores is not None:
                sc = score_saliency(forward, X[:k], saliency_maps(tr.traced)[:k], baseline, settings.deletion_steps, s)
                metrics.update(deletion_auc=sc.mean_deletion_auc, insertion_auc=sc.mean_insertion_auc)
        out.add(out.random_weights, metrics)
    if evidence.scores is not None:
        rng = np.random.default_rng(list(seeds)[0] if seeds else 0)
        for r in range(random_orders):
            sal = rng.random((k, *X.shape[2:]))
            sc = score_saliency(forward, X[:k], sal, baseline, settings.deletion_steps, r)
            out.add(out.random_order, {"deletion_auc": sc.mean_deletion_auc, "insertion_auc": sc.mean_insertion_auc})
    return out
