"""A differentiable torch view of an ONNX graph, for gradient and activation methods on ONNX models.

Why our own and not onnx2torch: onnx2torch (last release Aug 2024) imports torchvision eagerly, which has
no CPU build that matches current torch wheels, and it has no converter for the Reshape-19 nodes that
torch 2.13's default exporter writes. This module interprets the graph node by node with torch
functions; weights become parameters, so input gradients and every intermediate tensor are available.
Unsupported operators are reported up front (:func:`unsupported_ops`) so the caller can fall back to
forward-only mode with a precise reason.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

_OPS: dict[str, Callable[..., Any]] = {}


def _op(*names: str):
    def deco(fn):
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


def unsupported_ops(model: Any) -> list[str]:
    """Operator types in ``model`` (an onnx.ModelProto) that this view cannot run."""
    return sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in _OPS}
                  | {f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})


def build_torch_view(model: Any) -> Any:
    """Return a ``torch.nn.Module`` computing ``model``'s first output. Raises ValueError if unsupported."""
    import onnx
    import torch
    from onnx import numpy_helper

    bad = unsupported_ops(model)
    if bad:
        raise ValueError(f"operators without a torch equivalent here: {', '.join(bad)}")

    class _View(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = model.graph
            self._const: dict[str, Any] = {}
            self._param_names: dict[str, str] = {}
            for i, init in enumerate(g.initializer):
                arr = numpy_helper.to_array(init)
                t = torch.from_numpy(np.array(arr))
                key = f"p{i}"
                if t.is_floating_point():
                    self.register_parameter(key, torch.nn.Parameter(t.float(), requires_grad=False))
                    self._param_names[init.name] = key
                else:
                    self._const[init.name] = t
            self.initializer_names = {init.name for init in g.initializer}
            self.input_names = [i.name for i in g.input if i.name not in self.initializer_names]
            self.output_names = [o.name for o in g.output]
            self.nodes = list(g.node)
            self.node_names = [n.name or f"{n.op_type}_{k}" for k, n in enumerate(self.nodes)]
            self.attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in self.nodes]

        def run(self, x: Any, record: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
            env: dict[str, Any] = dict(self._const)
            for onnx_name, key in self._param_names.items():
                env[onnx_name] = getattr(self, key)
            env[self.input_names[0]] = x
            wanted = set(record)
            acts: dict[str, Any] = {}
            for name, node, attrs in zip(self.node_names, self.nodes, self.attrs):
                ins = [env[i] if i else None for i in node.input]
                outs = _OPS[node.op_type](ins, attrs)
                if not isinstance(outs, (tuple, list)):
                    outs = (outs,)
                for oname, val in zip(node.output, outs):
                    env[oname] = val
                if name in wanted:
                    acts[name] = outs[0]
            return env[self.output_names[0]], acts

        def forward(self, x: Any) -> Any:
            return self.run(x)[0]

    view = _View()
    view.eval()
    return view


# ----------------------------------------------------------------------------------------- operators
def _t():
    import torch

    return torch


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if hasattr(t, "tolist") else t)]


@_op("Identity", "Dropout")
def _identity(i, a):
    return i[0]


@_op("Relu")
def _relu(i, a):
    return _t().relu(i[0])


@_op("LeakyRelu")
def _leaky(i, a):
    return _t().nn.functional.leaky_relu(i[0], a.get("alpha", 0.01))


@_op("Sigmoid")
def _sigmoid(i, a):
    return _t().sigmoid(i[0])


@_op("Tanh")
def _tanh(i, a):
    return _t().tanh(i[0])


@_op("Erf")
def _erf(i, a):
    return _t().erf(i[0])


@_op("Exp")
def _exp(i, a):
    return _t().exp(i[0])


@_op("Log")
def _log(i, a):
    return _t().log(i[0])


@_op("Sqrt")
def _sqrt(i, a):
    return _t().sqrt(i[0])


@_op("Neg")
def _neg(i, a):
    return -i[0]


@_op("Abs")
def _abs(i, a):
    return i[0].abs()


@_op("Add")
def _add(i, a):
    return i[0] + i[1]


@_op("Sub")
def _sub(i, a):
    return i[0] - i[1]


@_op("Mul")
def _mul(i, a):
    return i[0] * i[1]


@_op("Div")
def _div(i, a):
    return i[0] / i[1]


@_op("Pow")
def _pow(i, a):
    return _t().pow(i[0], i[1])


@_op("Clip")
def _clip(i, a):
    lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
    hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
    return _t().clamp(i[0], None if lo is None else float(lo), None if hi is None else float(hi))


@_op("Softmax")
def _softmax(i, a):
    return _t().softmax(i[0], dim=a.get("axis", -1))


@_op("LogSoftmax")
def _logsoftmax(i, a):
    return _t().log_softmax(i[0], dim=a.get("axis", -1))


@_op("Gelu")
def _gelu(i, a):
    return _t().nn.functional.gelu(i[0], approximate="tanh" if a.get("approximate", b"none") in (b"tanh", "tanh") else "none")


@_op("MatMul")
def _matmul(i, a):
    return _t().matmul(i[0], i[1])


@_op("Gemm")
def _gemm(i, a):
    A, B = i[0], i[1]
    if a.get("transA", 0):
        A = A.transpose(-1, -2)
    if a.get("transB", 0):
        B = B.transpose(-1, -2)
    y = a.get("alpha", 1.0) * (A @ B)
    if len(i) > 2 and i[2] is not None:
        y = y + a.get("beta", 1.0) * i[2]
    return y


def _pads(a, nd):
    pads = list(a.get("pads", [0] * (2 * nd)))
    return pads[:nd], pads[nd:]


@_op("Conv")
def _conv(i, a):
    F = _t().nn.functional
    x, w = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    nd = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise NotImplementedError("Conv auto_pad SAME_* is not supported")
    begin, end = _pads(a, nd)
    if begin != end:
        x = F.pad(x, [p for pair in zip(reversed(begin), reversed(end)) for p in pair])
        begin = [0] * nd
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride=a.get("strides", [1] * nd), padding=begin,
                dilation=a.get("dilations", [1] * nd), groups=a.get("group", 1))


@_op("MaxPool")
def _maxpool(i, a):
    F = _t().nn.functional
    k = a["kernel_shape"]
    nd = len(k)
    begin, end = _pads(a, nd)
    x = i[0]
    if begin != end:
        x = F.pad(x, [p for pair in zip(reversed(begin), reversed(end)) for p in pair], value=float("-inf"))
        begin = [0] * nd
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return pool(x, k, stride=a.get("strides", [1] * nd), padding=begin, dilation=a.get("dilations", [1] * nd),
                ceil_mode=bool(a.get("ceil_mode", 0)))


@_op("AveragePool")
def _avgpool(i, a):
    F = _t().nn.functional
    k = a["kernel_shape"]
    nd = len(k)
    begin, end = _pads(a, nd)
    if begin != end:
        raise NotImplementedError("asymmetric AveragePool padding is not supported")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return pool(i[0], k, stride=a.get("strides", [1] * nd), padding=begin, ceil_mode=bool(a.get("ceil_mode", 0)),
                count_include_pad=bool(a.get("count_include_pad", 0)))


@_op("GlobalAveragePool")
def _gap(i, a):
    x = i[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@_op("GlobalMaxPool")
def _gmp(i, a):
    x = i[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@_op("BatchNormalization")
def _bn(i, a):
    x, scale, bias, mean, var = i[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean.reshape(shape)) / _t().sqrt(var.reshape(shape) + a.get("epsilon", 1e-5)) * scale.reshape(shape) + bias.reshape(shape)


@_op("Flatten")
def _flatten(i, a):
    x = i[0]
    axis = a.get("axis", 1)
    axis = axis if axis >= 0 else x.dim() + axis
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


@_op("Reshape")
def _reshape(i, a):
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


@_op("Transpose")
def _transpose(i, a):
    x = i[0]
    perm = a.get("perm", list(reversed(range(x.dim()))))
    return x.permute(*perm)


@_op("Concat")
def _concat(i, a):
    return _t().cat([v for v in i if v is not None], dim=a["axis"])


@_op("Shape")
def _shape(i, a):
    torch = _t()
    shape = list(i[0].shape)[a.get("start", 0): a.get("end", None)]
    return torch.tensor(shape, dtype=torch.int64)


@_op("Constant")
def _constant(i, a):
    from onnx import numpy_helper

    torch = _t()
    if "value" in a:
        return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
    for key in ("value_float", "value_int"):
        if key in a:
            return torch.tensor(a[key])
    for key in ("value_floats", "value_ints"):
        if key in a:
            return torch.tensor(list(a[key]))
    raise NotImplementedError(f"Constant with attributes {sorted(a)}")


@_op("Gather")
def _gather(i, a):
    x, idx = i[0], i[1]
    axis = a.get("axis", 0)
    return x.index_select(axis, idx.reshape(-1).long()).reshape(
        list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@_op("Unsqueeze")
def _unsqueeze(i, a):
    x = i[0]
    axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a["axes"])
    out_rank = x.dim() + len(axes)
    for ax in sorted(ax if ax >= 0 else ax + out_rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


@_op("Squeeze")
def _squeeze(i, a):
    x = i[0]
    axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax if ax >= 0 else ax + x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


@_op("Cast")
def _cast(i, a):
    import onnx

    torch = _t()
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(a["to"])
    return i[0].to(torch.from_numpy(np.zeros(1, dtype=np_dtype)).dtype)


def _make_reduce(fn_name: str):
    def run(i, a):
        x = i[0]
        axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else a.get("axes")
        keep = bool(a.get("keepdims", 1))
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return getattr(x, fn_name)(dim=tuple(axes), keepdim=keep)

    return run


for _name, _fn in {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin"}.items():
    _OPS[_name] = _make_reduce(_fn)


@_op("Slice")
def _slice(i, a):
    x = i[0]
    starts, ends = _ints(i[1]), _ints(i[2])
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st != 1:
            raise NotImplementedError("Slice with steps other than 1")
        n = x.shape[ax]
        index[ax] = slice(max(min(s, n), -n), max(min(e, n), -n - 1))
    return x[tuple(index)]
