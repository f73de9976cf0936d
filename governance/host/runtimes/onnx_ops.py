"""Default-domain ONNX operators of the torch view, each ``fn(inputs, attrs) -> tensor | tuple``.

Semantics follow the ONNX operator specification at the versions that the torch exporters (TorchScript
at opset 17, dynamo at 18-20) and skl2onnx emit; where an older version differs and is not implemented,
the operator's ``limits`` refuse it up front. Every operator listed here is checked against the ONNX
backend node tests (tests/test_onnx_backend_coverage.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from governance.host.runtimes.onnx_registry import FLOAT_TYPES, NodeInfo, register


def _t():
    import torch

    return torch


def _F():
    import torch.nn.functional as F

    return F


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.reshape(-1).tolist() if hasattr(t, "tolist") else t)]


def _get(i: list, k: int) -> Any:
    return i[k] if len(i) > k else None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------------------- limits
def _min_opset(v: int, what: str):
    def check(n: NodeInfo) -> str | None:
        return f"opset {n.opset} < {v}: {what}" if n.opset < v else None

    return check


def _float_only(n: NodeInfo) -> str | None:
    bad = [t for t in n.input_types[:1] if t not in FLOAT_TYPES and t != -1]
    return "implemented for floating-point inputs only" if bad else None


def _attr_is(name: str, allowed: tuple, default: Any):
    def check(n: NodeInfo) -> str | None:
        v = n.attrs.get(name, default)
        v = _s(v) if isinstance(v, (bytes, str)) else v
        return None if v in allowed else f"{name}={v!r} is not supported (only {', '.join(map(str, allowed))})"

    return check


def _no_output(k: int, what: str):
    def check(n: NodeInfo) -> str | None:
        return f"output {k} ({what}) is not computed" if n.uses_output(k) else None

    return check


# ------------------------------------------------------------------------------------------- unary
def _unary(name: str, fn):
    register(name)(lambda i, a: fn(i[0]))


for _name, _fn in {
    "Relu": lambda x: _t().relu(x), "Sigmoid": lambda x: _t().sigmoid(x), "Tanh": lambda x: _t().tanh(x),
    "Erf": lambda x: _t().erf(x), "Exp": lambda x: _t().exp(x), "Log": lambda x: _t().log(x),
    "Sqrt": lambda x: _t().sqrt(x), "Reciprocal": lambda x: _t().reciprocal(x), "Sin": lambda x: _t().sin(x),
    "Cos": lambda x: _t().cos(x), "Tan": lambda x: _t().tan(x), "Asin": lambda x: _t().asin(x),
    "Acos": lambda x: _t().acos(x), "Atan": lambda x: _t().atan(x), "Sinh": lambda x: _t().sinh(x),
    "Cosh": lambda x: _t().cosh(x), "Asinh": lambda x: _t().asinh(x), "Acosh": lambda x: _t().acosh(x),
    "Atanh": lambda x: _t().atanh(x), "Floor": lambda x: _t().floor(x), "Ceil": lambda x: _t().ceil(x),
    "Round": lambda x: _t().round(x), "Sign": lambda x: _t().sign(x), "Abs": lambda x: x.abs(),
    "Neg": lambda x: -x, "Softsign": lambda x: x / (1 + x.abs()), "Not": lambda x: _t().logical_not(x),
    "IsNaN": lambda x: _t().isnan(x),
    "Mish": lambda x: x * _t().tanh(_F().softplus(x)),
}.items():
    _unary(_name, _fn)


@register("Identity")
def _identity(i, a):
    return i[0]


def _dropout_training(n: NodeInfo) -> str | None:
    return "training_mode input (random dropout) is not supported" if n.has_input(2) else None


@register("Dropout", limits=(_dropout_training,))
def _dropout(i, a):
    torch = _t()
    return i[0], torch.ones_like(i[0], dtype=torch.bool)


@register("Softplus")
def _softplus(i, a):
    x = i[0]
    return _t().where(x > 20, x, _t().log1p(_t().exp(x)))


@register("LeakyRelu")
def _leaky(i, a):
    return _F().leaky_relu(i[0], a.get("alpha", 0.01))


@register("Elu")
def _elu(i, a):
    x, al = i[0], a.get("alpha", 1.0)
    return _t().where(x >= 0, x, al * (_t().exp(x) - 1))


@register("Selu")
def _selu(i, a):
    x, al, g = i[0], a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    return g * _t().where(x > 0, x, al * (_t().exp(x) - 1))


@register("Celu")
def _celu(i, a):
    x, al = i[0], a.get("alpha", 1.0)
    return _t().clamp(x, min=0) + _t().clamp(al * (_t().exp(x / al) - 1), max=0)


@register("ThresholdedRelu")
def _trelu(i, a):
    x = i[0]
    return _t().where(x > a.get("alpha", 1.0), x, _t().zeros_like(x))


@register("PRelu")
def _prelu(i, a):
    x, slope = i[0], i[1]
    return _t().where(x < 0, x * slope, x)


@register("HardSigmoid")
def _hardsigmoid(i, a):
    return _t().clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1)


@register("HardSwish")
def _hardswish(i, a):
    x = i[0]
    return x * _t().clamp(x / 6 + 0.5, 0, 1)


@register("Gelu")
def _gelu(i, a):
    return _F().gelu(i[0], approximate="tanh" if _s(a.get("approximate", "none")) == "tanh" else "none")


@register("IsInf")
def _isinf(i, a):
    torch = _t()
    x = i[0]
    pos = torch.isposinf(x) if a.get("detect_positive", 1) else torch.zeros_like(x, dtype=torch.bool)
    neg = torch.isneginf(x) if a.get("detect_negative", 1) else torch.zeros_like(x, dtype=torch.bool)
    return pos | neg


# ------------------------------------------------------------------------------------------- binary
@register("Add")
def _add(i, a):
    return (i[0] + i[1]).to(i[0].dtype)


@register("Sub")
def _sub(i, a):
    return (i[0] - i[1]).to(i[0].dtype)


@register("Mul")
def _mul(i, a):
    return (i[0] * i[1]).to(i[0].dtype)


@register("Div")
def _div(i, a):
    x, y = i[0], i[1]
    if x.is_floating_point():
        return x / y
    return _t().div(x, y, rounding_mode="trunc").to(x.dtype)


@register("Pow")
def _pow(i, a):
    x, y = i[0], i[1]
    if not x.is_floating_point() and y.is_floating_point():
        return _t().pow(x.to(y.dtype), y).to(x.dtype)
    return _t().pow(x, y.to(x.dtype) if x.is_floating_point() else y).to(x.dtype)


@register("Mod")
def _mod(i, a):
    torch = _t()
    x, y = i[0], i[1]
    if a.get("fmod", 0):
        return torch.fmod(x, y)
    return torch.remainder(x, y)


for _name, _fn in {"Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge",
                   "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor"}.items():
    register(_name)(lambda i, a, _fn=_fn: getattr(_t(), _fn)(i[0], i[1]))


@register("Where")
def _where(i, a):
    return _t().where(i[0].bool(), i[1], i[2])


def _variadic(i: list, fn):
    vals = [v for v in i if v is not None]
    out = vals[0]
    for v in vals[1:]:
        out = fn(out, v)
    return out


register("Max")(lambda i, a: _variadic(i, _t().maximum))
register("Min")(lambda i, a: _variadic(i, _t().minimum))
register("Sum")(lambda i, a: _variadic(i, lambda p, q: p + q))


@register("Mean", limits=(_float_only,))
def _mean(i, a):
    vals = [v for v in i if v is not None]
    return _variadic(vals, lambda p, q: p + q) / len(vals)


@register("Clip")
def _clip(i, a):
    torch = _t()
    x = i[0]
    lo, hi = _get(i, 1), _get(i, 2)
    if lo is None and "min" in a:
        lo = torch.tensor(a["min"], dtype=x.dtype)
    if hi is None and "max" in a:
        hi = torch.tensor(a["max"], dtype=x.dtype)
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


# ------------------------------------------------------------------------------------------- softmax
def _coerced(fn_name: str):
    def run(i, a):
        x = i[0]
        info = a["__info__"]
        axis = a.get("axis", -1 if info.opset >= 13 else 1)
        if info.opset >= 13:
            return getattr(_t(), fn_name)(x, dim=axis)
        axis = axis % max(x.dim(), 1)
        shape = x.shape
        flat = x.reshape(int(np.prod(shape[:axis])) if axis else 1, -1)
        return getattr(_t(), fn_name)(flat, dim=1).reshape(shape)

    return run


register("Softmax")(_coerced("softmax"))
register("LogSoftmax")(_coerced("log_softmax"))


# ------------------------------------------------------------------------------------------- linear
def _no_half(n: NodeInfo) -> str | None:
    """torch accumulates half-precision products in float32 on CPU; a float16 reference rounds each step,
    and the two differ by a half-precision ulp (measured 4.9e-4 on the ONNX attention node tests)."""
    return "float16 products are not supported (rounding differs from a float16 runtime)" if 10 in n.input_types[:2] else None


@register("MatMul", limits=(_no_half,))
def _matmul(i, a):
    return _t().matmul(i[0], i[1])


@register("Gemm", limits=(_no_half,))
def _gemm(i, a):
    A, B = i[0], i[1]
    if a.get("transA", 0):
        A = A.transpose(-1, -2)
    if a.get("transB", 0):
        B = B.transpose(-1, -2)
    y = a.get("alpha", 1.0) * (A @ B)
    if _get(i, 2) is not None:
        y = y + a.get("beta", 1.0) * i[2]
    return y


@register("Einsum", limits=(_no_half,))
def _einsum(i, a):
    return _t().einsum(_s(a["equation"]), *[v for v in i if v is not None])


# ------------------------------------------------------------------------------------------- conv/pool
def _pads(a: dict, nd: int) -> tuple[list[int], list[int]]:
    pads = list(a.get("pads", [0] * (2 * nd)))
    return pads[:nd], pads[nd:]


def _same_pads(a: dict, spatial: Any, kernel: list[int], strides: list[int], dilations: list[int]
               ) -> tuple[list[int], list[int]]:
    """Pads for auto_pad SAME_UPPER/SAME_LOWER/VALID (ONNX spec); explicit pads otherwise."""
    mode = _s(a.get("auto_pad", "NOTSET"))
    nd = len(kernel)
    if mode == "VALID":
        return [0] * nd, [0] * nd
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        return _pads(a, nd)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-int(size) // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - int(size), 0)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin, end


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    return [p for pair in zip(reversed(begin), reversed(end)) for p in pair]


@register("Conv")
def _conv(i, a):
    F = _F()
    x, w, b = i[0], i[1], _get(i, 2)
    nd = w.dim() - 2
    strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    kernel = list(w.shape[2:])
    begin, end = _same_pads(a, x.shape[2:], kernel, strides, dil)
    if begin != end:
        x = F.pad(x, _torch_pad(begin, end))
        begin = [0] * nd
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride=strides, padding=begin, dilation=dil, groups=a.get("group", 1))


def _pool_args(a: dict, x: Any) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    k = list(a["kernel_shape"])
    nd = len(k)
    strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    begin, end = _same_pads(a, x.shape[2:], k, strides, dil)
    return k, strides, dil, begin, end


def _ceil_extra(x_shape: Any, k: list[int], s: list[int], d: list[int], begin: list[int], end: list[int]
                ) -> list[int]:
    """Extra end padding so that floor-mode pooling gives ONNX's ceil_mode output size (ONNX drops a last
    window only when it would start in the end padding)."""
    extra = []
    for size, kk, ss, dd, b, e in zip(x_shape, k, s, d, begin, end):
        eff = (kk - 1) * dd + 1
        span = int(size) + b + e - eff
        out = -(-span // ss) + 1
        if (out - 1) * ss >= int(size) + b:
            out -= 1
        extra.append(max((out - 1) * ss + eff - (int(size) + b + e), 0))
    return extra


def _maxpool_limits(n: NodeInfo) -> str | None:
    if n.uses_output(1):
        return "the Indices output is not computed"
    if n.attrs.get("storage_order", 0):
        return "storage_order=1 is not supported"
    return None


@register("MaxPool", limits=(_maxpool_limits,))
def _maxpool(i, a):
    F = _F()
    x = i[0]
    k, s, d, begin, end = _pool_args(a, x)
    nd = len(k)
    if a.get("ceil_mode", 0):
        end = [e + c for e, c in zip(end, _ceil_extra(x.shape[2:], k, s, d, begin, end))]
    if any(begin) or any(end):
        fill = float("-inf") if x.is_floating_point() else int(_t().iinfo(x.dtype).min)
        x = F.pad(x, _torch_pad(begin, end), value=fill)
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return pool(x, k, stride=s, padding=0, dilation=d)


def _avgpool_limits(n: NodeInfo) -> str | None:
    if any(v != 1 for v in n.attrs.get("dilations", [])):
        return "dilations other than 1 are not supported"
    return None


@register("AveragePool", limits=(_avgpool_limits,))
def _avgpool(i, a):
    """Sum of the window over the count of its cells: real cells only, or real and pad cells when
    count_include_pad=1 (ceil-mode overhang never counts)."""
    torch, F = _t(), _F()
    x = i[0]
    k, s, d, begin, end = _pool_args(a, x)
    nd = len(k)
    extra = _ceil_extra(x.shape[2:], k, s, d, begin, end) if a.get("ceil_mode", 0) else [0] * nd
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    xp = F.pad(x, _torch_pad(begin, [e + c for e, c in zip(end, extra)]))
    if a.get("count_include_pad", 0):
        mask = F.pad(F.pad(ones, _torch_pad(begin, end), value=1.0), _torch_pad([0] * nd, extra))
    else:
        mask = F.pad(ones, _torch_pad(begin, [e + c for e, c in zip(end, extra)]))
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return pool(xp, k, stride=s) / pool(mask, k, stride=s)


@register("GlobalAveragePool")
def _gap(i, a):
    x = i[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool")
def _gmp(i, a):
    x = i[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ------------------------------------------------------------------------------------------- normalisation
def _bn_limits(n: NodeInfo) -> str | None:
    if n.attrs.get("training_mode", 0) or any(n.uses_output(k) for k in (1, 2, 3, 4)):
        return "training mode (batch statistics) is not supported"
    if n.opset < 9 and not n.attrs.get("spatial", 1):
        return "spatial=0 is not supported"
    return None


@register("BatchNormalization", limits=(_bn_limits,))
def _bn(i, a):
    x, scale, bias, mean, var = i[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    return ((x - mean.reshape(shape)) / _t().sqrt(var.reshape(shape) + a.get("epsilon", 1e-5))
            * scale.reshape(shape) + bias.reshape(shape))


@register("InstanceNormalization")
def _instnorm(i, a):
    x, scale, bias = i[:3]
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / _t().sqrt(var + a.get("epsilon", 1e-5)) * scale.reshape(shape) + bias.reshape(shape)


@register("LayerNormalization", limits=(_float_only,))
def _layernorm(i, a):
    """Y = (X - mean) / sqrt(var + eps) * Scale + B over the axes from ``axis`` on, computed in the stash
    type (float32 by default); also the Mean and InvStdDev outputs."""
    torch = _t()
    x, scale, bias = i[0], i[1], _get(i, 2)
    axis = a.get("axis", -1) % x.dim()
    stash = torch.float32 if a.get("stash_type", 1) == 1 else x.dtype
    xs = x.to(stash)
    dims = tuple(range(axis, x.dim()))
    mean = xs.mean(dim=dims, keepdim=True)
    var = ((xs - mean) ** 2).mean(dim=dims, keepdim=True)
    inv = 1.0 / torch.sqrt(var + a.get("epsilon", 1e-5))
    y = ((xs - mean) * inv).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv


# ------------------------------------------------------------------------------------------- shapes
@register("Flatten")
def _flatten(i, a):
    x = i[0]
    axis = a.get("axis", 1)
    axis = axis if axis >= 0 else x.dim() + axis
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


@register("Reshape")
def _reshape(i, a):
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


@register("Transpose")
def _transpose(i, a):
    x = i[0]
    perm = a.get("perm", list(reversed(range(x.dim()))))
    return x.permute(*perm)


@register("Concat")
def _concat(i, a):
    return _t().cat([v for v in i if v is not None], dim=a["axis"])


@register("Shape")
def _shape(i, a):
    torch = _t()
    shape = list(i[0].shape)
    n = len(shape)
    start = a.get("start", 0)
    end = a.get("end", n)
    start = min(max(start + n if start < 0 else start, 0), n)
    end = min(max(end + n if end < 0 else end, 0), n)
    return torch.tensor(shape[start:end], dtype=torch.int64)


@register("Size")
def _size(i, a):
    return _t().tensor(i[0].numel(), dtype=_t().int64)


def _constant_limits(n: NodeInfo) -> str | None:
    if "sparse_value" in n.attrs or "value_string" in n.attrs or "value_strings" in n.attrs:
        return "sparse and string constants are not supported"
    return None


@register("Constant", limits=(_constant_limits,))
def _constant(i, a):
    from onnx import numpy_helper

    torch = _t()
    if "value" in a:
        return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
    if "value_float" in a:
        return torch.tensor(a["value_float"], dtype=torch.float32)
    if "value_int" in a:
        return torch.tensor(a["value_int"], dtype=torch.int64)
    if "value_floats" in a:
        return torch.tensor(list(a["value_floats"]), dtype=torch.float32)
    return torch.tensor(list(a["value_ints"]), dtype=torch.int64)


@register("ConstantOfShape")
def _constant_of_shape(i, a):
    from onnx import numpy_helper

    torch = _t()
    value = torch.from_numpy(np.array(numpy_helper.to_array(a["value"]))).reshape(-1) if "value" in a \
        else torch.zeros(1, dtype=torch.float32)
    return value.reshape(()).expand(_ints(i[0])).clone()


@register("Expand")
def _expand(i, a):
    x, shape = i[0], _ints(i[1])
    out = _t().broadcast_shapes(tuple(x.shape), tuple(shape))
    return x.expand(out)


@register("Tile")
def _tile(i, a):
    return i[0].repeat(_ints(i[1]))


@register("Range")
def _range(i, a):
    torch = _t()
    start, limit, delta = i[0], i[1], i[2]
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    return (start + delta * torch.arange(n, dtype=torch.int64).to(start.dtype)).to(start.dtype)


def _gather_index(idx: Any, size: int) -> Any:
    idx = idx.long()
    return _t().where(idx < 0, idx + size, idx)


@register("Gather")
def _gather(i, a):
    x, idx = i[0], i[1]
    axis = a.get("axis", 0) % x.dim()
    flat = _gather_index(idx, x.shape[axis]).reshape(-1)
    return x.index_select(axis, flat).reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@register("GatherElements")
def _gather_elements(i, a):
    x, idx = i[0], i[1]
    axis = a.get("axis", 0) % x.dim()
    return _t().gather(x, axis, _gather_index(idx, x.shape[axis]))


def _axes(i: list, a: dict, k: int = 1) -> list[int] | None:
    if _get(i, k) is not None:
        return _ints(i[k])
    return list(a["axes"]) if "axes" in a else None


@register("Unsqueeze")
def _unsqueeze(i, a):
    x = i[0]
    axes = _axes(i, a)
    out_rank = x.dim() + len(axes)
    for ax in sorted(ax % out_rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


@register("Squeeze")
def _squeeze(i, a):
    x = i[0]
    axes = _axes(i, a)
    if axes is None:
        return x.reshape([s for s in x.shape if s != 1])
    for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


@register("Split")
def _split(i, a):
    x = i[0]
    info = a["__info__"]
    axis = a.get("axis", 0) % x.dim()
    n_out = len(info.outputs)
    sizes = _ints(i[1]) if _get(i, 1) is not None else a.get("split")
    if sizes is None:
        total = x.shape[axis]
        if "num_outputs" in a:
            n_out = a["num_outputs"]
        chunk = -(-total // n_out)
        sizes = [min(chunk, total - k * chunk) for k in range(n_out)]
    return tuple(_t().split(x, list(sizes), dim=axis))


@register("Slice")
def _slice(i, a):
    torch = _t()
    x = i[0]
    if _get(i, 1) is None:  # opset < 10: attributes
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(i[1]), _ints(i[2])
        axes = _ints(i[3]) if _get(i, 3) is not None else list(range(len(starts)))
        steps = _ints(i[4]) if _get(i, 4) is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = ax % x.dim()
        n = x.shape[ax]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, -1), n - 1), min(max(e, -1), n - 1)
        idx = torch.arange(s, e, st, dtype=torch.int64)
        x = x.index_select(ax, idx)
    return x


@register("Trilu")
def _trilu(i, a):
    torch = _t()
    x = i[0]
    k = int(_ints(i[1])[0]) if _get(i, 1) is not None else 0
    return torch.triu(x, k) if a.get("upper", 1) else torch.tril(x, k)


def _pad_limits(n: NodeInfo) -> str | None:
    mode = _s(n.attrs.get("mode", "constant"))
    if mode != "constant":
        return f"mode={mode!r} is not supported (only 'constant')"
    return None


@register("Pad", limits=(_pad_limits,))
def _pad(i, a):
    F = _F()
    x = i[0]
    if _get(i, 1) is not None:
        pads = _ints(i[1])
        value = i[2].reshape(()).item() if _get(i, 2) is not None else 0
        axes = _ints(i[3]) if _get(i, 3) is not None else list(range(x.dim()))
    else:
        pads, value, axes = list(a["pads"]), a.get("value", 0.0), list(range(x.dim()))
    axes = [ax % x.dim() for ax in axes]
    begin, end = [0] * x.dim(), [0] * x.dim()
    for k, ax in enumerate(axes):
        begin[ax], end[ax] = pads[k], pads[k + len(axes)]
    return F.pad(x, _torch_pad(begin, end), value=value)


# ------------------------------------------------------------------------------------------- types
def _cast_limits(n: NodeInfo) -> str | None:
    from governance.host.runtimes.onnx_registry import torch_dtype

    to = n.attrs.get("to")
    if to is not None and torch_dtype(to) is None:
        import onnx

        return f"cast to {onnx.TensorProto.DataType.Name(to).lower()} is not supported"
    return None


@register("Cast", limits=(_cast_limits,))
def _cast(i, a):
    from governance.host.runtimes.onnx_registry import torch_dtype

    return i[0].to(torch_dtype(a["to"]))


@register("CastLike")
def _castlike(i, a):
    return i[0].to(i[1].dtype)


# ------------------------------------------------------------------------------------------- reductions
def _reduce_axes(i: list, a: dict, x: Any, axes_input_from: int) -> list[int] | None:
    """The reduced axes; None means 'no reduction' (noop_with_empty_axes with no axes)."""
    info = a["__info__"]
    axes = _ints(i[1]) if info.opset >= axes_input_from and _get(i, 1) is not None else a.get("axes")
    if axes is None or len(axes) == 0:
        if a.get("noop_with_empty_axes", 0):
            return None
        return list(range(x.dim()))
    return [ax % max(x.dim(), 1) for ax in axes]


_EMPTY = {"ReduceMax": float("-inf"), "ReduceMin": float("inf"), "ReduceSum": 0.0, "ReduceProd": 1.0,
          "ReduceLogSum": float("-inf"), "ReduceLogSumExp": float("-inf"), "ReduceL1": 0.0, "ReduceL2": 0.0,
          "ReduceSumSquare": 0.0}


def _reduce_body(name: str, x: Any, dims: tuple[int, ...], keep: bool) -> Any:
    torch = _t()
    if name == "ReduceMean":
        return x.mean(dim=dims, keepdim=keep)
    if name == "ReduceSum":
        return x.sum(dim=dims, keepdim=keep)
    if name == "ReduceMax":
        return x.amax(dim=dims, keepdim=keep)
    if name == "ReduceMin":
        return x.amin(dim=dims, keepdim=keep)
    if name == "ReduceL1":
        return x.abs().sum(dim=dims, keepdim=keep)
    if name == "ReduceL2":
        return torch.sqrt((x * x).sum(dim=dims, keepdim=keep))
    if name == "ReduceSumSquare":
        return (x * x).sum(dim=dims, keepdim=keep)
    if name == "ReduceLogSum":
        return torch.log(x.sum(dim=dims, keepdim=keep))
    return torch.logsumexp(x, dim=dims, keepdim=keep)


def _make_reduce(name: str, axes_input_from: int):
    def run(i, a):
        torch = _t()
        x = i[0]
        axes = _reduce_axes(i, a, x, axes_input_from)
        if axes is None:
            return x
        keep = bool(a.get("keepdims", 1))
        dims = tuple(sorted(set(axes)))
        if x.numel() == 0:
            shape = [1 if d in dims else s for d, s in enumerate(x.shape)] if keep else \
                [s for d, s in enumerate(x.shape) if d not in dims]
            fill = _EMPTY.get(name, float("nan"))
            if x.dtype == torch.bool:
                fill = name == "ReduceMin"
            return torch.full(shape, fill, dtype=x.dtype)
        if not x.is_floating_point() and name in ("ReduceMean", "ReduceLogSum", "ReduceLogSumExp", "ReduceL2"):
            return _reduce_body(name, x.double(), dims, keep).to(x.dtype)
        if name == "ReduceProd":
            out = x
            for d in sorted(dims, reverse=True):
                out = out.prod(dim=d, keepdim=True)
            if not keep:
                out = out.reshape([s for d, s in enumerate(x.shape) if d not in dims])
            return out.to(x.dtype)
        return _reduce_body(name, x, dims, keep).to(x.dtype)

    return run


for _name, _from in {"ReduceMean": 18, "ReduceSum": 13, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
                     "ReduceL1": 18, "ReduceL2": 18, "ReduceSumSquare": 18, "ReduceLogSum": 18,
                     "ReduceLogSumExp": 18}.items():
    register(_name)(_make_reduce(_name, _from))


def _argreduce(fn_name: str):
    def run(i, a):
        torch = _t()
        x = i[0]
        axis = a.get("axis", 0) % x.dim()
        keep = bool(a.get("keepdims", 1))
        if a.get("select_last_index", 0):
            flipped = x.flip(axis)
            idx = getattr(torch, fn_name)(flipped, dim=axis, keepdim=keep)
            return (x.shape[axis] - 1 - idx).to(torch.int64)
        return getattr(torch, fn_name)(x, dim=axis, keepdim=keep).to(torch.int64)

    return run


register("ArgMax")(_argreduce("argmax"))
register("ArgMin")(_argreduce("argmin"))
