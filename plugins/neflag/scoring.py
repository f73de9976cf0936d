"""The explained scalar f_c(x) (spec §A2.1) on top of a model's raw outputs, for NeFLAG and its baselines.

A model's raw outputs are logits (the host's convention), probabilities (a model that ends in softmax,
detected from the outputs), or one binary logit. Every method here explains the same transformed output:
``prob`` (softmax probability, the paper-likely default), ``logit`` or ``log_prob``.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
import torch

Output = Literal["prob", "logit", "log_prob"]
OutputKind = Literal["logits", "probabilities", "binary_logit"]


def detect_output_kind(raw: np.ndarray) -> OutputKind:
    """How to read the model's raw outputs (checked on the explained inputs)."""
    from governance.quality import outputs_are_probabilities

    flat = np.asarray(raw).reshape(len(raw), -1)
    if flat.shape[1] == 1:
        return "binary_logit"
    return "probabilities" if outputs_are_probabilities(flat) else "logits"


def to_logits(out: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """Class logits ``(B, C)`` from raw outputs; a binary logit z becomes (−z/2, z/2), so that the
    softmax gives sigmoid(z) for class 1, and probabilities become log-probabilities."""
    out = out.reshape(len(out), -1)
    if kind == "binary_logit":
        return torch.cat([-0.5 * out, 0.5 * out], dim=1)
    if kind == "probabilities":
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
    return out


def transform(out: torch.Tensor, kind: OutputKind, output: Output) -> torch.Tensor:
    logits = to_logits(out, kind)
    if output == "prob":
        return torch.softmax(logits, dim=1)
    if output == "log_prob":
        return torch.log_softmax(logits, dim=1)
    return logits


class ScoreOutputs(torch.nn.Module):
    """``module`` followed by the output transform: what Captum's baselines explain (with ``target``)."""

    def __init__(self, module: Any, kind: OutputKind, output: Output) -> None:
        super().__init__()
        self.inner = module
        self.kind = kind
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return transform(self.inner(x), self.kind, self.output)


def gradient_score_fn(module: Any, kind: OutputKind, output: Output) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Differentiable ``score(points, targets) -> (P,)`` through the torch module."""

    def score(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = transform(module(points), kind, output)
        return values.gather(1, targets.reshape(-1, 1).to(values.device)).squeeze(1)

    return score


def forward_score_fn(predict: Callable[[np.ndarray], np.ndarray], dtype: np.dtype, kind: OutputKind,
                     output: Output) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Forward-only ``score(points, targets)`` through ``predict`` (ONNX Runtime for ONNX models), for
    NeFLAG's finite-difference mode; computed in float64 from the model's outputs."""

    def score(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raw = predict(points.detach().cpu().numpy().astype(dtype, copy=False))
        values = transform(torch.from_numpy(np.asarray(raw, dtype=np.float64)), kind, output)
        got = values.gather(1, targets.reshape(-1, 1).cpu()).squeeze(1)
        return got.to(device=points.device, dtype=points.dtype)

    return score


def module_device(module: Any, fallback: str = "cpu") -> torch.device:
    p = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return p.device if p is not None else torch.device(fallback)
