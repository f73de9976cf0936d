"""Everything governance writes to MLflow: a new run per explanation job, its artifacts and metrics, and
the ``governance.*`` tags on the model version. It never writes into the model's own artifacts."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from governance.contract.errors import TrackingError
from governance.contract.model import ModelVersionInfo
from governance.contract.results import Explanation

log = logging.getLogger("governance.run.sink")

TAG_PREFIX = "governance."


class MlflowSink:
    def __init__(self, tracking_uri: str) -> None:
        from governance.host.tracking import client

        self.tracking_uri = tracking_uri
        self.client = client(tracking_uri)

    # ------------------------------------------------------------------------------------------ runs
    def experiment_id(self, name: str) -> str:
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            return self.client.create_experiment(name, tags={"governance.kind": "explanations"})
        except Exception as exc:
            raise TrackingError(f"cannot open experiment '{name}' in {self.tracking_uri}: {exc}",
                                hint="check the tracking store is writable") from exc

    def previous_runs(self, experiment_id: str, config_hash: str) -> list[Any]:
        """Earlier runs with the same configuration hash, newest first."""
        try:
            return self.client.search_runs(
                [experiment_id], filter_string=f"tags.`governance.config_hash` = '{config_hash}'",
                order_by=["attributes.start_time DESC"], max_results=20)
        except Exception as exc:
            raise TrackingError(f"cannot search runs in {self.tracking_uri}: {exc}") from exc

    def start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        try:
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        except Exception as exc:
            raise TrackingError(f"cannot create a run in {self.tracking_uri}: {exc}") from exc
        return run.info.run_id

    def log_explanation(self, run_id: str, explanation: Explanation, folder: Path, model_id: str | None) -> None:
        """Upload ``folder`` as ``explanations/<method>/`` and log the metrics as ``<method>.<metric>``."""
        from mlflow.entities import Metric

        self.client.log_artifacts(run_id, str(folder), f"explanations/{explanation.method}")
        now = int(time.time() * 1000)
        values = {k: v for k, v in explanation.metrics.items() if _is_number(v)}
        if explanation.seconds is not None:
            values["seconds"] = explanation.seconds
        values.update(control_metrics(explanation))
        # metrics that carry the model id also show up on the logged model's page
        metrics = [Metric(f"{explanation.method}.{k}", float(v), now, 0, model_id=model_id) for k, v in values.items()]
        for i in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[i : i + 900])
        self.client.set_tag(run_id, f"governance.method.{explanation.method}", explanation.status)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str) -> None:
        """MLflow status: FINISHED when every method ran or was skipped, FAILED otherwise."""
        self.client.set_tag(run_id, "governance.status", status)
        self.client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")

    def fail_quietly(self, run_id: str, reason: str) -> None:
        try:
            self.client.set_tag(run_id, "governance.error", reason[:4000])
            self.client.set_tag(run_id, "governance.status", "failed")
            self.client.set_terminated(run_id, "FAILED")
        except Exception:  # the store itself is what failed
            log.warning("could not mark run %s as failed", run_id)

    # ------------------------------------------------------------------------------------------ versions
    def tag_version(self, info: ModelVersionInfo, tags: dict[str, str]) -> None:
        if info.kind != "registry" or not info.name or not info.version:
            return
        for key, value in tags.items():
            self.client.set_model_version_tag(info.name, info.version, key, str(value))

    def download_run_folder(self, run_id: str, dst: Path) -> Path:
        import mlflow.artifacts

        dst.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="run.json", dst_path=str(dst),
                                            tracking_uri=self.tracking_uri)
        try:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="explanations", dst_path=str(dst),
                                                tracking_uri=self.tracking_uri)
        except Exception:  # a run whose methods were all skipped has no explanations folder
            pass
        return dst

    def source_run_summary(self, run_id: str | None) -> dict[str, Any]:
        """Params, metrics and lineage tags of the run that produced the model (for the report)."""
        if not run_id:
            return {}
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return {}
        keep = ("mlflow.source.git.commit", "mlflow.source.name", "mlflow.user", "mlflow.runName",
                "mlflow.source.type")
        return {
            "run_id": run_id,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": {k: v for k, v in run.data.tags.items() if k in keep},
            "start_time": run.info.start_time,
            "experiment_id": run.info.experiment_id,
            "datasets": [
                {"name": di.dataset.name, "digest": di.dataset.digest, "source_type": di.dataset.source_type}
                for di in (run.inputs.dataset_inputs if run.inputs else [])
            ],
        }


def control_metrics(explanation: Explanation) -> dict[str, float]:
    """``<metric>.control.<key>`` per control, ``<metric>.control`` for the control the figure beats by the least
    (its hardest), and ``<metric>.informative`` (1 or 0) per figure (see :mod:`governance.contract.evidence`)."""
    out: dict[str, float] = {}
    hardest: dict[str, Any] = {}
    for c in explanation.controls:
        if _is_number(c.control_value):
            out[f"{c.metric}.control.{c.key}"] = c.control_value
        if c.metric not in hardest or c.advantage - c.margin < hardest[c.metric].advantage - hardest[c.metric].margin:
            hardest[c.metric] = c
    for metric, c in hardest.items():
        if _is_number(c.control_value):
            out[f"{metric}.control"] = c.control_value
    for metric, verdict in explanation.verdicts().items():
        out[f"{metric}.informative"] = 1.0 if verdict == "informative" else 0.0
    return out


def _is_number(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)
