"""A hostile pickle-format PyTorch model for the safe-loading tests: a genuine MLflow model folder whose
``data/model.pth``, once unpickled, creates a marker file (``open(marker, "w")``). The marker's absence
after a refused load proves the payload never ran; its presence after a trusted load proves it is real."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: D105
        return (open, (self.marker, "w"))


def write_payload_model(folder: Path, marker: Path) -> Path:
    """An MLflow pytorch model folder (pickle format, with a signature) carrying the payload."""
    import mlflow.pytorch
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    mlflow.pytorch.save_model(module, str(folder), serialization_format="pickle",
                              input_example=np.zeros((2, 4), dtype=np.float32), pip_requirements=["torch"])
    torch.save(_Payload(marker), str(folder / "data" / "model.pth"))
    assert not Path(marker).exists()
    return folder


def register_payload_model(tracking_uri: str, name: str, marker: Path, workdir: Path) -> str:
    """Log the payload model as run artifacts in ``tracking_uri`` and register it; returns models:/name/N."""
    import mlflow

    folder = write_payload_model(workdir / f"{name}-model", marker)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("payloads")
    exp_id = exp.experiment_id if exp else client.create_experiment("payloads")
    run = client.create_run(exp_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # already registered by an earlier test in the session
        pass
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return f"models:/{name}/{mv.version}"
