"""The operator table of the ONNX -> torch view: what each operator computes and the limits it refuses
up front (an attribute value or an opset version it does not implement), so that a graph is either run
correctly or refused with a reason, never run wrongly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class Unsupported(ValueError):
    """The view cannot run this graph; the message lists every reason."""


@dataclass(frozen=True)
class NodeInfo:
    """What an operator's limit check may look at: attributes, opset version, input/output types."""

    op_type: str
    attrs: dict[str, Any]
    opset: int
    input_types: tuple[int, ...]
    output_types: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, node: Any, opsets: dict[str, int], types: dict[str, int]) -> "NodeInfo":
        import onnx

        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        return cls(op_type=node.op_type,
                   attrs={a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
                   opset=opsets.get(domain, 1),
                   input_types=tuple(types.get(i, -1) if i else -1 for i in node.input),
                   output_types=tuple(types.get(o, -1) if o else -1 for o in node.output),
                   inputs=tuple(node.input), outputs=tuple(node.output))

    def has_input(self, k: int) -> bool:
        return len(self.inputs) > k and bool(self.inputs[k])

    def uses_output(self, k: int) -> bool:
        return len(self.outputs) > k and bool(self.outputs[k])


Refuse = Callable[[NodeInfo], "str | None"]


@dataclass
class OpSpec:
    fn: Callable[[list, dict], Any]
    limits: list[Refuse] = field(default_factory=list)

    def refuse(self, info: NodeInfo) -> str | None:
        for check in self.limits:
            why = check(info)
            if why:
                return why
        return None


#: (domain, op_type) -> OpSpec; domain "" is the default ONNX domain.
OPS: dict[tuple[str, str], OpSpec] = {}


def op_key(domain: str, op_type: str) -> Any:
    return ("" if domain in ("", "ai.onnx") else domain, op_type)


def register(*names: str, domain: str = "", limits: tuple[Refuse, ...] = ()) -> Callable:
    """Decorator: register ``fn(inputs, attrs)`` for each operator name, with up-front limit checks."""

    def deco(fn: Callable) -> Callable:
        for n in names:
            OPS[(domain, n)] = OpSpec(fn, list(limits))
        return fn

    return deco


# ------------------------------------------------------------------------------------------------ types
def torch_dtype(elem_type: int) -> Any:
    """The torch dtype of an ONNX element type, or None for types the view does not hold (strings,
    unsigned 16/32/64-bit, bfloat16, 8/4-bit floats, complex)."""
    import torch

    from onnx import TensorProto as T

    return {T.FLOAT: torch.float32, T.DOUBLE: torch.float64, T.FLOAT16: torch.float16, T.INT8: torch.int8,
            T.INT16: torch.int16, T.INT32: torch.int32, T.INT64: torch.int64, T.UINT8: torch.uint8,
            T.BOOL: torch.bool}.get(elem_type)


FLOAT_TYPES = (1, 10, 11)  # float, float16, double
