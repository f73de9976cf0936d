"""Saving, reloading and logging a trained interpreter.

On disk an interpreter is a folder with ``interpreter.json`` (the :class:`InterpreterSpec`: tapped layers,
their shapes, J, C, input shape ...) and ``interpreter.pt`` (a plain ``state_dict``, loaded with
``weights_only=True``: no pickled code). :func:`load_interpreter` rebuilds it from either file or the folder.

In MLflow the interpreter is also logged as a model of its own (``mlflow.pytorch``, pt2 format: loads without
this package) under ``interpreter_model/`` of the governance run, written with an ``MlflowClient`` into the run
the host names in ``ctx.options["run_id"]`` (no fluent run is started). Its input is the predictor's tapped
activations, flattened and concatenated in ``spec.layers`` order; its output is the interpreter's class logits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from governance_plugins.interpreter.nets import (FlatActivationsInterpreter, FlintInterpreter, InterpreterSpec,
                                                 flatten_activations)

MODEL_FOLDER = "model"
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


#: where the interpreter is logged as an MLflow model inside the governance run
ARTIFACT_PATH = "interpreter_model"


def run_target(options: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(tracking URI, run id, where they came from): the host's ``ctx.options`` first, else an MLflow run
    the caller made active (read only; the method never starts one)."""
    uri, run_id = options.get("tracking_uri"), options.get("run_id")
    if run_id:
        return uri, str(run_id), "the governance run"
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return uri or mlflow.get_tracking_uri(), active.info.run_id, "the active MLflow run"
    return uri, None, ""


def log_to_mlflow(interp: FlintInterpreter, example_acts: list[torch.Tensor], *, tracking_uri: str | None,
                  run_id: str, artifact_path: str = ARTIFACT_PATH, registered_model_name: str | None = None,
                  tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Log the interpreter as an MLflow model (pt2 format) into run ``run_id`` with an ``MlflowClient``, and
    optionally register it. Returns what the report and users need to find and reload the model."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    flat = FlatActivationsInterpreter(copy.deepcopy(interp).cpu()).eval()
    example = flatten_activations([a[:4].float().cpu() for a in example_acts]).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.pytorch.save_model(
            flat, str(path), input_example=example, serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={"governance.kind": "flint-interpreter", "layers": interp.spec.layers,
                      "layer_shapes": interp.spec.layer_shapes, "source_model": interp.spec.source_model})
        client.log_artifacts(run_id, str(path), artifact_path)
    out: dict[str, Any] = {
        "logged": True, "model_uri": f"runs:/{run_id}/{artifact_path}", "run_id": run_id,
        "artifact_path": artifact_path, "format": "mlflow.pytorch (pt2)",
        "input": "tapped activations flattened and concatenated in the order of 'layers'",
        "output": "interpreter class logits", "layers": interp.spec.layers}
    if registered_model_name:
        out.update(register(client, registered_model_name, run_id, artifact_path, tags or {}))
    return out


def register(client: Any, name: str, run_id: str, artifact_path: str, tags: dict[str, str]) -> dict[str, Any]:
    """Register the logged interpreter as a new version of ``name`` (created when missing), with ``tags``."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")) and "already exists" not in str(exc):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    mv = client.create_model_version(name, source, run_id=run_id, tags={str(k): str(v) for k, v in tags.items()})
    return {"registered_model_name": name, "registered_model_version": str(mv.version)}


def save_and_log(method: Any, ctx: Any, interp: FlintInterpreter, plan: Any, ev: Any) -> tuple[dict[str, Any], list[str]]:
    """Save the interpreter in the method's folder (the host uploads it with the other files) and, when
    ``log_model`` is on, log it as an MLflow model into the governance run. A failure to log is a warning:
    the interpretations stand, only the extra MLflow copy is missing."""
    cfg = ctx.config
    save_interpreter(interp, ctx.workdir / MODEL_FOLDER, extra={
        "method": method.name, "method_version": method.version, "seed": int(ctx.seed),
        "config": cfg.model_dump(), "fidelity": ev.metrics["fidelity"]})
    warnings: list[str] = []
    files = {"files": f"{MODEL_FOLDER}/{SPEC_FILE}, {MODEL_FOLDER}/{WEIGHTS_FILE}",
             "reload": "governance_plugins.interpreter.load_interpreter(<folder>)"}
    if not cfg.log_model:
        return {"logged": False, "reason": "log_model is off", **files}, warnings
    uri, run_id, where = run_target(ctx.options)
    if run_id is None:
        reason = ("no run to log into: ctx.options has no 'run_id' and no MLflow run is active; the interpreter is "
                  "kept only as files in the method's folder")
        warnings.append(f"the interpreter was not logged as an MLflow model: {reason}.")
        return {"logged": False, "reason": reason, **files}, warnings
    example = [a[:4] for a in plan_example_acts(ctx, plan)]
    try:
        info = log_to_mlflow(interp, example, tracking_uri=uri, run_id=run_id, registered_model_name=cfg.register_as,
                             tags={"governance.interprets": ctx.model.info.uri, "governance.kind": "flint-interpreter"})
        info["logged_into"] = where
    except Exception as exc:  # the interpretations stand; only the extra MLflow copy is missing
        info = {"logged": False, "reason": f"{type(exc).__name__}: {exc}"}
        warnings.append(f"the interpreter could not be logged as an MLflow model: {type(exc).__name__}: {exc}")
    return {**info, **files}, warnings


def plan_example_acts(ctx: Any, plan: Any) -> list[torch.Tensor]:
    """The tapped activations of four held-out inputs (the logged model's input example)."""
    x = torch.from_numpy(plan.X[plan.n_train : plan.n_train + 4]).to(ctx.model.device)
    with torch.no_grad():
        _, acts = ctx.model.forward_with_activations(x, plan.spec.layers)
    return [acts[l].detach().float().cpu() for l in plan.spec.layers]
