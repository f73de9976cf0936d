"""Which weight tensors are layers, and how each becomes the ``m x n`` matrix Bort constrains (spec B2.1).

Rows are output units: a Linear weight ``[out, in]`` stays as it is, a convolution ``[C_out, C_in/g, k...]``
is flattened per filter, a transposed convolution ``[C_in, C_out/g, k...]`` is permuted first, and a weight
stored ``[in, out]`` (ONNX ``MatMul`` or ``Gemm`` with ``transB=0``) is transposed. Roles come from the
model itself where it says: torch module types, the operators of a ``torch.export`` graph, or the ONNX
graph's operators; otherwise from the shapes alone (2-D = linear, 3- to 5-D = convolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: kinds of layers that are audited
KINDS = ("linear", "conv", "conv_transpose")


@dataclass(frozen=True)
class Role:
    kind: str  # "linear" | "conv" | "conv_transpose" | "skip"
    transpose: bool = False  # stored [in, out]
    groups: int = 1
    why: str = ""  # for "skip"


@dataclass
class LayerWeight:
    """One audited weight: its parameter name, kind, stored shape and the row-per-output-unit matrix."""

    name: str
    kind: str
    shape: tuple[int, ...]
    matrix: np.ndarray  # (m, n) float64

    @property
    def n_params(self) -> int:
        return int(self.matrix.size)


def as_matrix(array: np.ndarray, role: Role) -> np.ndarray:
    """The ``m x n`` float64 matrix of a stored weight under ``role``."""
    a = np.asarray(array, dtype=np.float64)
    if role.transpose:
        a = a.T
    if role.kind == "conv_transpose":
        a = np.swapaxes(a, 0, 1)
    return np.ascontiguousarray(a.reshape(a.shape[0], -1))


# -------------------------------------------------------------------------------------------- torch
def roles_from_torch(module: Any) -> dict[str, Role]:
    """Roles of ``module``'s parameters from its module types, or from its ``torch.export`` graph."""
    import torch

    if isinstance(module, torch.fx.GraphModule):
        roles = _roles_from_fx(module)
        if roles:
            return roles
    nn = torch.nn
    roles: dict[str, Role] = {}
    for name, mod in module.named_modules():
        prefix = f"{name}." if name else ""
        w = getattr(mod, "weight", None)
        if isinstance(mod, nn.Linear):
            roles[prefix + "weight"] = Role("linear")
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            roles[prefix + "weight"] = Role("conv", groups=mod.groups)
        elif isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            roles[prefix + "weight"] = (Role("conv_transpose") if mod.groups == 1 else
                                        Role("skip", why="grouped transposed convolution"))
        elif isinstance(mod, nn.MultiheadAttention):
            for pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(mod, pname, None) is not None:
                    roles[prefix + pname] = Role("linear")
        elif isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
            roles[prefix + "weight"] = Role("skip", why="embedding table (not a linear map of the input)")
        elif isinstance(mod, nn.Bilinear):
            roles[prefix + "weight"] = Role("skip", why="bilinear weight (3-D form)")
        elif w is not None and getattr(w, "ndim", 0) >= 2 and not list(mod.children()):
            roles.setdefault(prefix + "weight", Role("skip", why=f"weight of a {type(mod).__name__} module"))
    return roles


def _roles_from_fx(gm: Any) -> dict[str, Role]:
    """Roles from the aten operators of a ``torch.export`` graph (whose submodules have no types)."""
    import torch

    aten = torch.ops.aten
    linear = {aten.linear}
    conv = {aten.conv1d, aten.conv2d, aten.conv3d}
    conv_t = {aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d}
    roles: dict[str, Role] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2:
            continue
        w = node.args[1]
        packet = getattr(node.target, "overloadpacket", None)
        if packet is None or not isinstance(w, torch.fx.Node) or w.op != "get_attr":
            continue
        groups = int(node.args[6]) if len(node.args) > 6 and isinstance(node.args[6], int) else 1
        if packet in linear:
            roles[str(w.target)] = Role("linear")
        elif packet in conv:
            roles[str(w.target)] = Role("conv", groups=groups)
        elif packet in conv_t:
            roles[str(w.target)] = Role("conv_transpose") if groups == 1 else Role("skip", why="grouped transposed convolution")
        elif packet == aten.convolution:
            transposed = bool(node.args[6]) if len(node.args) > 6 else False
            groups = int(node.args[8]) if len(node.args) > 8 else 1
            if transposed:
                roles[str(w.target)] = Role("conv_transpose") if groups == 1 else Role("skip", why="grouped transposed convolution")
            else:
                roles[str(w.target)] = Role("conv", groups=groups)
    return roles


# -------------------------------------------------------------------------------------------- onnx
def roles_from_onnx(path: Any) -> dict[str, Role]:
    """Roles of an ONNX model's initializers from the operators that consume them (weights not loaded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    roles: dict[str, Role] = {}
    for k, node in enumerate(proto.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        ins = list(node.input)
        if node.op_type == "Conv" and len(ins) > 1 and ins[1] in inits:
            roles[ins[1]] = Role("conv", groups=int(attrs.get("group", 1)))
        elif node.op_type == "ConvTranspose" and len(ins) > 1 and ins[1] in inits:
            roles[ins[1]] = (Role("conv_transpose") if int(attrs.get("group", 1)) == 1 else
                             Role("skip", why="grouped transposed convolution"))
        elif node.op_type == "Gemm" and len(ins) > 1 and ins[1] in inits:
            roles[ins[1]] = Role("linear", transpose=not bool(attrs.get("transB", 0)))
        elif node.op_type == "MatMul" and len(ins) > 1 and ins[1] in inits and ins[0] not in inits:
            roles[ins[1]] = Role("linear", transpose=True)
        elif node.op_type in ("LinearClassifier", "LinearRegressor"):  # weights in node attributes
            roles[f"{node.name or f'{node.op_type}_{k}'}/coefficients"] = Role("linear")
    return roles


# -------------------------------------------------------------------------------------------- any model
def _shape_role(name: str, array: np.ndarray) -> Role:
    if array.ndim == 2:
        return Role("linear")
    if 3 <= array.ndim <= 5:
        return Role("conv")
    return Role("skip", why=f"{array.ndim}-D tensor")


def model_roles(model: Any) -> tuple[dict[str, Role], str]:
    """(roles by parameter name, where they came from) for a LoadedModel."""
    if getattr(model, "runtime", None) == "onnxruntime" and getattr(model, "path", None) is not None:
        try:
            return roles_from_onnx(model.path), "ONNX graph operators"
        except Exception:  # an unreadable graph: fall back to shapes
            return {}, "tensor shapes"
    if getattr(model, "runtime", None) == "torch":
        module = model.torch_module()
        if module is not None:
            import torch

            src = "torch.export graph operators" if isinstance(module, torch.fx.GraphModule) else "torch module types"
            return roles_from_torch(module), src
    return {}, "tensor shapes"


def extract_layers(params: dict[str, np.ndarray], roles: dict[str, Role] | None) -> tuple[list[LayerWeight], list[dict[str, Any]]]:
    """The audited layers (in parameter order) and the skipped weights with the reason for each.

    With ``roles`` (from the model's structure) only the weights named there are audited; without, every
    floating tensor with 2 to 5 dimensions is, its kind guessed from its shape.
    """
    layers: list[LayerWeight] = []
    skipped: list[dict[str, Any]] = []
    for name, array in params.items():
        array = np.asarray(array)
        if array.ndim < 2 or not np.issubdtype(array.dtype, np.floating):
            continue
        role = roles.get(name) if roles else _shape_role(name, array)
        if role is None:
            skipped.append({"name": name, "shape": list(array.shape), "reason": "not the weight of a linear or convolution layer"})
            continue
        if role.kind == "skip":
            skipped.append({"name": name, "shape": list(array.shape), "reason": role.why})
            continue
        if array.size == 0:
            skipped.append({"name": name, "shape": list(array.shape), "reason": "empty tensor"})
            continue
        layers.append(LayerWeight(name=name, kind=role.kind, shape=tuple(int(s) for s in array.shape),
                                  matrix=as_matrix(array, role)))
    return layers, skipped
