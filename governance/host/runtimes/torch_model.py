"""PyTorch runtime: plain ``nn.Module`` objects (pickle flavor, in-memory) and ``torch.export`` graphs
(MLflow's default ``pt2`` flavor, which loads as a ``torch.fx.GraphModule`` whose forward hooks never
fire and whose ``eval()`` raises; hidden activations are read with a ``torch.fx.Interpreter`` instead)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from governance.contract.errors import MethodError, ModelLoadError
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec
from governance.host.runtimes import batching
from governance.host.runtimes.outputs import TaskEvidence, detect_task, signature_output_dtypes


def _is_export_graph(module: Any) -> bool:
    import torch

    return isinstance(module, torch.fx.GraphModule)


class TorchModel(LoadedModel):
    runtime = "torch"

    def __init__(
        self,
        module: Any,
        info: ModelVersionInfo,
        input_spec: TensorSpec,
        output_spec: TensorSpec | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        task: str | None = None,
    ) -> None:
        self.info = info
        self.device = device
        self.default_batch_size = batch_size
        self._fx = _is_export_graph(module)
        if not self._fx:
            module.eval()
        self._module = module.to(device) if not self._fx or device != "cpu" else module
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.input_spec = TensorSpec(input_spec.name, (None, *input_spec.sample_shape), input_spec.dtype)
        self.fixed_batch = _export_batch(self._module) if self._fx else None
        out = self._probe_output()
        self.output_spec = output_spec or TensorSpec("output", (None, *out.shape[1:]),
                                                     str(out.dtype).replace("torch.", ""))
        self.details = {"format": "torch.export (pt2)" if self._fx else "nn.Module", "fixed_batch": self.fixed_batch}
        if self.fixed_batch is not None:
            self.notes.append(batching.fixed_batch_cost(self.fixed_batch))
        self.task, self.task_reason = detect_task(TaskEvidence(
            n_outputs=self.n_outputs, output_dtype=self.output_spec.dtype, requested=task,
            ends_in=_final_op(self._module, self._fx),
            signature_output_dtypes=signature_output_dtypes(info.signature)))

    def _probe_output(self) -> Any:
        """One forward pass on zeros (two rows, or the fixed batch) to learn the output shape; a graph that
        refuses two rows although it declares no fixed batch is treated as fixed at 1."""
        import torch

        shape = [d or 1 for d in self.input_spec.sample_shape]
        dtype = getattr(torch, self.input_spec.dtype, torch.float32)
        try:
            with torch.no_grad():
                return self._call(torch.zeros((2, *shape), dtype=dtype, device=self.device))
        except Exception:
            if self.fixed_batch is not None or not self._fx:
                raise
            self.fixed_batch = 1
            with torch.no_grad():
                return self._call(torch.zeros((2, *shape), dtype=dtype, device=self.device))

    def _call(self, x: Any) -> Any:
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            return batching.run_torch(self._module, x, self.fixed_batch)
        return self._module(x)

    @classmethod
    def from_module(cls, module: Any, input_shape: Sequence[int], *, name: str = "in-memory", **kw: Any) -> "TorchModel":
        """Wrap an in-memory module (tests, notebooks). ``input_shape`` is one sample's shape."""
        info = ModelVersionInfo(uri=f"memory:{name}", kind="memory", name=name)
        return cls(module, info, TensorSpec("input", (None, *input_shape)), **kw)

    # ------------------------------------------------------------------------------------------ forward
    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self._call(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.detach().cpu().numpy()

    def torch_module(self) -> Any:
        if self.fixed_batch is not None:
            if getattr(self, "_batched", None) is None:
                self._batched = batching.fixed_batch_module(self._module, self.fixed_batch)
            return self._batched
        return self._module

    # ------------------------------------------------------------------------------------------ layers
    def layer_names(self) -> list[str]:
        if self._fx:
            return [name for name, _ in self._fx_layer_nodes()]
        return [n for n, _ in self._module.named_modules() if n]

    def _fx_layer_nodes(self) -> list[tuple[str, Any]]:
        """(layer name, fx node) for every computing node; names follow the original module tree where
        ``nn_module_stack`` says so (``conv1``, ``relu1``), else the node name."""
        out, used = [], set()
        for node in self._module.graph.nodes:
            if node.op not in ("call_function", "call_module", "call_method"):
                continue
            stack = node.meta.get("nn_module_stack") or {}
            name = None
            if stack:
                path = list(stack.values())[-1]
                path = path[0] if isinstance(path, tuple) else path
                name = str(path).replace("L['self'].", "").replace("L__self___", "") or None
            if not name or name in used:
                name = node.name if not name else f"{name}:{node.name}"
            used.add(name)
            out.append((name, node))
        return out

    def forward_with_activations(self, x: Any, layers: Sequence[str]) -> tuple[Any, dict[str, Any]]:
        import torch

        known = self.layer_names()
        if missing := [l for l in layers if l not in known]:
            raise MethodError(
                f"layer(s) {', '.join(missing)} do not exist in {self.info.display_name}",
                hint=f"available layers: {', '.join(known)}",
            )
        acts: dict[str, torch.Tensor] = {}
        if self._fx:
            wanted = {node: name for name, node in self._fx_layer_nodes() if name in layers}

            class Recorder(torch.fx.Interpreter):
                def run_node(self, n):  # noqa: D401 - torch.fx API
                    result = super().run_node(n)
                    if n in wanted:
                        acts[wanted[n]] = result
                    return result

            def record(chunk: Any) -> tuple[Any, dict[str, Any]]:
                acts.clear()
                out = Recorder(self._module).run(chunk)
                return (out[0] if isinstance(out, (tuple, list)) else out), dict(acts)

            if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
                return batching.run_torch(record, x, self.fixed_batch)
            return record(x)
        modules = dict(self._module.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda _m, _i, o, name=name: acts.__setitem__(name, o))
            for name in layers
        ]
        try:
            out = self._module(x)
        finally:
            for h in handles:
                h.remove()
        return out, acts

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self._module.state_dict().items()
                if v.dtype.is_floating_point}


def _export_batch(module: Any) -> int | None:
    """The batch size a ``torch.export`` graph was specialised to (an int in its input placeholder's
    example value), or None when the batch is symbolic."""
    for node in module.graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None or len(shape) == 0:
            return None
        first = shape[0]
        return int(first) if isinstance(first, int) else None
    return None


def _final_op(module: Any, fx: bool) -> str | None:
    """Name of the last operation (``Sigmoid``/``Softmax`` matter for task detection)."""
    try:
        if fx:
            out = next(n for n in reversed(module.graph.nodes) if n.op == "output")
            src = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
            name = str(getattr(src, "target", ""))
            return "Sigmoid" if "sigmoid" in name else ("Softmax" if "softmax" in name else name)
        children = list(module.children())
        last = children[-1] if children else module
        return type(last).__name__
    except Exception:
        return None


def load_torch_model(info: ModelVersionInfo, device: str, batch_size: int, task: str | None = None,
                     trust_pickle: bool | None = None) -> TorchModel:
    """Load the ``pytorch`` flavor from ``info.local_path`` (pt2, or pickle when trusted: ``trust_pickle``
    is an explicit opt-in, None lets :func:`~governance.host.runtimes.pickle_policy.pickle_decision` decide)."""
    import mlflow.pytorch
    import torch

    from governance.host.runtimes.pickle_policy import mlflow_pickle_switch, pickle_decision, refusal

    decision = pickle_decision(explicit=trust_pickle)
    if not decision.allowed and _is_pickle_format(info):
        raise refusal(info.display_name, "is a pickle-format PyTorch model (data/model.pth)", decision)
    try:
        with mlflow_pickle_switch(decision.allowed):
            module = mlflow.pytorch.load_model(str(info.local_path), map_location=torch.device(device))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"the pickled PyTorch model needs module '{exc.name}', which is not importable here",
            hint="install the package that defines the model class, or re-log the model with code_paths= "
            "or in the pt2 format (mlflow.pytorch.log_model's default)",
        ) from exc
    except Exception as exc:
        if not decision.allowed and "pickle" in str(exc).lower():
            raise refusal(info.display_name, "is a pt2 archive with pickled records", decision) from None
        raise ModelLoadError(f"could not load the PyTorch model from {info.uri}: {type(exc).__name__}: {exc}",
                             hint="check that the model was logged with mlflow.pytorch.log_model") from exc
    spec = _input_spec_from_signature(info)
    if spec is None:
        raise ModelLoadError(
            f"{info.display_name} has no input signature, so its input shape is unknown",
            hint="log the model with an input_example (or signature) of shape (batch>=2, ...)",
        )
    return TorchModel(module, info, spec, device=device, batch_size=batch_size, task=task)


def _is_pickle_format(info: ModelVersionInfo) -> bool:
    """MLflow's pytorch flavor stores a pickle as ``<model_data>/model.pth`` (or as the file itself)."""
    data = (info.flavors.get("pytorch") or {}).get("model_data", "data")
    path = info.local_path / data if info.local_path is not None else None
    return path is not None and (path.is_file() or (path / "model.pth").exists())


def _input_spec_from_signature(info: ModelVersionInfo) -> TensorSpec | None:
    sig = info.signature or {}
    inputs = sig.get("inputs") or []
    if not inputs:
        return None
    first = inputs[0]
    ts = first.get("tensor-spec") or {}
    shape = first.get("shape") or ts.get("shape")
    dtype = first.get("dtype") or ts.get("dtype") or "float32"
    if shape is None:
        # column-based (tabular) signature: one feature per column
        return TensorSpec("input", (None, len(inputs)), "float32")
    return TensorSpec(first.get("name") or "input", tuple(None if d in (-1, None) else int(d) for d in shape), dtype)
