"""Model identity (what the registry says) and the loaded, runnable model every method receives."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one model input or output. ``None`` in ``shape`` is a free dimension
    (the batch, usually)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape of one sample: everything after the batch dimension."""
        return self.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class ModelVersionInfo:
    """Everything known about a model before it is loaded: registry identity, lineage and file hashes."""

    uri: str
    kind: str  # "registry" | "run" | "file"
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    model_id: str | None = None
    source: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    registered_model_description: str | None = None
    created_at: str | None = None
    status: str | None = None
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    local_path: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    input_example_path: Path | None = None

    @property
    def display_name(self) -> str:
        if self.name and self.version:
            return f"{self.name} v{self.version}"
        return self.uri

    @property
    def content_sha256(self) -> str:
        """One hash over every model file (sorted path:hash lines): the identity of the model's bytes."""
        import hashlib

        h = hashlib.sha256()
        for rel, digest in sorted(self.files.items()):
            h.update(f"{rel}:{digest}\n".encode())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["local_path"] = str(self.local_path) if self.local_path else None
        d["input_example_path"] = str(self.input_example_path) if self.input_example_path else None
        d["content_sha256"] = self.content_sha256
        return d


class LoadedModel(abc.ABC):
    """A runnable model. ``predict`` always works; a torch view (gradients, hidden activations) is
    available when ``torch_module()`` returns a module, otherwise ``torch_unavailable_reason`` says why.

    Outputs are the model's raw outputs (logits for a classifier that ends in a linear layer).
    """

    info: ModelVersionInfo
    runtime: str = "unknown"  # "onnxruntime" | "torch"
    device: str = "cpu"
    input_spec: TensorSpec
    output_spec: TensorSpec
    default_batch_size: int = 256
    torch_unavailable_reason: str | None = None
    parity_max_abs_diff: float | None = None  # ORT vs torch view on a probe batch, when both exist
    details: dict[str, Any]
    #: "classification" (outputs are class scores) or "regression" (the output is the predicted value),
    #: with the evidence it was decided on (``--task`` overrides).
    task: str = "classification"
    task_reason: str = "default"
    #: the output the methods explain and why (graphs with several outputs), see runtimes/outputs.py
    output_choice: dict[str, Any] | None = None
    #: why ``parameters()`` is empty although the runtime can read weights (e.g. a tree ensemble)
    no_parameters_reason: str | None = None

    @property
    def notes(self) -> list[str]:
        """Caveats the report lists (fixed batch cost, converted graphs, native fallbacks); append to it."""
        return self.__dict__.setdefault("_notes", [])

    # ----------------------------------------------------------------------------------- forward
    @abc.abstractmethod
    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Run one batch (already the right dtype and shape)."""

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Batched forward pass on numpy input of shape ``(n, *sample_shape)``; returns ``(n, *out)``."""
        x = self.check_input(x)
        bs = batch_size or self.default_batch_size
        if len(x) <= bs:
            return np.asarray(self._predict_batch(x))
        return np.concatenate([np.asarray(self._predict_batch(x[i : i + bs])) for i in range(0, len(x), bs)])

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Cast to the input dtype and check the per-sample shape; raise DataError naming both shapes."""
        from governance.contract.errors import DataError

        x = np.asarray(x)
        want = self.input_spec.sample_shape
        if x.ndim != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
            shown = tuple("?" if w is None else w for w in want)
            raise DataError(
                f"input shape {tuple(x.shape)} does not fit {self.info.display_name}, which expects "
                f"(batch, {', '.join(map(str, shown))})",
                hint="pass --data with samples of the model's input shape (check the model signature with "
                "`governance inspect MODEL_URI`)",
            )
        return x.astype(np.dtype(self.input_spec.dtype), copy=False)

    # ----------------------------------------------------------------------------------- torch view
    def torch_module(self) -> "torch.nn.Module | None":
        """A differentiable torch module computing the same function, in inference mode, or None."""
        return None

    @property
    def has_gradients(self) -> bool:
        return self.torch_module() is not None

    def layer_names(self) -> list[str]:
        """Names accepted by :meth:`forward_with_activations` (empty without a torch view)."""
        return []

    def forward_with_activations(
        self, x: "torch.Tensor", layers: Sequence[str]
    ) -> "tuple[torch.Tensor, dict[str, torch.Tensor]]":
        """Differentiable forward pass on the torch view that also returns the named hidden activations."""
        from governance.contract.errors import MethodError

        raise MethodError(
            f"{self.info.display_name} has no torch view, so hidden activations cannot be read"
            + (f": {self.torch_unavailable_reason}" if self.torch_unavailable_reason else "")
        )

    def parameters(self) -> "dict[str, np.ndarray]":
        """Named weight arrays (copies), for weight audits. Empty when unknown."""
        return {}

    # ----------------------------------------------------------------------------------- description
    @property
    def n_outputs(self) -> int:
        shape = self.output_spec.sample_shape
        return int(np.prod([s for s in shape if s is not None])) if shape else 1

    @property
    def is_regression(self) -> bool:
        """True when the output is a predicted value, not class scores: class-attribution methods skip."""
        return self.task == "regression"

    @property
    def outputs_score_vector(self) -> bool:
        """True when one sample's output is a vector (one score per class): the shape that class-attribution
        methods explain. False for e.g. per-pixel outputs."""
        return len([d for d in self.output_spec.sample_shape if d not in (None, 1)]) <= 1

    @property
    def view_checked(self) -> bool:
        """Whether the torch view is known to exist or not without building it (a lazily built view, as for
        ONNX models, is only built when a method asks for gradients or activations)."""
        return True

    def describe(self, *, check_gradients: bool = False) -> dict[str, Any]:
        """What the report and run.json say about the runtime. ``gradients`` is None ("not checked") when no
        method needed the torch view and ``check_gradients`` is false: describing never builds it."""
        known = check_gradients or self.view_checked
        return {
            "runtime": self.runtime,
            "device": self.device,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "gradients": self.has_gradients if known else None,
            "torch_unavailable_reason": self.torch_unavailable_reason,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "task": self.task,
            "task_reason": self.task_reason,
            "output_selection": self.output_choice,
            "notes": list(self.notes),
            **getattr(self, "details", {}),
        }
