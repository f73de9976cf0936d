"""A differentiable torch view of an ONNX graph, for gradient and activation methods on ONNX models.

Why our own and not onnx2torch: onnx2torch (last release Aug 2024) imports torchvision eagerly, which has
no CPU build that matches current torch wheels, and it has no converter for the Reshape-19 nodes that
torch 2.13's default exporter writes. This module interprets the graph node by node with torch
functions (operators in :mod:`onnx_ops` and :mod:`onnx_ml_ops`); weights become parameters, so input
gradients and every intermediate tensor are available.

The graph is first pruned to the nodes the chosen output needs, then checked up front: an operator
without a torch equivalent here, an attribute value outside an operator's documented limits, or a tensor
type torch cannot hold makes :func:`build_torch_view` raise :class:`Unsupported` with every reason, so the
caller falls back to forward-only mode with a precise message. What the view claims is measured against
the ONNX project's own backend node tests (tests/test_onnx_backend_coverage.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from governance.host.runtimes.onnx_registry import OPS, NodeInfo, Unsupported, op_key, torch_dtype

__all__ = ["Unsupported", "GraphProgram", "build_torch_view", "prune", "unsupported_ops", "support_problems",
           "supported_operators"]


def _load_ops() -> None:
    from governance.host.runtimes import onnx_ml_ops, onnx_ops  # noqa: F401 - registers the operators


def supported_operators() -> list[str]:
    """Every operator the view implements (``domain::Op`` outside the default domain)."""
    _load_ops()
    return sorted(op if not d else f"{d}::{op}" for d, op in OPS)


def prune(graph: Any, outputs: Sequence[str]) -> list[Any]:
    """The nodes of ``graph`` that ``outputs`` depend on, in graph order."""
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    needed: set[int] = set()
    stack = [producer[o] for o in outputs if o in producer]
    while stack:
        k = stack.pop()
        if k in needed:
            continue
        needed.add(k)
        stack.extend(producer[i] for i in graph.node[k].input if i in producer)
    return [n for k, n in enumerate(graph.node) if k in needed]


def _opsets(model: Any) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


def _value_types(model: Any) -> dict[str, int]:
    """ONNX element type per tensor name (inputs, outputs, initializers, inferred intermediates); names
    whose value is not a tensor map to 0."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        graph = inferred.graph
    except Exception:
        graph = model.graph
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        kind = vi.type.WhichOneof("value")
        types[vi.name] = vi.type.tensor_type.elem_type if kind == "tensor_type" else 0
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


@dataclass
class _Compiled:
    node: Any
    name: str
    fn: Callable[..., Any]
    attrs: dict[str, Any]


def support_problems(model: Any, outputs: Sequence[str] | None = None) -> list[str]:
    """Why the view cannot run the part of ``model`` that ``outputs`` need (empty when it can)."""
    _load_ops()
    outputs = list(outputs or [o.name for o in model.graph.output])
    nodes = prune(model.graph, outputs)
    opsets = _opsets(model)
    types = _value_types(model)
    problems: dict[str, None] = {}
    missing: dict[str, None] = {}
    for n in nodes:
        key = op_key(n.domain, n.op_type)
        spec = OPS.get(key)
        if spec is None:
            missing[_display(n)] = None
            continue
        info = NodeInfo.of(n, opsets, types)
        why = spec.refuse(info)
        if why:
            problems[f"{n.op_type} ({n.name or 'unnamed'}): {why}"] = None
    names = {i for n in nodes for i in n.input if i} | set(outputs)
    for name in sorted(names):
        if name in types and types[name] != 0 and torch_dtype(types[name]) is None:
            import onnx

            tname = onnx.TensorProto.DataType.Name(types[name]).lower()
            problems[f"tensor '{name}' has type {tname}, which the torch view does not hold"] = None
        elif name in types and types[name] == 0 and not _zipmap_output(nodes, name):
            problems[f"value '{name}' is not a tensor (sequence, map or optional)"] = None
    out = []
    if missing:
        out.append(f"operators without a torch equivalent here: {', '.join(missing)}")
    out.extend(problems)
    return out


def _display(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _zipmap_output(nodes: Iterable[Any], name: str) -> bool:
    """ZipMap's sequence-of-maps output is represented by its input tensor in the view."""
    return any(n.op_type == "ZipMap" and name in n.output for n in nodes)


def unsupported_ops(model: Any, outputs: Sequence[str] | None = None) -> list[str]:
    """Operator types in ``model`` (restricted to what ``outputs`` need) that this view cannot run."""
    _load_ops()
    outputs = list(outputs or [o.name for o in model.graph.output])
    return sorted({_display(n) for n in prune(model.graph, outputs) if op_key(n.domain, n.op_type) not in OPS})


class GraphProgram:
    """The pruned, checked node list of an ONNX graph, run on a dict of torch values."""

    def __init__(self, model: Any, outputs: Sequence[str] | None = None) -> None:
        import onnx

        _load_ops()
        problems = support_problems(model, outputs)
        if problems:
            raise Unsupported("; ".join(problems))
        self.outputs = list(outputs or [o.name for o in model.graph.output])
        opsets = _opsets(model)
        types = _value_types(model)
        self.nodes: list[_Compiled] = []
        for k, n in enumerate(prune(model.graph, self.outputs)):
            info = NodeInfo.of(n, opsets, types)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            attrs["__info__"] = info
            self.nodes.append(_Compiled(n, n.name or f"{n.op_type}_{k}", OPS[op_key(n.domain, n.op_type)].fn, attrs))

    def run(self, env: dict[str, Any], record: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
        """Execute every node; returns (values by tensor name, recorded node outputs by node name)."""
        wanted = set(record)
        acts: dict[str, Any] = {}
        for c in self.nodes:
            ins = [env[i] if i else None for i in c.node.input]
            outs = c.fn(ins, c.attrs)
            if not isinstance(outs, (tuple, list)):
                outs = (outs,)
            for oname, val in zip(c.node.output, outs):
                if oname:
                    env[oname] = val
            if c.name in wanted:
                acts[c.name] = outs[0]
        return env, acts


def build_torch_view(model: Any, output: str | None = None) -> Any:
    """A ``torch.nn.Module`` computing ``model``'s ``output`` (default: the first graph output) from its
    first non-initializer input. Raises :class:`Unsupported` naming every reason it cannot."""
    import torch
    from onnx import numpy_helper

    g = model.graph
    output = output or g.output[0].name
    program = GraphProgram(model, [output])

    class _View(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._const: dict[str, Any] = {}
            self._param_names: dict[str, str] = {}
            for i, init in enumerate(g.initializer):
                t = torch.from_numpy(np.array(numpy_helper.to_array(init)))
                if t.is_floating_point():
                    self.register_parameter(f"p{i}", torch.nn.Parameter(t, requires_grad=False))
                    self._param_names[init.name] = f"p{i}"
                else:
                    self._const[init.name] = t
            initializers = {init.name for init in g.initializer}
            self.input_names = [i.name for i in g.input if i.name not in initializers]
            self.output_name = output
            self.program = program
            self.node_names = [c.name for c in program.nodes]
            self._attribute_weights()

        def _attribute_weights(self) -> None:
            """Coefficients that ai.onnx.ml linear operators hold in attributes become parameters too."""
            from governance.host.runtimes.onnx_ml_ops import linear_weights

            for k, c in enumerate(self.program.nodes):
                if c.node.op_type in ("LinearClassifier", "LinearRegressor"):
                    w, b = linear_weights(c.attrs)
                    self.register_parameter(f"ml{k}_w", torch.nn.Parameter(w, requires_grad=False))
                    self.register_parameter(f"ml{k}_b", torch.nn.Parameter(b, requires_grad=False))
                    c.attrs["__weights__"] = (lambda k=k: (getattr(self, f"ml{k}_w"), getattr(self, f"ml{k}_b")))

        def run(self, x: Any, record: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
            env: dict[str, Any] = dict(self._const)
            for onnx_name, key in self._param_names.items():
                env[onnx_name] = getattr(self, key)
            env[self.input_names[0]] = x
            env, acts = self.program.run(env, record)
            return env[self.output_name], acts

        def forward(self, x: Any) -> Any:
            return self.run(x)[0]

    view = _View()
    view.eval()
    return view
