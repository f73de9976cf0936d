"""ONNX runtime: forward passes on ONNX Runtime (fast, batched), gradients and activations through the
torch view of :mod:`governance.host.runtimes.onnx_torch`, checked for parity against ONNX Runtime.

The explained output is chosen by name, type and shape (runtimes/outputs.py): converted scikit-learn and
LightGBM graphs put an int64 label first. A ZipMap output (a sequence of {class: probability} maps) is
converted to a (n, classes) tensor. A batch dimension fixed in the graph is served in chunks of that size
(runtimes/batching.py), for ONNX Runtime and the torch view alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from governance.contract.errors import MethodError, ModelLoadError
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec
from governance.host.runtimes import batching
from governance.host.runtimes.device import check_ort_session, ort_providers
from governance.host.runtimes.outputs import (OutputChoice, OutputInfo, TaskEvidence, choose_output, detect_task,
                                              signature_output_dtypes)
from governance.host.runtimes.parity import RTOL, Parity, relative_parity

#: kept for callers of the old name: the relative parity tolerance (see runtimes/parity.py)
PARITY_TOLERANCE = RTOL

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(float16)": "float16", "tensor(bool)": "bool"}

#: operators whose output is piecewise constant in the input: no gradient view is offered for them
PIECEWISE_CONSTANT = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")


def _output_info(out: Any) -> OutputInfo:
    t = str(out.type)
    if t in _ORT_TYPES:
        return OutputInfo(out.name, "tensor", _ORT_TYPES[t], tuple(out.shape or ()))
    if t.startswith("seq(map(") and "float" in t:
        return OutputInfo(out.name, "zipmap", t)
    return OutputInfo(out.name, "other", t)


def _producer(graph: Any, name: str) -> Any:
    return next((n for n in graph.node if name in n.output), None)


def _zipmap_classes(graph: Any, name: str) -> tuple[Any, ...] | None:
    import onnx

    node = _producer(graph, name)
    if node is None or node.op_type != "ZipMap":
        return None
    for a in node.attribute:
        if a.name in ("classlabels_int64s", "classlabels_strings"):
            vals = onnx.helper.get_attribute_value(a)
            return tuple(v.decode() if isinstance(v, bytes) else int(v) for v in vals)
    return None


def _final_op(graph: Any, name: str) -> str | None:
    """The operator that computes ``name``, looking through Identity/Cast/ZipMap/Reshape wrappers."""
    node = _producer(graph, name)
    while node is not None and node.op_type in ("Identity", "Cast", "ZipMap", "Reshape", "Flatten", "Squeeze"):
        node = _producer(graph, node.input[0])
    return node.op_type if node is not None else None


class OnnxModel(LoadedModel):
    runtime = "onnxruntime"

    def __init__(self, path: Path, info: ModelVersionInfo, device: str = "cpu", batch_size: int = 256, *,
                 output: str | None = None, task: str | None = None, native_task: str | None = None) -> None:
        import onnxruntime as ort

        self.info = info
        self.path = Path(path)
        self.default_batch_size = batch_size
        self._proto = _load_checked(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("GOVERNANCE_ORT_THREADS", "0") or 0)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=ort_providers(device))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot open {self.path.name}: {exc}",
                                 hint="check the opset and operators with `python -m onnx.checker`") from exc
        self.device = check_ort_session(self.session, device)
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.fixed_batch = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) else None
        self.input_spec = TensorSpec(inp.name, (None, *[d if isinstance(d, int) else None for d in inp.shape[1:]]),
                                     _ORT_TYPES.get(inp.type, "float32"))
        self._choose(output)
        self._view: Any = None
        self._view_tried = False
        self.parity: Parity | None = None
        self._decide_task(task, native_task)
        opset = next((o.version for o in self._proto.opset_import if o.domain in ("", "ai.onnx")), None)
        self.details = {"opset": opset, "providers": self.session.get_providers(),
                        "ir_version": self._proto.ir_version, "n_nodes": len(self._proto.graph.node),
                        "fixed_batch": self.fixed_batch}
        if self.fixed_batch is not None:
            self.notes.append(batching.fixed_batch_cost(self.fixed_batch))

    @classmethod
    def from_path(cls, path: str | Path, **kw: Any) -> "OnnxModel":
        """Open a local ``.onnx`` file (tests, notebooks)."""
        info = ModelVersionInfo(uri=str(path), kind="file", name=Path(path).stem, local_path=Path(path).parent)
        return cls(Path(path), info, **kw)

    # ------------------------------------------------------------------------------------------ outputs
    def _choose(self, requested: str | None) -> None:
        outs = [_output_info(o) for o in self.session.get_outputs()]
        choice = choose_output(outs, requested)
        classes = _zipmap_classes(self._proto.graph, choice.name) if choice.kind == "zipmap" else None
        self._choice = OutputChoice(choice.name, choice.kind, choice.reason, choice.available, classes)
        self.output_choice = self._choice.to_dict()
        self._outputs = outs
        info = next(o for o in outs if o.name == choice.name)
        if choice.kind == "zipmap":
            shape: tuple[Any, ...] = (None, len(classes) if classes else None)
            dtype = "float32"
        else:
            shape = (None, *[d if isinstance(d, int) else None for d in info.shape[1:]])
            dtype = info.dtype
        self.output_spec = TensorSpec(choice.name, shape, dtype)

    def _decide_task(self, requested: str | None, native: str | None) -> None:
        from governance.host.runtimes.onnx_torch import prune

        nodes = prune(self._proto.graph, [self._choice.name])
        ml_ops = [n.op_type for n in nodes if n.domain == "ai.onnx.ml"]
        label = any(o.name != self._choice.name and o.kind == "tensor" and o.dtype.startswith("int")
                    for o in self._outputs)
        ev = TaskEvidence(n_outputs=self.n_outputs, output_dtype=self.output_spec.dtype, requested=requested,
                          native=native, onnx_ml_ops=ml_ops, has_label_output=label,
                          ends_in=_final_op(self._proto.graph, self._choice.name),
                          signature_output_dtypes=signature_output_dtypes(self.info.signature))
        self.task, self.task_reason = detect_task(ev)
        trees = sorted({n.op_type for n in nodes if n.op_type in PIECEWISE_CONSTANT})
        if trees:
            self.no_parameters_reason = (f"the graph is a tree ensemble ({', '.join(trees)}): it holds split "
                                         "thresholds and leaf values, no weight matrices")

    # ------------------------------------------------------------------------------------------ forward
    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self._choice.name], {self._input_name: x})[0]
        if self._choice.kind == "zipmap":
            keys = self._choice.classes or (tuple(sorted(out[0])) if len(out) else ())
            return np.array([[row[k] for k in keys] for row in out], dtype=np.float32).reshape(len(out), len(keys))
        return out

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and len(x) != self.fixed_batch:
            return batching.run_numpy(self._run, x, self.fixed_batch)
        return self._run(x)

    # ------------------------------------------------------------------------------------------ torch view
    @property
    def view_checked(self) -> bool:
        return self._view_tried

    def torch_module(self) -> Any:
        if not self._view_tried:
            self._view_tried = True
            self._view = self._build_view()
        return self._view

    def _build_view(self) -> Any:
        import torch

        from governance.host.runtimes.onnx_torch import Unsupported, build_torch_view, prune

        trees = sorted({n.op_type for n in prune(self._proto.graph, [self._choice.name])
                        if n.op_type in PIECEWISE_CONSTANT})
        if trees:
            self.torch_unavailable_reason = (
                f"the model is a tree ensemble ({', '.join(trees)}): its output is piecewise constant in the "
                "input, so it has no useful gradient; forward-only methods run on ONNX Runtime")
            return None
        try:
            view = build_torch_view(self._proto, output=self._choice.name)
        except Unsupported as exc:
            self.torch_unavailable_reason = f"the ONNX graph has no torch view ({exc})"
            return None
        if self.fixed_batch is not None:
            view = batching.fixed_batch_module(view, self.fixed_batch)
        probe = self._probe()
        try:
            with torch.no_grad():
                got = view(torch.from_numpy(probe)).numpy()
        except Exception as exc:
            self.torch_unavailable_reason = f"the torch view of the ONNX graph failed on a probe batch ({type(exc).__name__}: {exc})"
            return None
        self.parity = relative_parity(got, self._predict_batch(probe))
        self.parity_max_abs_diff = self.parity.max_abs_diff
        self.details["parity"] = self.parity.to_dict()
        if not self.parity.ok:
            self.torch_unavailable_reason = f"the torch view disagrees with ONNX Runtime ({self.parity.describe()})"
            return None
        if self.device == "cuda":
            view = view.to("cuda")
        return view

    def _probe(self) -> np.ndarray:
        """Three standard-normal samples (an odd count, so a fixed batch of 2 exercises the padding)."""
        shape = [3, *[d if d is not None else 1 for d in self.input_spec.sample_shape]]
        return np.random.default_rng(0).standard_normal(shape).astype(np.dtype(self.input_spec.dtype))

    def layer_names(self) -> list[str]:
        view = self.torch_module()
        return list(view.node_names) if view is not None else []

    def forward_with_activations(self, x: Any, layers: Sequence[str]) -> tuple[Any, dict[str, Any]]:
        view = self.torch_module()
        if view is None:
            return super().forward_with_activations(x, layers)
        if missing := [l for l in layers if l not in view.node_names]:
            raise MethodError(f"layer(s) {', '.join(missing)} do not exist in {self.info.display_name}",
                              hint=f"available layers: {', '.join(view.node_names)}")
        return view.run(x, layers)

    def parameters(self) -> dict[str, np.ndarray]:
        """Float initializers with at least one dimension, and the coefficient matrices that linear
        ai.onnx.ml operators hold in node attributes (``<node>/coefficients``, one row per class/target)."""
        import onnx
        from onnx import numpy_helper

        out = {}
        for init in self._proto.graph.initializer:
            arr = numpy_helper.to_array(init)
            if np.issubdtype(arr.dtype, np.floating) and arr.ndim >= 1:
                out[init.name] = np.array(arr)
        for k, node in enumerate(self._proto.graph.node):
            if node.op_type in ("LinearClassifier", "LinearRegressor"):
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                rows = len(attrs.get("intercepts", [])) or int(attrs.get("targets", 1))
                coef = np.asarray(attrs.get("coefficients", []), dtype=np.float32)
                if coef.size and rows:
                    out[f"{node.name or f'{node.op_type}_{k}'}/coefficients"] = coef.reshape(rows, -1)
        return out


def _load_checked(path: Path) -> Any:
    import onnx

    try:
        proto = onnx.load(str(path))  # by path: external weight files resolve next to it
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(
            f"{path.name} is not a valid ONNX model: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint="re-export the model (torch.onnx.export) and log it again; the file may be truncated",
        ) from exc
    return proto
