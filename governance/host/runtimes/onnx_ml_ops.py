"""``ai.onnx.ml`` operators of the torch view: the ones skl2onnx and onnxmltools emit for linear models,
scalers, normalisers and the ZipMap that wraps class probabilities.

The ai.onnx.ml specification leaves corner cases to the runtime, so these follow ONNX Runtime (the
binary LinearClassifier writes ``[1 - s, s]`` for a single score; Normaliser ``MAX`` divides by the row's
maximum, not its absolute maximum); tests/test_onnx_ml_ops.py compares each against ONNX Runtime.
Tree ensembles are refused on purpose: they are piecewise constant, so their input gradient is zero
almost everywhere and gradient methods would explain nothing.
"""

from __future__ import annotations

from governance.host.runtimes.onnx_registry import NodeInfo, register

ML = "ai.onnx.ml"


def _t():
    import torch

    return torch


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _post_transform_in(*allowed: str):
    def check(n: NodeInfo) -> str | None:
        pt = _s(n.attrs.get("post_transform", "NONE"))
        return None if pt in allowed else f"post_transform={pt} is not supported (only {', '.join(allowed)})"

    return check


def _post(scores, pt: str):
    torch = _t()
    if pt == "LOGISTIC":
        return torch.sigmoid(scores)
    if pt == "SOFTMAX":
        return torch.softmax(scores, dim=1)
    if pt == "SOFTMAX_ZERO":
        nonzero = scores != 0
        shifted = torch.where(nonzero, scores, torch.full_like(scores, float("-inf")))
        e = torch.where(nonzero, torch.exp(shifted - shifted.amax(dim=1, keepdim=True)), torch.zeros_like(scores))
        return e / e.sum(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return scores


def _as_2d_float(x):
    x = x if x.is_floating_point() else x.float()
    return x.reshape(1, -1) if x.dim() == 1 else x


def linear_weights(a: dict, dtype=None) -> tuple:
    """(W as (rows, features), b) of a LinearClassifier/LinearRegressor from its attributes. A torch view
    registers them as parameters (``a["__weights__"]`` then returns those), so that weight audits and
    randomisation checks see them."""
    torch = _t()
    if "__weights__" in a:
        w, b = a["__weights__"]()
        return (w, b) if dtype is None else (w.to(dtype), b.to(dtype))
    rows = len(a.get("intercepts", [])) or int(a.get("targets", 1))
    w = torch.tensor(list(a["coefficients"]), dtype=dtype or torch.float32).reshape(rows, -1)
    b = torch.tensor(list(a.get("intercepts", [0.0] * rows)), dtype=dtype or torch.float32)
    return w, b


def _linear_classifier_limits(n: NodeInfo) -> str | None:
    if n.uses_output(0) and "classlabels_strings" in n.attrs:
        return "string class labels (output Y) are not supported"
    return None


@register("LinearClassifier", domain=ML,
          limits=(_post_transform_in("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"), _linear_classifier_limits))
def _linear_classifier(i, a):
    """Y = labels, Z = post_transform(X W^T + b); one score row with two labels gives [1 - s, s] (after
    the logistic when post_transform=LOGISTIC, unchanged otherwise), as ONNX Runtime does."""
    torch = _t()
    x = _as_2d_float(i[0])
    w, b = linear_weights(a, x.dtype)
    scores = x @ w.T + b
    pt = _s(a.get("post_transform", "NONE"))
    labels = list(a.get("classlabels_ints", [])) or None
    if len(b) == 1 and labels is not None and len(labels) == 2:
        s = torch.sigmoid(scores) if pt == "LOGISTIC" else scores
        z = torch.cat([1 - s, s], dim=1)
        pick = (scores[:, 0] > 0).long()
    else:
        z = _post(scores, pt)
        pick = scores.argmax(dim=1)
    y = torch.tensor(labels, dtype=torch.int64)[pick] if labels is not None else None
    return y, z


@register("LinearRegressor", domain=ML, limits=(_post_transform_in("NONE", "LOGISTIC", "SOFTMAX"),))
def _linear_regressor(i, a):
    x = _as_2d_float(i[0])
    w, b = linear_weights(a, x.dtype)
    return _post(x @ w.T + b, _s(a.get("post_transform", "NONE")))


@register("Normalizer", domain=ML)
def _normalizer(i, a):
    x = _as_2d_float(i[0])
    norm = _s(a.get("norm", "MAX"))
    if norm == "L1":
        return x / x.abs().sum(dim=1, keepdim=True)
    if norm == "L2":
        return x / _t().sqrt((x * x).sum(dim=1, keepdim=True))
    return x / x.amax(dim=1, keepdim=True)


@register("Scaler", domain=ML)
def _scaler(i, a):
    torch = _t()
    x = i[0] if i[0].is_floating_point() else i[0].float()
    offset = torch.tensor(list(a.get("offset", [0.0])), dtype=x.dtype)
    scale = torch.tensor(list(a.get("scale", [1.0])), dtype=x.dtype)
    return (x - offset) * scale


@register("ArrayFeatureExtractor", domain=ML)
def _array_feature_extractor(i, a):
    x, idx = i[0], i[1]
    if x.dim() == 1:
        x = x.reshape(1, -1)
    return x.index_select(x.dim() - 1, idx.reshape(-1).long())


@register("ZipMap", domain=ML)
def _zipmap(i, a):
    """A sequence of {class: probability} maps in ONNX Runtime; here its input tensor, whose columns are
    the classes in ``classlabels_*`` order (the order the host's ZipMap conversion uses too)."""
    return i[0]


@register("Binarizer", domain=ML)
def _binarizer(i, a):
    x = i[0]
    return (x > a.get("threshold", 0.0)).to(x.dtype)
