"""Models whose batch dimension is fixed (``torch.onnx.export`` without ``dynamic_axes`` fixes it at the
example's batch, usually 1; ``torch.export`` specialises a one-row example to batch 1): every call is cut
into chunks of exactly that batch, the last one padded with copies of its last row, and the padding is
dropped from the result. The cost is one model call per chunk, which the run records."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def fixed_batch_cost(batch: int) -> str:
    """The sentence the run and the report carry for a fixed-batch model."""
    how = "one sample per call (row by row)" if batch == 1 else f"chunks of {batch} samples, the last padded"
    return (f"the model's batch dimension is fixed at {batch}: inputs run in {how}, so n samples take "
            f"ceil(n/{batch}) model calls (forward and gradient passes alike)")


def _chunks(n: int, batch: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


def run_numpy(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """``fn`` on ``x`` in chunks of exactly ``batch`` rows."""
    if len(x) == batch:
        return np.asarray(fn(x))
    parts = []
    for s, e in _chunks(len(x), batch):
        chunk = x[s:e]
        if e - s < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - (e - s), axis=0)])
        parts.append(np.asarray(fn(np.ascontiguousarray(chunk)))[: e - s])
    return np.concatenate(parts) if parts else np.asarray(fn(x))


def run_torch(fn: Callable[[Any], Any], x: Any, batch: int) -> Any:
    """``fn`` on the tensor ``x`` in chunks of exactly ``batch`` rows; differentiable. Padding rows are
    detached copies, so no gradient flows through them. ``fn`` may return a tensor or (tensor, dict of
    tensors), as ``forward_with_activations`` does; per-sample entries are concatenated."""
    import torch

    if x.shape[0] == batch:
        return fn(x)
    outs = []
    for s, e in _chunks(x.shape[0], batch):
        chunk = x[s:e]
        if e - s < batch:
            chunk = torch.cat([chunk, chunk[-1:].detach().expand(batch - (e - s), *chunk.shape[1:])])
        outs.append((fn(chunk), e - s))
    if isinstance(outs[0][0], tuple):
        main = torch.cat([o[0][:k] for o, k in outs])
        acts = {name: _cat_acts([o[1][name] for o, _ in outs], [k for _, k in outs], batch)
                for name in outs[0][0][1]}
        return main, acts
    return torch.cat([o[:k] for o, k in outs])


def _cat_acts(parts: list[Any], keep: list[int], batch: int) -> Any:
    import torch

    if all(hasattr(p, "shape") and p.dim() > 0 and p.shape[0] == batch for p in parts):
        return torch.cat([p[:k] for p, k in zip(parts, keep)])
    return parts[0]  # not per-sample (a shape, a constant): the same in every chunk


def fixed_batch_module(inner: Any, batch: int) -> Any:
    """``inner`` (an nn.Module) behind a forward that runs any batch in chunks of ``batch``; keeps
    ``run``/``node_names`` of ONNX views working."""
    import torch

    class FixedBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.fixed_batch = batch
            self.node_names = list(getattr(inner, "node_names", []))

        def forward(self, x: Any) -> Any:
            return run_torch(self.inner, x, batch)

        def run(self, x: Any, record: Any = ()) -> Any:
            return run_torch(lambda c: self.inner.run(c, record), x, batch)

    wrapper = FixedBatch()
    wrapper.training = False  # not .eval(): a torch.export graph raises on train()/eval() (platform-facts P5)
    return wrapper
