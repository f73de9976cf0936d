"""ONNX runtime: forward passes on ONNX Runtime (fast, batched), gradients and activations through the
torch view of :mod:`governance.host.runtimes.onnx_torch`, checked for parity against ONNX Runtime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from governance.contract.errors import MethodError, ModelLoadError
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec
from governance.host.runtimes.device import check_ort_session, ort_providers

#: max |Δ| between ONNX Runtime and the torch view above which the view is refused (float32 rounding
#: measured 3e-8..1.4e-7 on small CNNs; see platform-facts T10).
PARITY_TOLERANCE = 1e-4

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(float16)": "float16"}


class OnnxModel(LoadedModel):
    runtime = "onnxruntime"

    def __init__(self, path: Path, info: ModelVersionInfo, device: str = "cpu", batch_size: int = 256) -> None:
        import onnx
        import onnxruntime as ort

        self.info = info
        self.path = Path(path)
        self.default_batch_size = batch_size
        try:
            proto = onnx.load(str(self.path))  # by path: external weight files resolve next to it
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise ModelLoadError(
                f"{self.path.name} is not a valid ONNX model: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                hint="re-export the model (torch.onnx.export) and log it again; the file may be truncated",
            ) from exc
        self._proto = proto
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
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._input_name = inp.name
        self.input_spec = TensorSpec(inp.name, tuple(d if isinstance(d, int) else None for d in inp.shape),
                                     _ORT_TYPES.get(inp.type, "float32"))
        self.output_spec = TensorSpec(out.name, tuple(d if isinstance(d, int) else None for d in out.shape),
                                      _ORT_TYPES.get(out.type, "float32"))
        self._view: Any = None
        self._view_tried = False
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        self.details = {"opset": opset, "providers": self.session.get_providers(),
                        "ir_version": proto.ir_version, "n_nodes": len(proto.graph.node)}

    @classmethod
    def from_path(cls, path: str | Path, **kw: Any) -> "OnnxModel":
        """Open a local ``.onnx`` file (tests, notebooks)."""
        info = ModelVersionInfo(uri=str(path), kind="file", name=Path(path).stem, local_path=Path(path).parent)
        return cls(Path(path), info, **kw)

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: x})[0]

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

        from governance.host.runtimes.onnx_torch import build_torch_view

        try:
            view = build_torch_view(self._proto)
        except Exception as exc:
            self.torch_unavailable_reason = f"the ONNX graph has no torch view ({exc})"
            return None
        probe_shape = [2, *[d if d is not None else 1 for d in self.input_spec.sample_shape]]
        probe = np.random.default_rng(0).standard_normal(probe_shape).astype(np.float32)
        try:
            with torch.no_grad():
                got = view(torch.from_numpy(probe)).numpy()
        except Exception as exc:
            self.torch_unavailable_reason = f"the torch view of the ONNX graph failed on a probe batch ({type(exc).__name__}: {exc})"
            return None
        ref = self._predict_batch(probe)
        diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
        self.parity_max_abs_diff = diff
        scale = max(1.0, float(np.max(np.abs(ref))))
        if not diff <= PARITY_TOLERANCE * scale:
            self.torch_unavailable_reason = (
                f"the torch view disagrees with ONNX Runtime (max |Δ| = {diff:.3g} on a probe batch)")
            return None
        if self.device == "cuda":
            view = view.to("cuda")
        return view

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
        from onnx import numpy_helper

        out = {}
        for init in self._proto.graph.initializer:
            arr = numpy_helper.to_array(init)
            if np.issubdtype(arr.dtype, np.floating) and arr.ndim >= 1:
                out[init.name] = np.array(arr)
        return out
