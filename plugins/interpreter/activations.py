"""Reading the predictor's hidden layers: the default choice of taps, and the one-off activation cache.

Post-hoc FLINT never changes the predictor, so its tapped activations and outputs are computed once (one
batched, gradient-free pass over the data) and every training epoch reads them from memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from governance.errors import MethodError


def _per_sample(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape[1:])


def _is_spatial(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[1] * shape[2] > 1


def probe_activations(model: Any, x: np.ndarray, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One small gradient-free forward pass returning the output and the named activations."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(model.device)
    with torch.no_grad():
        return model.forward_with_activations(xt, list(layers))


def choose_default_layers(model: Any, x_probe: np.ndarray, image: bool) -> tuple[list[str], str]:
    """The spec's default taps (A2.4, A6) for a LoadedModel: see :func:`pick_layers`."""
    names = model.layer_names()
    if not names:
        raise MethodError(f"{model.info.display_name} exposes no hidden layers",
                          hint="FLINT needs a torch view of the model with named layers")
    out, acts = probe_activations(model, x_probe, names)
    return pick_layers(out, acts, image, names, model.info.display_name)


def pick_layers(out: torch.Tensor, acts: dict[str, Any], image: bool, names: Sequence[str],
                what: str = "the model") -> tuple[list[str], str]:
    """The output of the last hidden stage and of the stage before it.

    ``acts`` maps layer names to their activations in execution order. Candidates are float tensors with
    the batch axis that come before the layer producing the model's output. For image models only spatial
    maps (C, H, W) with more than one position count (late convolutional outputs); otherwise any hidden
    tensor. The last candidate is tapped, plus the closest earlier candidate of a different shape (the
    previous stage), if any. Returns (layers, a sentence saying why, for the report).
    """
    n = out.shape[0]
    ordered = [(k, v) for k, v in acts.items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 2 and v.shape[0] == n]
    # cut at the first layer that produces the model's output (and everything after it)
    end = next((i for i, (_, v) in enumerate(ordered)
                if v.shape == out.shape and torch.allclose(v, out, rtol=0, atol=1e-6)), None)
    if end is None:  # the output is post-processed: drop trailing layers shaped like the output
        end = len(ordered)
        while end > 0 and ordered[end - 1][1].shape == out.shape:
            end -= 1
    hidden = ordered[:end]
    candidates = [(k, _per_sample(v)) for k, v in hidden if _is_spatial(_per_sample(v))] if image else []
    kind = "feature maps"
    if not candidates:
        candidates = [(k, _per_sample(v)) for k, v in hidden]
        kind = "hidden layers"
    if not candidates:
        raise MethodError(
            f"{what} has no hidden layer before its output that FLINT can read",
            hint=f"name the layers to tap with the 'layers' option; available layers: {', '.join(names)}",
        )
    last_name, last_shape = candidates[-1]
    chosen = [last_name]
    previous = next(((k, s) for k, s in reversed(candidates) if s != last_shape), None)
    if previous is not None:
        chosen.insert(0, previous[0])
    why = (f"default taps: the last two {kind} of different shapes before the output "
           f"({', '.join(f'{k} {list(s)}' for k, s in candidates if k in chosen)})")
    return chosen, why


class ActivationSource(Protocol):
    """Mini-batches of the frozen predictor's tapped activations and class logits, by row index."""

    layers: list[str]

    def __len__(self) -> int: ...

    def batch(self, idx: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]: ...


@dataclass
class ActivationCache:
    """The predictor's tapped activations and raw outputs on a fixed set of inputs, held in memory.

    ``class_logits`` (set by :meth:`with_class_logits`) are what training imitates; ``rows`` gives a view of
    consecutive rows without copying (training rows first, held-out rows after them)."""

    acts: list[torch.Tensor]  # one (n, *shape) tensor per tapped layer, in the order of ``layers``
    outputs: torch.Tensor  # (n, n_outputs) raw predictor outputs
    layers: list[str]
    forward_calls: int = 0  # predictor forward passes spent building the cache
    class_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def nbytes(self) -> int:
        return sum(a.element_size() * a.numel() for a in self.acts) + self.outputs.element_size() * self.outputs.numel()

    def with_class_logits(self, transform: str) -> "ActivationCache":
        self.class_logits = apply_output_transform(self.outputs, transform)
        return self

    def batch(self, idx: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [a[idx].float() for a in self.acts], self.class_logits[idx]

    def rows(self, start: int, stop: int) -> "ActivationCache":
        sl = slice(start, stop)
        return ActivationCache([a[sl] for a in self.acts], self.outputs[sl], self.layers, 0,
                               None if self.class_logits is None else self.class_logits[sl])

    def subset(self, idx: torch.Tensor) -> "ActivationCache":
        return ActivationCache([a[idx] for a in self.acts], self.outputs[idx], self.layers, 0,
                               None if self.class_logits is None else self.class_logits[idx])


class StreamingActivations:
    """The same interface without memory: every mini-batch re-runs the frozen predictor (no gradients).

    Used when the cache would not fit (``max_cache_mb``): it costs one predictor forward pass per sample per
    epoch instead of one in all."""

    def __init__(self, model: Any, X: np.ndarray, layers: Sequence[str], transform: str) -> None:
        self.model, self.X, self.layers, self.transform = model, X, list(layers), transform
        self.forward_calls = 0

    def __len__(self) -> int:
        return len(self.X)

    def batch(self, idx: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        xb = torch.from_numpy(np.ascontiguousarray(self.X[idx.cpu().numpy()])).to(self.model.device)
        with torch.no_grad():
            out, got = self.model.forward_with_activations(xb, self.layers)
        self.forward_calls += 1
        acts = [_tensor_output(got, name, self.model).float() for name in self.layers]
        return acts, apply_output_transform(out.detach().reshape(len(xb), -1), self.transform)

    def rows(self, start: int, stop: int) -> "StreamingActivations":
        return StreamingActivations(self.model, self.X[start:stop], self.layers, self.transform)


def _tensor_output(got: dict[str, Any], name: str, model: Any) -> torch.Tensor:
    if name not in got or not isinstance(got[name], torch.Tensor):
        raise MethodError(f"layer '{name}' of {model.info.display_name} produced no tensor output",
                          hint="tap a layer whose output is a single tensor")
    return got[name].detach()


def bytes_per_sample(shapes: Sequence[Sequence[int]], dtype: torch.dtype) -> int:
    return int(sum(np.prod(s) for s in shapes)) * torch.tensor([], dtype=dtype).element_size()


def build_cache(
    model: Any,
    X: np.ndarray,
    layers: Sequence[str],
    *,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[float], None] | None = None,
) -> ActivationCache:
    """Run the frozen predictor once over ``X`` (no gradients) and keep the activations at ``layers``."""
    acts: list[list[torch.Tensor]] = [[] for _ in layers]
    outs: list[torch.Tensor] = []
    calls = 0
    for start in range(0, len(X), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(X[start : start + batch_size])).to(model.device)
        with torch.no_grad():
            out, got = model.forward_with_activations(xb, list(layers))
        calls += 1
        for k, name in enumerate(layers):
            acts[k].append(_tensor_output(got, name, model).to("cpu", dtype))
        outs.append(out.detach().to("cpu", torch.float32).reshape(len(xb), -1))
        if progress is not None:
            progress(min(1.0, (start + len(xb)) / len(X)))
    return ActivationCache([torch.cat(a) for a in acts], torch.cat(outs), list(layers), calls)


def output_transform(outputs: torch.Tensor) -> str:
    """How the predictor's raw outputs become class logits (decided once, on a cache or a probe batch).

    Logits pass through. Rows that are probability vectors (non-negative, summing to 1) become log-probabilities
    (softmax of them gives the probabilities back). A single output column is read as a binary logit
    (or a probability when it lies in [0, 1]) and expanded to two classes."""
    out = outputs.float()
    if out.shape[1] == 1:
        z = out[:, 0]
        if bool(((z >= 0) & (z <= 1)).all()) and not bool(((z == 0) | (z == 1)).all()):
            return "binary probability -> logit, two classes"
        return "binary logit, two classes"
    if bool((out >= 0).all()) and torch.allclose(out.sum(dim=1), torch.ones(len(out)), atol=1e-4):
        return "probabilities -> log-probabilities"
    return "logits"


def apply_output_transform(outputs: torch.Tensor, how: str) -> torch.Tensor:
    out = outputs.float()
    if how.startswith("binary"):
        z = out[:, 0]
        if how.startswith("binary probability"):
            p = z.clamp(1e-7, 1 - 1e-7)
            z = torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.zeros_like(z), z], dim=1)
    if how.startswith("probabilities"):
        return torch.log(out.clamp_min(1e-12))
    return out


def as_class_logits(outputs: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Class logits from the predictor's raw outputs, and how they were obtained (see :func:`output_transform`)."""
    how = output_transform(outputs)
    return apply_output_transform(outputs, how), how
