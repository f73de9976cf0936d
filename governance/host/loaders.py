"""Built-in model loaders for the ``onnx`` and ``pytorch`` MLflow flavors (a host plugin: essential)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from governance.contract.hookspecs import hookimpl

if TYPE_CHECKING:  # registered on every start (even `governance --help`): no numpy at import time
    from governance.contract.model import LoadedModel, ModelVersionInfo


@hookimpl
def load_model(info: "ModelVersionInfo", options: dict[str, Any]) -> "LoadedModel | None":
    device = options.get("device", "auto")
    batch_size = int(options.get("batch_size") or 256)
    flavors = info.flavors or {}
    if "onnx" in flavors:
        from governance.host.runtimes.onnx_model import OnnxModel

        rel = flavors["onnx"].get("data", "model.onnx")
        return OnnxModel(info.local_path / rel if info.local_path else rel, info, device=device, batch_size=batch_size)
    if "pytorch" in flavors:
        from governance.host.runtimes.device import torch_device
        from governance.host.runtimes.torch_model import load_torch_model

        return load_torch_model(info, torch_device(device), batch_size, trust_pickle=options.get("trust_pickle"))
    return None
