"""Reconstruction ("trace back") and backtracking saliency of spec B3, for torch ``nn.Module`` models.

A Bort layer is (nearly) invertible by its transpose, so hidden activations can be traced back to the
input layer by layer (B3.1):

* Linear / Conv: ``x = W^T diag(1/‖w_i‖²) (z - b)`` per output location, folded back (overlap-add) and
  divided by the overlap count, when ``W`` is wide (``m <= n``; the authors' conv rule, and their linear
  rule ``W^T (z - b)`` when rows have unit norm). For a tall ``W`` (``m > n``) we use ``W^T (z - b) / s``
  with ``s`` the mean squared singular value, the exact inverse of a scaled isometry (our choice: the
  row-norm rule is not exact for tall Bort weights);
* ReLU-like activations, dropout: identity; max/avg pooling: nearest-neighbour up-sampling;
  BatchNorm (eval): its affine map inverted; Flatten: reshape.

Backtracking saliency (B3.2) is the positive part of the traced-back activations of one layer, summed
over channels and normalised by its maximum. Its quality is measured by deletion/insertion AUC (B3.3,
the authors' benchmark protocol) against a random pixel order. The quantitative reconstruction check
(relative error and cosine per tapped layer) is the spec's proposal, not a number from the paper.

Only models whose forward pass is a chain of modules (each consuming the previous one's output) can be
traced back whole; residual networks cannot. The one-step reconstruction error of each Linear/Conv layer
on its real inputs (B6.1) works for every ``nn.Module``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.CELU, nn.SELU, nn.Softplus, nn.Mish)
_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity) + _ACTIVATIONS
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RESHAPES = (nn.Flatten, nn.Unflatten)


class NotInvertible(Exception):
    """A module (or model structure) the trace-back rules do not cover."""


@dataclass
class Step:
    name: str
    module: nn.Module
    inp: torch.Tensor
    out: torch.Tensor


# --------------------------------------------------------------------------------------------- recording
def record_steps(module: nn.Module, x: torch.Tensor) -> tuple[list[Step], torch.Tensor]:
    """Run ``module(x)`` and record every leaf module call (name, module, input, output) in order."""
    steps: list[Step] = []
    handles = []
    for name, mod in module.named_modules():
        if list(mod.children()):
            continue

        def hook(m, args, out, name=name):
            inp = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
            steps.append(Step(name, m, inp, out if isinstance(out, torch.Tensor) else None))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    return steps, out


def chain_problem(steps: Sequence[Step], x: torch.Tensor, out: Any) -> str | None:
    """Why the recorded steps are not a simple chain ``x -> step_0 -> ... -> out``, or None if they are."""
    if not steps:
        return "the model has no sub-modules to trace back through"
    if steps[0].inp is None or not (steps[0].inp is x or (steps[0].inp.shape == x.shape and torch.equal(steps[0].inp, x))):
        return f"the first module '{steps[0].name}' does not take the model input directly"
    seen = {steps[0].name}
    for prev, cur in zip(steps, steps[1:]):
        if cur.inp is None or cur.inp is not prev.out:
            return (f"module '{cur.name}' does not take the output of '{prev.name}' (residual connections or "
                    "functional operations in forward)")
        if cur.name in seen:
            return f"module '{cur.name}' is called more than once in the forward pass"
        seen.add(cur.name)
    if not isinstance(out, torch.Tensor) or not (out is steps[-1].out or torch.equal(out, steps[-1].out)):
        return f"the model output is not the output of its last module '{steps[-1].name}'"
    return None


# --------------------------------------------------------------------------------------------- inverses
def _fit_spatial(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad or crop the trailing spatial dims of ``x`` to ``size``."""
    nd = len(size)
    pads: list[int] = []
    for cur, want in zip(reversed(x.shape[-nd:]), reversed(list(size))):
        pads += [0, max(0, want - cur)]
    if any(pads):
        x = F.pad(x, pads)
    index = (Ellipsis,) + tuple(slice(0, s) for s in size)
    return x[index]


def _row_scale(W: torch.Tensor) -> torch.Tensor:
    """Per-row factors of the transpose inverse: ``1/‖w_i‖²`` (wide) or ``1/s`` for every row (tall)."""
    Wm = W.detach().reshape(W.shape[0], -1)
    m, n = Wm.shape
    if m <= n:
        sq = Wm.square().sum(1)
        return torch.where(sq > 0, 1.0 / sq.clamp_min(1e-30), torch.zeros_like(sq))
    s = Wm.square().sum() / n
    return torch.full((m,), float(1.0 / s) if s > 0 else 0.0, dtype=W.dtype, device=W.device)


def _conv_padding(mod: nn.Module) -> tuple[int, ...]:
    nd = mod.weight.ndim - 2
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            return (0,) * nd
        return tuple(d * (k - 1) // 2 for d, k in zip(mod.dilation, mod.kernel_size))
    return tuple(mod.padding)


def invert_step(step: Step, z: torch.Tensor) -> torch.Tensor:
    """Map ``z`` (shaped like ``step.out``) back to the shape of ``step.inp`` by the rules of B3.1."""
    mod, shape = step.module, step.inp.shape
    if isinstance(mod, _IDENTITY):
        return z
    if isinstance(mod, nn.Linear):
        W = mod.weight
        zc = z - mod.bias if mod.bias is not None else z
        return (zc * _row_scale(W)) @ W
    if isinstance(mod, _CONVS):
        if getattr(mod, "padding_mode", "zeros") != "zeros":
            raise NotInvertible(f"convolution '{step.name}' uses padding_mode={mod.padding_mode!r}")
        nd = mod.weight.ndim - 2
        W = mod.weight
        zc = z - mod.bias.reshape(1, -1, *([1] * nd)) if mod.bias is not None else z
        y = zc * _row_scale(W).reshape(1, -1, *([1] * nd))
        tconv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        pad = _conv_padding(mod)
        x = tconv(y, W, stride=mod.stride, padding=pad, groups=mod.groups, dilation=mod.dilation)
        ones_k = torch.ones((1, 1, *mod.kernel_size), dtype=z.dtype, device=z.device)
        count = tconv(torch.ones((1, 1, *z.shape[2:]), dtype=z.dtype, device=z.device), ones_k,
                      stride=mod.stride, padding=pad, dilation=mod.dilation)
        x, count = _fit_spatial(x, shape[2:]), _fit_spatial(count, shape[2:])
        return torch.where(count > 0, x / count.clamp_min(1.0), torch.zeros_like(x))
    if isinstance(mod, _POOLS):
        return F.interpolate(z, size=tuple(shape[2:]), mode="nearest")
    if isinstance(mod, _NORMS):
        if mod.training or mod.running_var is None:
            raise NotInvertible(f"batch norm '{step.name}' has no running statistics")
        nd = z.ndim - 2
        view = (1, -1) + (1,) * nd
        std = (mod.running_var + mod.eps).sqrt().reshape(view)
        mean = mod.running_mean.reshape(view)
        if mod.affine:
            g = mod.weight.reshape(view)
            b = mod.bias.reshape(view)
            safe = torch.where(g.abs() > 1e-12, g, torch.ones_like(g))
            return torch.where(g.abs() > 1e-12, (z - b) / safe, torch.zeros_like(z)) * std + mean
        return z * std + mean
    if isinstance(mod, _RESHAPES):
        return z.reshape(shape)
    raise NotInvertible(f"no trace-back rule for {type(mod).__name__} ('{step.name}')")


def traceback(steps: Sequence[Step], tap: int, z: torch.Tensor) -> torch.Tensor:
    """Trace ``z`` (shaped like the output of ``steps[tap]``) back to the model input."""
    for step in reversed(steps[: tap + 1]):
        z = invert_step(step, z)
    return z


# --------------------------------------------------------------------------------------------- metrics
def _per_sample(x: torch.Tensor, xh: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(relative error ‖x - x̂‖/‖x‖, cosine(x, x̂)) per sample; NaN where ‖x‖ = 0."""
    a = x.detach().reshape(len(x), -1).double()
    b = xh.detach().reshape(len(xh), -1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    rel = torch.where(na > 0, (a - b).norm(dim=1) / na.clamp_min(1e-300), torch.full_like(na, math.nan))
    cos = torch.where((na > 0) & (nb > 0), (a * b).sum(1) / (na * nb).clamp_min(1e-300), torch.full_like(na, math.nan))
    return rel.numpy(), cos.numpy()


def layer_reconstruction(module: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """One-step reconstruction error of every Linear/Conv layer on its real inputs (spec B6.1):
    ``‖x - W^T D W x‖/‖x‖`` with the bias removed. Works for any module structure; computed inside hooks so
    activations are not kept."""
    rows: list[dict[str, Any]] = []
    handles = []
    for name, mod in module.named_modules():
        if not isinstance(mod, (nn.Linear,) + _CONVS):
            continue

        def hook(m, args, out, name=name):
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if inp is None or not isinstance(out, torch.Tensor) or any(r["layer"] == name for r in rows):
                return
            try:
                xh = invert_step(Step(name, m, inp, out), out)
            except NotInvertible:
                return
            rel, cos = _per_sample(inp, xh)
            rows.append({"layer": name, "kind": "linear" if isinstance(m, nn.Linear) else "conv",
                         "rel_error": float(np.nanmean(rel)), "cosine": float(np.nanmean(cos))})

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def default_taps(steps: Sequence[Step]) -> list[int]:
    """Chain positions to trace back from: every activation module's output, or, with functional activations,
    every Linear/Conv output; the final classifier's output is not a tap."""
    weights = [i for i, s in enumerate(steps) if isinstance(s.module, (nn.Linear,) + _CONVS)]
    last_weight = weights[-1] if weights else len(steps)
    taps = [i for i, s in enumerate(steps) if isinstance(s.module, _ACTIVATIONS) and i < last_weight]
    if not taps:
        taps = [i for i in weights if i < last_weight]
    return taps


def saliency_tap(steps: Sequence[Step], layer: str | None) -> int:
    """The chain position whose activations are traced back for saliency: ``layer`` when given, else the
    module just before the last Linear/Conv (the features the classifier reads)."""
    names = [s.name for s in steps]
    if layer is not None:
        if layer not in names:
            raise KeyError(layer)
        return names.index(layer)
    weights = [i for i, s in enumerate(steps) if isinstance(s.module, (nn.Linear,) + _CONVS)]
    if not weights or weights[-1] == 0:
        return max(len(steps) - 2, 0)
    return weights[-1] - 1


def saliency_maps(x_traced: torch.Tensor) -> np.ndarray:
    """Positive part, summed over channels, normalised by each sample's maximum: (n, *spatial)."""
    pos = x_traced.clamp_min(0)
    sal = pos.sum(1) if pos.ndim >= 3 else pos
    flat = sal.reshape(len(sal), -1)
    mx = flat.max(1).values.reshape(-1, *([1] * (sal.ndim - 1)))
    return torch.where(mx > 0, sal / mx.clamp_min(1e-30), torch.zeros_like(sal)).detach().double().numpy()


def _blur(X: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = np.empty_like(X)
    for i in range(X.shape[0]):
        for c in range(X.shape[1]):
            out[i, c] = gaussian_filter(X[i, c], sigma=sigma, truncate=radius / sigma, mode="reflect")
    return out


def deletion_insertion(forward: Callable[[np.ndarray], np.ndarray], X: np.ndarray, saliency: np.ndarray, *,
                       step: int, score: str = "softmax", blur_sigma: float = 5.0, blur_radius: int = 5,
                       batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Deletion and insertion curves and AUCs (spec B3.3) for images ``X`` (n, C, H, W) ranked by ``saliency``
    (n, H, W). Deletion sets the top pixels (all channels) to 0; insertion restores them into a blurred
    copy; the score is the originally predicted class's softmax (or logit). AUC = mean of the curve after
    dividing by its first (deletion) or last (insertion) value."""
    n, C, H, Wd = X.shape
    P = H * Wd
    order = np.argsort(-saliency.reshape(n, P), axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(n)[:, None], order] = np.arange(P)[None, :]
    counts = list(range(0, P, step)) + [P]
    blurred = _blur(X, blur_sigma, blur_radius)

    def scores(batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
        outs = [forward(batch[i: i + batch_size]) for i in range(0, len(batch), batch_size)]
        logits = np.concatenate(outs).astype(np.float64)
        if score == "softmax":
            logits = np.exp(logits - logits.max(1, keepdims=True))
            logits = logits / logits.sum(1, keepdims=True)
        return logits[np.arange(len(batch)), classes]

    pred = np.argmax(forward(X), axis=1)
    dcurve = np.empty((n, len(counts)))
    icurve = np.empty((n, len(counts)))
    for t, k in enumerate(counts):  # one batch of all samples per step: memory stays O(n)
        mask = (ranks < k).reshape(n, 1, H, Wd)
        dcurve[:, t] = scores(np.where(mask, 0.0, X).astype(X.dtype), pred)
        icurve[:, t] = scores(np.where(mask, X, blurred).astype(X.dtype), pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        dnorm = dcurve / dcurve[:, :1]
        inorm = icurve / icurve[:, -1:]
    return {"deletion_auc": np.nanmean(dnorm, axis=1), "insertion_auc": np.nanmean(inorm, axis=1),
            "deletion_curve": np.nanmean(dnorm, axis=0), "insertion_curve": np.nanmean(inorm, axis=0),
            "fractions": np.array(counts, dtype=np.float64) / P}


# --------------------------------------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """Everything the reconstruction part of the audit found for one model."""

    label: str
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    chain: bool = False
    chain_reason: str | None = None
    tap_rows: list[dict[str, Any]] = field(default_factory=list)
    saliency_layer: str | None = None
    saliency: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    auc: dict[str, Any] = field(default_factory=dict)


def default_deletion_step(height: int, width: int) -> int:
    """Pixels per deletion/insertion step as in the authors' benchmark: 10 for 28x28 and 32x32 images, 8 rows'
    worth (224·8) for large images; at most 64 steps for small ones (1 pixel for 8x8)."""
    n = height * width
    if n <= 256:
        return max(1, n // 64)
    if n <= 1024:
        return 10
    return 8 * width


@torch.no_grad()
def gather_evidence(module: nn.Module, X: np.ndarray, *, label: str, image: bool, layer: str | None = None,
                    score: str = "softmax", deletion_step: int | None = None, deletion_samples: int = 16, n_show: int = 6,
                    rng: np.random.Generator | None = None, random_baseline: bool = True) -> Evidence:
    """Per-layer reconstruction, trace-back from every tap, and (images) saliency with deletion/insertion."""
    ev = Evidence(label=label)
    x = torch.from_numpy(np.ascontiguousarray(X))
    ev.layer_rows = layer_reconstruction(module, x)
    probe = x[: min(2, len(x))]
    steps, out = record_steps(module, probe)
    ev.chain_reason = chain_problem(steps, probe, out)
    if ev.chain_reason is not None:
        return ev
    steps, out = record_steps(module, x)
    try:
        for tap in default_taps(steps):
            xh = traceback(steps, tap, steps[tap].out)
            rel, cos = _per_sample(x, xh)
            ev.tap_rows.append({"tap": steps[tap].name, "depth": tap + 1, "module": type(steps[tap].module).__name__,
                                "rel_error": float(np.nanmean(rel)), "cosine": float(np.nanmean(cos))})
        tap = saliency_tap(steps, layer)
        traced = traceback(steps, tap, steps[tap].out)
    except NotInvertible as exc:
        ev.chain_reason = str(exc)
        ev.tap_rows = []
        return ev
    ev.chain = True
    ev.saliency_layer = steps[tap].name
    rel, cos = _per_sample(x, traced)
    ev.auc["traced_rel_error"] = float(np.nanmean(rel))
    ev.auc["traced_cosine"] = float(np.nanmean(cos))
    if image and x.ndim == 4:
        sal = saliency_maps(traced)
        ev.saliency = sal[:n_show].astype(np.float32)
        ev.reconstruction = traced[:n_show].numpy().astype(np.float32)

        def forward(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(batch))).double().numpy()

        H, W = x.shape[2:]
        step = deletion_step or default_deletion_step(H, W)
        Xd, sal = X[:deletion_samples], sal[:deletion_samples]  # 2 forward passes per step and sample
        di = deletion_insertion(forward, Xd, sal, step=step, score=score)
        ev.auc.update({"deletion_auc": float(np.nanmean(di["deletion_auc"])),
                       "insertion_auc": float(np.nanmean(di["insertion_auc"])),
                       "deletion_curve": di["deletion_curve"], "insertion_curve": di["insertion_curve"],
                       "fractions": di["fractions"], "step": step, "deletion_samples": len(Xd)})
        if random_baseline:
            rng = rng or np.random.default_rng(0)
            rand = rng.random(sal.shape)
            dr = deletion_insertion(forward, Xd, rand, step=step, score=score)
            ev.auc.update({"deletion_auc_random": float(np.nanmean(dr["deletion_auc"])),
                           "insertion_auc_random": float(np.nanmean(dr["insertion_auc"]))})
    return ev
