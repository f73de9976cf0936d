"""Which model output the methods explain, and whether the model is a classifier or a regressor.

Converted scikit-learn and gradient-boosting graphs put the int64 ``label`` first and the probabilities
second (``probabilities``, or ``output_probability`` as a ZipMap sequence of {class: p} maps): taking
output 0 explains class indices. The choice is made by name, type and shape, can be overridden
(``--output NAME``), and is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from governance.contract.errors import ConfigError

TASKS = ("classification", "regression")
_SCORE_NAMES = ("probabilities", "output_probability", "probability", "probs", "proba", "scores", "logits")


@dataclass(frozen=True)
class OutputInfo:
    name: str
    kind: str  # "tensor" | "zipmap" | "other"
    dtype: str  # numpy dtype name for tensors, the ONNX type text otherwise
    shape: tuple[Any, ...] = ()

    def text(self) -> str:
        shape = "×".join("?" if d is None or isinstance(d, str) else str(d) for d in self.shape)
        return f"{self.name} ({self.dtype}{' ' + shape if shape else ''})"


@dataclass(frozen=True)
class OutputChoice:
    """The explained output: its name, how it is read (a tensor, or a ZipMap converted to one) and why."""

    name: str
    kind: str
    reason: str
    available: tuple[str, ...] = ()
    classes: tuple[Any, ...] | None = None  # ZipMap column order

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "reason": self.reason, "available": list(self.available),
                "classes": [c if isinstance(c, (int, str)) else str(c) for c in self.classes] if self.classes else None}


def _score(o: OutputInfo) -> int:
    """Float tensors first, then ZipMaps; a probability-like name breaks ties; -1: not explainable."""
    if o.kind == "tensor" and o.dtype.startswith("float"):
        s = 4
    elif o.kind == "zipmap":
        s = 3
    else:
        return -1
    return s + (2 if o.name.lower() in _SCORE_NAMES or "prob" in o.name.lower() else 0)


def choose_output(outputs: Sequence[OutputInfo], requested: str | None) -> OutputChoice:
    """The output the methods explain: ``requested`` when given (it must exist), else the best
    floating-point or ZipMap output by type and name; the first output when there is only one."""
    available = tuple(o.text() for o in outputs)
    if requested:
        match = next((o for o in outputs if o.name == requested), None)
        if match is None:
            raise ConfigError(f"the model has no output named '{requested}'",
                              hint=f"its outputs are: {', '.join(available)}; pass one of their names to --output")
        if match.kind == "other":
            raise ConfigError(f"output '{requested}' is a {match.dtype}, which governance cannot explain",
                              hint="choose a float tensor output or a ZipMap of class probabilities")
        return OutputChoice(match.name, match.kind, "chosen with --output", available)
    if len(outputs) == 1:
        return OutputChoice(outputs[0].name, outputs[0].kind, "the model's only output", available)
    ranked = sorted(outputs, key=_score, reverse=True)
    best = ranked[0]
    if _score(best) < 0:
        raise ConfigError("none of the model's outputs is a floating-point score or probability tensor",
                          hint=f"its outputs are: {', '.join(available)}; re-export it with a score output")
    others = [o.text() for o in outputs if o.name != best.name]
    what = {"tensor": "floating-point scores", "zipmap": "class probabilities as a ZipMap (converted to a tensor)"}
    return OutputChoice(best.name, best.kind,
                        f"{what[best.kind]}, chosen over {', '.join(others)}; override with --output NAME",
                        available)


@dataclass
class TaskEvidence:
    """What the loader knows about a model, for :func:`detect_task`."""

    n_outputs: int
    output_dtype: str = "float32"
    requested: str | None = None
    native: str | None = None  # "classification"/"regression" from the native estimator
    onnx_ml_ops: Sequence[str] = field(default_factory=tuple)
    has_label_output: bool = False
    ends_in: str | None = None  # op type producing the chosen output (Sigmoid, Softmax, ...)
    signature_output_dtypes: Sequence[str] = field(default_factory=tuple)


def detect_task(ev: TaskEvidence) -> tuple[str, str]:
    """("classification" | "regression", the evidence)."""
    if ev.requested:
        if ev.requested not in TASKS:
            raise ConfigError(f"unknown task '{ev.requested}'", hint="use --task classification or --task regression")
        return ev.requested, "set with --task"
    if ev.native:
        return ev.native, f"the native estimator is a {'classifier' if ev.native == 'classification' else 'regressor'}"
    if any(op.endswith("Classifier") for op in ev.onnx_ml_ops):
        return "classification", f"the graph holds a classifier operator ({next(op for op in ev.onnx_ml_ops if op.endswith('Classifier'))})"
    if any(op.endswith("Regressor") for op in ev.onnx_ml_ops):
        return "regression", f"the graph holds a regressor operator ({next(op for op in ev.onnx_ml_ops if op.endswith('Regressor'))})"
    if ev.has_label_output:
        return "classification", "the graph has a class-label output beside the scores"
    if ev.n_outputs > 1:
        return "classification", f"one score per class ({ev.n_outputs} outputs)"
    if ev.ends_in in ("Sigmoid", "sigmoid"):
        return "classification", "one output ending in a sigmoid (a binary class probability)"
    if any(d.startswith(("int", "uint", "bool", "long")) for d in ev.signature_output_dtypes):
        return "classification", "the MLflow signature's output is integer class labels"
    if not ev.output_dtype.startswith("float"):
        return "classification", f"the output is {ev.output_dtype} (labels)"
    return "regression", ("one floating-point output per sample; pass --task classification if it is a "
                          "binary logit")


def signature_output_dtypes(signature: dict[str, Any] | None) -> list[str]:
    outs = (signature or {}).get("outputs") or []
    found = []
    for o in outs:
        ts = o.get("tensor-spec") or {}
        d = o.get("dtype") or ts.get("dtype") or o.get("type")
        if d:
            found.append(str(d).lower())
    return found
