"""Trace-back ("reconstruction") of spec B3.1: record a model's forward pass as a chain of layer operations and map
activations back to the input layer by layer, with the transposed weights as the approximate inverse.

Works on plain ``nn.Module`` models (recorded with forward hooks) and on ``torch.export`` graphs, the MLflow pt2
format (recorded with a ``torch.fx.Interpreter``, since module hooks never fire there; spec platform facts P6/P7).
Both are turned into the same :class:`Op` records, so the inverse rules exist once:

* Linear / Conv: ``x = W^T diag(1/‖w_i‖²) (z - b)`` per output location, folded back (overlap-add) and divided by
  the overlap count, when ``W`` is wide (``m <= n``; the authors' conv rule). For a tall ``W`` (``m > n``):
  ``W^T (z - b) / s`` with ``s`` the mean squared singular value, the exact inverse of a scaled isometry (our
  choice: the row-norm rule is not exact for tall Bort weights);
* ReLU-like activations, dropout: identity; max/avg pooling: nearest-neighbour up-sampling;
  batch norm (inference statistics): its affine map inverted; flatten/view: reshape.

Only a forward pass that is a chain (each operation consuming the previous one's output) can be traced back whole;
residual networks cannot, and :func:`record` says why.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

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
    """An operation (or model structure) the trace-back rules do not cover."""


@dataclass
class Op:
    """One layer operation, whatever it was recorded from. ``kind``: identity, activation, linear, conv, pool,
    norm, reshape or unsupported (with ``why``)."""

    kind: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    conv: dict[str, Any] = field(default_factory=dict)  # stride, padding, dilation, groups
    norm: dict[str, Any] = field(default_factory=dict)  # mean, var, eps, weight, bias
    why: str = ""

    @property
    def has_weight(self) -> bool:
        return self.kind in ("linear", "conv")


@dataclass
class Step:
    name: str
    op: Op
    inp: torch.Tensor
    out: torch.Tensor


@dataclass
class Recording:
    """A recorded forward pass: the steps in order, the model output and why it is not a chain (None if it is)."""

    steps: list[Step]
    out: Any
    problem: str | None


# --------------------------------------------------------------------------------------------- nn.Module -> Op
def _conv_padding(padding: Any, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * len(kernel)
        return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
    return tuple(padding)


def _tuple(value: Any, nd: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),) * nd


def op_from_module(mod: nn.Module) -> Op:
    """The :class:`Op` of one leaf module."""
    if isinstance(mod, _ACTIVATIONS):
        return Op("activation")
    if isinstance(mod, _IDENTITY):
        return Op("identity")
    if isinstance(mod, nn.Linear):
        return Op("linear", mod.weight, mod.bias)
    if isinstance(mod, _CONVS):
        if getattr(mod, "padding_mode", "zeros") != "zeros":
            return Op("unsupported", why=f"a convolution with padding_mode={mod.padding_mode!r}")
        return Op("conv", mod.weight, mod.bias, conv={
            "stride": tuple(mod.stride), "dilation": tuple(mod.dilation), "groups": mod.groups,
            "padding": _conv_padding(mod.padding, mod.kernel_size, mod.dilation)})
    if isinstance(mod, _POOLS):
        return Op("pool")
    if isinstance(mod, _NORMS):
        if mod.training or mod.running_var is None:
            return Op("unsupported", why="a batch norm without inference statistics")
        return Op("norm", norm={"mean": mod.running_mean, "var": mod.running_var, "eps": mod.eps,
                                "weight": mod.weight if mod.affine else None, "bias": mod.bias if mod.affine else None})
    if isinstance(mod, _RESHAPES):
        return Op("reshape")
    return Op("unsupported", why=f"no trace-back rule for {type(mod).__name__}")


# --------------------------------------------------------------------------------------------- fx node -> Op
def _aten(*names: str) -> set[Any]:
    out = set()
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            out.add(packet)
    return out


_FX_ACTIVATIONS = _aten("relu", "relu_", "leaky_relu", "leaky_relu_", "elu", "gelu", "silu", "silu_", "celu", "selu",
                        "softplus", "mish", "hardtanh", "hardtanh_")
_FX_IDENTITY = _aten("dropout", "clone", "alias", "contiguous", "detach")
_FX_POOLS = _aten("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
                  "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                  "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d")
_FX_RESHAPES = _aten("flatten", "view", "reshape", "_unsafe_view", "unflatten")
_FX_CONVS = _aten("conv1d", "conv2d", "conv3d")


def _arg(node: Any, env: dict[Any, Any], index: int, name: str, default: Any = None) -> Any:
    value = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
    return env[value] if isinstance(value, torch.fx.Node) else value


def op_from_node(node: Any, env: dict[Any, Any]) -> Op:
    """The :class:`Op` of one ``call_function`` node of a ``torch.export`` graph (aten operators)."""
    packet = getattr(node.target, "overloadpacket", None)
    if packet in _FX_ACTIVATIONS:
        return Op("activation")
    if packet in _FX_IDENTITY:
        return Op("identity")
    if packet in _FX_POOLS:
        return Op("pool")
    if packet in _FX_RESHAPES:
        return Op("reshape")
    if packet == torch.ops.aten.linear:
        return Op("linear", _arg(node, env, 1, "weight"), _arg(node, env, 2, "bias"))
    if packet in _FX_CONVS or packet == torch.ops.aten.convolution:
        w = _arg(node, env, 1, "weight")
        nd = w.ndim - 2
        if packet == torch.ops.aten.convolution:
            if _arg(node, env, 6, "transposed", False):
                return Op("unsupported", why="no trace-back rule for a transposed convolution")
            groups = _arg(node, env, 8, "groups", 1)
        else:
            groups = _arg(node, env, 6, "groups", 1)
        dilation = _tuple(_arg(node, env, 5, "dilation", 1), nd)
        padding = _arg(node, env, 4, "padding", 0)
        padding = _conv_padding(padding if isinstance(padding, str) else _tuple(padding, nd), w.shape[2:], dilation)
        return Op("conv", w, _arg(node, env, 2, "bias"), conv={
            "stride": _tuple(_arg(node, env, 3, "stride", 1), nd), "dilation": dilation, "groups": int(groups),
            "padding": padding})
    if packet in (torch.ops.aten.batch_norm, torch.ops.aten._native_batch_norm_legit_no_training):
        if packet == torch.ops.aten.batch_norm and _arg(node, env, 5, "training", False):
            return Op("unsupported", why="a batch norm in training mode")
        eps_index = 7 if packet == torch.ops.aten.batch_norm else 6
        return Op("norm", norm={"weight": _arg(node, env, 1, "weight"), "bias": _arg(node, env, 2, "bias"),
                                "mean": _arg(node, env, 3, "running_mean"), "var": _arg(node, env, 4, "running_var"),
                                "eps": float(_arg(node, env, eps_index, "eps", 1e-5))})
    return Op("unsupported", why=f"no trace-back rule for {node.target}")


# --------------------------------------------------------------------------------------------- recording
def is_graph(module: Any) -> bool:
    return isinstance(module, torch.fx.GraphModule)


def _record_module(module: nn.Module, x: torch.Tensor) -> Recording:
    steps: list[Step] = []
    handles = []
    for name, mod in module.named_modules():
        if list(mod.children()):
            continue

        def hook(m, args, out, name=name):
            inp = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
            steps.append(Step(name, op_from_module(m), inp, out if isinstance(out, torch.Tensor) else None))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    return Recording(steps, out, _module_chain_problem(steps, x, out))


def _module_chain_problem(steps: Sequence[Step], x: torch.Tensor, out: Any) -> str | None:
    if not steps:
        return "the model has no sub-modules to trace back through"
    first = steps[0].inp
    if first is None or not (first is x or (first.shape == x.shape and torch.equal(first, x))):
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


def _run_graph(gm: Any, x: torch.Tensor) -> tuple[dict[Any, Any], Any]:
    """Every node's value in one forward pass of a ``torch.export`` graph."""
    env: dict[Any, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):  # noqa: D401 - torch.fx API
            result = super().run_node(n)
            env[n] = result
            return result

    with torch.no_grad():
        out = Recorder(gm).run(x)
    return env, out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out


def node_name(node: Any) -> str:
    """The original module's name where the graph remembers it (``0``, ``features.3``), else the node's name."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        name = str(path).replace("L['self'].", "").replace("L__self___", "")
        if name:
            return name
    return node.name


def _is_tensor_value(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, tuple) and bool(value)
                                               and isinstance(value[0], torch.Tensor))


def _compute_nodes(gm: Any, env: dict[Any, Any]) -> list[Any]:
    """The graph's tensor operations in order (parameter reads, guards, symbolic sizes and tuple unpacking left
    out)."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is not operator.getitem
            and _is_tensor_value(env.get(n))]


def _data_inputs(node: Any, env: dict[Any, Any]) -> list[Any]:
    """The nodes an operation reads that are activations (not parameters, buffers or symbolic sizes)."""
    nodes = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, torch.fx.Node)]
    nodes += [b for a in node.args if isinstance(a, (list, tuple)) for b in a if isinstance(b, torch.fx.Node)]
    return [a for a in nodes if a.op != "get_attr" and isinstance(env.get(a), torch.Tensor)]


def _unpacked(node: Any) -> Any:
    """The first element of a tuple-valued node (max-pool with indices, native batch norm), when that is its
    only use; else the node itself."""
    users = list(node.users)
    if len(users) == 1 and users[0].target is operator.getitem and users[0].args[1] == 0:
        return users[0]
    return node


def _record_graph(gm: Any, x: torch.Tensor) -> Recording:
    env, out = _run_graph(gm, x)
    nodes = _compute_nodes(gm, env)
    steps, problem = [], None
    prev = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
    names: dict[str, int] = {}
    for node in nodes:
        inputs = _data_inputs(node, env)
        if problem is None and (len(inputs) != 1 or inputs[0] is not prev):
            problem = (f"operation '{node.name}' ({node.target}) does not take only the output of the previous "
                       "operation (residual connections or several inputs)")
        name = node_name(node)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}:{node.name}"
        value_node = _unpacked(node)
        steps.append(Step(name, op_from_node(node, env), env.get(inputs[0]) if inputs else None, env[value_node]))
        prev = value_node
    if not steps and problem is None:
        problem = "the graph has no operations to trace back through"
    output = next((n for n in gm.graph.nodes if n.op == "output"), None)
    if problem is None and output is not None:
        result = output.args[0]
        result = result[0] if isinstance(result, (tuple, list)) and len(result) == 1 else result
        if result is not prev:
            problem = "the graph output is not the result of its last operation"
    return Recording(steps, out, problem)


def record(module: Any, x: torch.Tensor) -> Recording:
    """Record one forward pass of ``module`` (an ``nn.Module`` or a ``torch.export`` graph) on ``x``."""
    return _record_graph(module, x) if is_graph(module) else _record_module(module, x)


def weight_steps(module: Any, x: torch.Tensor, visit: Callable[[Step], None]) -> None:
    """Call ``visit`` with the step of every Linear/Conv operation on its real input, first call of each only,
    for any structure (residual networks included). Module hooks compute inside the forward pass, so
    activations are not all kept at once."""
    seen: set[str] = set()
    if is_graph(module):
        rec_env, _ = _run_graph(module, x)
        for node in _compute_nodes(module, rec_env):
            op = op_from_node(node, rec_env)
            inputs = _data_inputs(node, rec_env)
            name = node_name(node)
            if op.has_weight and inputs and name not in seen:
                seen.add(name)
                visit(Step(name, op, rec_env[inputs[0]], rec_env[node]))
        return
    handles = []
    for name, mod in module.named_modules():
        if not isinstance(mod, (nn.Linear,) + _CONVS):
            continue

        def hook(m, args, out, name=name):
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if inp is not None and isinstance(out, torch.Tensor) and name not in seen:
                seen.add(name)
                visit(Step(name, op_from_module(m), inp, out))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------- inverses
def _fit_spatial(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad or crop the trailing spatial dims of ``x`` to ``size``."""
    nd = len(size)
    pads: list[int] = []
    for cur, want in zip(reversed(x.shape[-nd:]), reversed(list(size))):
        pads += [0, max(0, want - cur)]
    if any(pads):
        x = F.pad(x, pads)
    return x[(Ellipsis,) + tuple(slice(0, s) for s in size)]


def _row_scale(W: torch.Tensor) -> torch.Tensor:
    """Per-row factors of the transpose inverse: ``1/‖w_i‖²`` (wide) or ``1/s`` for every row (tall)."""
    Wm = W.detach().reshape(W.shape[0], -1)
    m, n = Wm.shape
    if m <= n:
        sq = Wm.square().sum(1)
        return torch.where(sq > 0, 1.0 / sq.clamp_min(1e-30), torch.zeros_like(sq))
    s = Wm.square().sum() / n
    return torch.full((m,), float(1.0 / s) if s > 0 else 0.0, dtype=W.dtype, device=W.device)


def _invert_conv(op: Op, z: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    W = op.weight
    nd = W.ndim - 2
    view = (1, -1) + (1,) * nd
    zc = z - op.bias.reshape(view) if op.bias is not None else z
    y = zc * _row_scale(W).reshape(view)
    tconv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    c = op.conv
    x = tconv(y, W, stride=c["stride"], padding=c["padding"], groups=c["groups"], dilation=c["dilation"])
    ones_k = torch.ones((1, 1, *W.shape[2:]), dtype=z.dtype, device=z.device)
    count = tconv(torch.ones((1, 1, *z.shape[2:]), dtype=z.dtype, device=z.device), ones_k,
                  stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    x, count = _fit_spatial(x, shape[2:]), _fit_spatial(count, shape[2:])
    return torch.where(count > 0, x / count.clamp_min(1.0), torch.zeros_like(x))


def _invert_norm(op: Op, z: torch.Tensor) -> torch.Tensor:
    view = (1, -1) + (1,) * (z.ndim - 2)
    n = op.norm
    std = (n["var"] + n["eps"]).sqrt().reshape(view)
    mean = n["mean"].reshape(view)
    g, b = n.get("weight"), n.get("bias")
    if g is None:
        return (z - (b.reshape(view) if b is not None else 0.0)) * std + mean
    g = g.reshape(view)
    b = b.reshape(view) if b is not None else torch.zeros_like(g)
    safe = torch.where(g.abs() > 1e-12, g, torch.ones_like(g))
    return torch.where(g.abs() > 1e-12, (z - b) / safe, torch.zeros_like(z)) * std + mean


def invert_step(step: Step, z: torch.Tensor) -> torch.Tensor:
    """Map ``z`` (shaped like ``step.out``) back to the shape of ``step.inp`` by the rules of B3.1."""
    op, shape = step.op, step.inp.shape
    if op.kind in ("identity", "activation"):
        return z
    if op.kind == "linear":
        zc = z - op.bias if op.bias is not None else z
        return (zc * _row_scale(op.weight)) @ op.weight
    if op.kind == "conv":
        return _invert_conv(op, z, shape)
    if op.kind == "pool":
        return F.interpolate(z, size=tuple(shape[2:]), mode="nearest")
    if op.kind == "norm":
        return _invert_norm(op, z)
    if op.kind == "reshape":
        return z.reshape(shape)
    raise NotInvertible(f"'{step.name}': {op.why or 'no trace-back rule'}")


def traceback(steps: Sequence[Step], tap: int, z: torch.Tensor) -> torch.Tensor:
    """Trace ``z`` (shaped like the output of ``steps[tap]``) back to the model input."""
    for step in reversed(steps[: tap + 1]):
        z = invert_step(step, z)
    return z


def default_taps(steps: Sequence[Step]) -> list[int]:
    """Chain positions to trace back from: every activation's output, or, without activations, every Linear/Conv
    output; the final classifier's output is not a tap."""
    weights = [i for i, s in enumerate(steps) if s.op.has_weight]
    last_weight = weights[-1] if weights else len(steps)
    taps = [i for i, s in enumerate(steps) if s.op.kind == "activation" and i < last_weight]
    return taps or [i for i in weights if i < last_weight]


def saliency_tap(steps: Sequence[Step], layer: str | None) -> int:
    """The chain position whose activations are traced back for saliency: ``layer`` when given, else the
    operation just before the last Linear/Conv (the features the classifier reads)."""
    names = [s.name for s in steps]
    if layer is not None:
        if layer not in names:
            raise KeyError(layer)
        return names.index(layer)
    weights = [i for i, s in enumerate(steps) if s.op.has_weight]
    if not weights or weights[-1] == 0:
        return max(len(steps) - 2, 0)
    return weights[-1] - 1


def relative_error(x: torch.Tensor, xh: torch.Tensor) -> tuple[list[float], list[float]]:
    """(relative error ‖x - x̂‖/‖x‖, cosine(x, x̂)) per sample; NaN where ‖x‖ = 0."""
    a = x.detach().reshape(len(x), -1).double()
    b = xh.detach().reshape(len(xh), -1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    nan = torch.full_like(na, math.nan)
    rel = torch.where(na > 0, (a - b).norm(dim=1) / na.clamp_min(1e-300), nan)
    cos = torch.where((na > 0) & (nb > 0), (a * b).sum(1) / (na * nb).clamp_min(1e-300), nan)
    return rel.tolist(), cos.tolist()
