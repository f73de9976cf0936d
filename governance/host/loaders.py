"""Built-in model loaders (a host plugin: essential): the ``onnx`` and ``pytorch`` MLflow flavors, and the
``sklearn``, ``lightgbm`` and ``xgboost`` flavors converted to ONNX at load time (runtimes/sklearn_model.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from governance.contract.hookspecs import hookimpl

if TYPE_CHECKING:  # registered on every start (even `governance --help`): no numpy at import time
    from governance.contract.model import LoadedModel, ModelVersionInfo


@hookimpl
def load_model(info: "ModelVersionInfo", options: dict[str, Any]) -> "LoadedModel | None":
    device = options.get("device", "auto")
    batch_size = int(options.get("batch_size") or 256)
    output = options.get("output") or None
    task = options.get("task") or None
    if task == "auto":
        task = None
    flavors = info.flavors or {}
    if "onnx" in flavors:
        from governance.host.runtimes.onnx_model import OnnxModel

        rel = flavors["onnx"].get("data", "model.onnx")
        return OnnxModel(info.local_path / rel if info.local_path else rel, info, device=device,
                         batch_size=batch_size, output=output, task=task)
    if "pytorch" in flavors:
        from governance.host.runtimes.device import torch_device
        from governance.host.runtimes.torch_model import load_torch_model

        _no_output_choice(output, "PyTorch")
        return load_torch_model(info, torch_device(device), batch_size, task=task,
                                trust_pickle=options.get("trust_pickle"))
    from governance.host.runtimes.sklearn_model import FLAVORS, load_tabular_model

    flavor = next((f for f in ("lightgbm", "xgboost", "sklearn") if f in flavors), None)
    if flavor in FLAVORS:
        return load_tabular_model(info, flavor, device=device, batch_size=batch_size, output=output, task=task,
                                  trust_pickle=options.get("trust_pickle"))
    return None


def _no_output_choice(output: str | None, what: str) -> None:
    if output:
        from governance.contract.errors import ConfigError

        raise ConfigError(f"--output {output} was given, but a {what} model has a single output",
                          hint="--output chooses among the outputs of an ONNX graph; drop it for this model")
