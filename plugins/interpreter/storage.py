"""Saving, reloading and logging a trained interpreter.

On disk an interpreter is a folder with ``interpreter.json`` (the :class:`InterpreterSpec`: tapped layers,
their shapes, J, C, input shape ...) and ``interpreter.pt`` (a plain ``state_dict``, loaded with
``weights_only=True``: no pickled code). :func:`load_interpreter` rebuilds it from either file or the folder.

In MLflow the interpreter is also logged as a model of its own (``mlflow.pytorch``, pt2 format: loads without
this package) whose input is the predictor's tapped activations, flattened and concatenated in
``spec.layers`` order, and whose output is the interpreter's class logits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from governance_plugins.interpreter.nets import (FlatActivationsInterpreter, FlintInterpreter, InterpreterSpec,
                                                 flatten_activations)

SPEC_FILE = "interpreter.json"
WEIGHTS_FILE = "interpreter.pt"


def save_interpreter(interp: FlintInterpreter, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the interpreter's spec and weights into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"spec": interp.spec.to_dict(), **(extra or {})}
    (folder / SPEC_FILE).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    torch.save({k: v.detach().cpu() for k, v in interp.state_dict().items()}, folder / WEIGHTS_FILE)
    return folder


def load_interpreter(path: str | Path, map_location: str = "cpu") -> FlintInterpreter:
    """Rebuild an interpreter saved by :func:`save_interpreter` (the folder, or either of its two files),
    in eval mode."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / SPEC_FILE).exists():
        from governance.errors import GovernanceError

        raise GovernanceError(f"no {SPEC_FILE} in {folder}",
                              hint="pass the folder written by the interpreter method (explanations/interpreter/model)")
    doc = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    interp = FlintInterpreter(InterpreterSpec.from_dict(doc["spec"]))
    state = torch.load(folder / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    interp.load_state_dict(state)
    interp.eval()
    return interp


def interpret(interp: FlintInterpreter, model: Any, x: Any) -> dict[str, Any]:
    """Run a reloaded interpreter on new inputs of the predictor it was trained on (a LoadedModel):
    returns the interpreter's logits, the attributes Φ and the paper-variant relevances."""
    import numpy as np

    from governance_plugins.interpreter import metrics as M

    interp.eval()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    with torch.no_grad():
        _, acts = model.forward_with_activations(xt.to(model.device), interp.spec.layers)
        g, phi = interp([acts[l].float().to(next(interp.parameters()).device) for l in interp.spec.layers])
    g, phi = g.cpu().numpy(), phi.cpu().numpy()
    pred = g.argmax(1)
    return {"logits": g, "attributes": phi, "pred": pred,
            "relevances": M.relevances(M.contributions(phi, interp.W.cpu().numpy(), pred))}


def log_to_mlflow(interp: FlintInterpreter, example_acts: list[torch.Tensor], folder: Path, *,
                  name: str = "interpreter", registered_model_name: str | None = None,
                  tags: dict[str, str] | None = None, log_files: bool = False) -> dict[str, Any]:
    """Log the interpreter as an MLflow model inside the active run (nothing when no run is active).

    ``log_files`` also logs ``folder`` (spec + weights) under ``<name>_files``; the post-hoc method leaves that
    to the host, which logs its whole work folder. Returns what the report and users need to find and
    reload the model."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return {"logged": False, "reason": "no active MLflow run (the interpreter is saved with the run's "
                "artifacts only, as interpreter.json + interpreter.pt)"}
    flat = FlatActivationsInterpreter(copy.deepcopy(interp).cpu()).eval()
    example = flatten_activations([a[:4].float().cpu() for a in example_acts]).numpy()
    info = mlflow.pytorch.log_model(
        flat, name=name, input_example=example, registered_model_name=registered_model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        metadata={"governance.kind": "flint-interpreter", "layers": interp.spec.layers,
                  "layer_shapes": interp.spec.layer_shapes, "source_model": interp.spec.source_model},
    )
    out = {"logged": True, "model_uri": info.model_uri, "run_id": run.info.run_id, "name": name,
           "format": "mlflow.pytorch (pt2)",
           "input": "tapped activations flattened and concatenated in the order of 'layers'",
           "output": "interpreter class logits", "layers": interp.spec.layers}
    if log_files:
        mlflow.log_artifacts(str(folder), artifact_path=f"{name}_files")
        out["files_artifact_path"] = f"{name}_files"
    if registered_model_name:
        out["registered_model_name"] = registered_model_name
        out["registered_model_version"] = getattr(info, "registered_model_version", None)
    if tags and registered_model_name and out.get("registered_model_version"):
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_model_version_tag(registered_model_name, str(out["registered_model_version"]), k, v)
    return out
