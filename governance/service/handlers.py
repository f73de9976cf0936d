"""The production job handler: explain and report on one model version.

``report_job(job)`` is what ``governance jobs work`` and ``governance serve --worker`` run by default
(``--handler module:function`` swaps it). It runs inside a fresh job process, so it may import torch and
use matplotlib freely.
"""

from __future__ import annotations

import logging
from typing import Any

from governance.contract.errors import ModelLoadError, ModelResolutionError
from governance.service.queue import Job
from governance.service.worker import RetryLater

log = logging.getLogger("governance.service.handlers")

DEFAULT_HANDLER = "governance.service.handlers:report_job"


def check_version_ready(tracking_uri: str | None, name: str, version: str) -> None:
    """Fail fast on a missing version, retry later on one still being registered.

    ``model_version.created`` fires as soon as the version row exists; with an asynchronous artifact
    upload the version can still be ``PENDING_REGISTRATION`` when the job starts.
    """
    from mlflow.exceptions import MlflowException

    from governance.host.tracking import client, resolve_tracking_uri

    try:
        mv = client(resolve_tracking_uri(tracking_uri)).get_model_version(name, version)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise ModelResolutionError(
                f"model version {name}/{version} does not exist in {tracking_uri or 'the tracking store'}",
                hint="it may have been deleted after the event; nothing to report",
            ) from None
        raise
    status = str(getattr(mv, "status", "READY") or "READY")
    if status == "PENDING_REGISTRATION":
        raise RetryLater(f"model version {name}/{version} is still being registered")
    if status == "FAILED_REGISTRATION":
        raise ModelLoadError(f"model version {name}/{version} failed to register: {mv.status_message or ''}",
                             hint="register the model again")


def report_job(job: Job) -> dict[str, Any]:
    """Explain ``job.payload['model_uri']`` with the job's RunSpec, log to MLflow, render the report.

    Reports go to ``--output-dir`` (default ``$GOVERNANCE_HOME/reports``) in ``<name>-v<version>/job-<id>/``
    (a folder of its own, so the path the job records always holds this job's report) and to the governance
    run in MLflow. A policy verdict of "fail" is a result, not a job failure: it is recorded in the job's
    result (and in the version's ``governance.status`` tag). Pickle-format models are loaded only when the
    service was started with ``--trust-pickle``, whatever the environment says.
    """
    import os

    from governance.api import explain, report_model
    from governance.host.runtimes.pickle_policy import TRUST_ENV
    from governance.report.publish import report_folder_name
    from governance.run.spec import RunSpec

    payload = job.payload
    spec = RunSpec.from_dict(payload["settings"])
    os.environ[TRUST_ENV] = "1" if spec.trust_pickle else "0"
    model_uri = payload["model_uri"]
    check_version_ready(spec.tracking_uri, payload["name"], payload["version"])
    close_abandoned_runs(spec, job)
    invocation = f"governance job {job.id} ({job.source}: {job.trigger})"
    tags = {JOB_TAG: job.key, "governance.job_id": str(job.id), "governance.job_attempt": str(job.attempts)}
    if spec.render_report:
        from governance.service.config import state_dir

        folder = report_folder_name({"name": payload["name"], "version": payload["version"]})
        root = spec.output_dir or str(state_dir() / "reports")
        spec = spec.replace(output_dir=f"{root}/{folder}/job-{job.id}")
        if job.kind == "gate":  # a gated alias was moved: report, then keep or move it back (service/gate_job.py)
            from governance.service.gate_job import gate_job

            result, outcome = gate_job(job, spec, invocation, run_tags=tags)
            return {**summarise_report(result), "gate": outcome}
        return summarise_report(report_model(model_uri, spec=spec, subfolder=False, invocation=invocation,
                                             run_tags=tags))
    from governance.api import job_folder

    with job_folder(None) as workdir:
        return summarise_run(explain(model_uri, spec=spec, invocation=invocation, workdir=workdir, run_tags=tags))


#: run tag naming the job (its idempotency key) whose attempt made the run
JOB_TAG = "governance.job_key"


def close_abandoned_runs(spec: Any, job: Job) -> list[str]:
    """An earlier attempt of this job whose worker was killed left its MLflow run RUNNING: only one attempt of
    a job runs at a time (the queue's lease), so any RUNNING run tagged with this job is dead. Mark it KILLED
    with the reason, before this attempt starts its own. Returns the closed run ids."""
    from governance.host.tracking import client, resolve_tracking_uri

    mlflow = client(resolve_tracking_uri(spec.tracking_uri))
    exp = mlflow.get_experiment_by_name(spec.experiment)
    if exp is None:
        return []
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job.key}' and "
                              "attributes.status = 'RUNNING'", max_results=100)
    closed = []
    for run in runs:
        reason = (f"job {job.id} attempt {run.data.tags.get('governance.job_attempt', '?')} did not finish "
                  f"(its worker was stopped or killed); attempt {job.attempts} took over")
        mlflow.set_tag(run.info.run_id, "governance.status", "killed")
        mlflow.set_tag(run.info.run_id, "governance.killed_reason", reason)
        mlflow.set_terminated(run.info.run_id, status="KILLED")
        log.warning("closed MLflow run %s: %s", run.info.run_id, reason)
        closed.append(run.info.run_id)
    return closed


def summarise_run(run: Any) -> dict[str, Any]:
    """A small JSON result for the queue (the full record lives in MLflow)."""
    return {
        "status": run.status,
        "mlflow_run_id": run.mlflow_run_id,
        "reused": bool(run.reused),
        "methods": {e.method: e.status for e in run.explanations},
        "reported": False,
    }


def summarise_report(result: Any) -> dict[str, Any]:
    """What the queue keeps of a report: verdict, where the files are, the MLflow run."""
    return {
        "status": result.status,
        "verdict": result.verdict,
        "run_status": result.run_status,
        "mlflow_run_id": result.run_id,
        "report_id": result.report_id,
        "out_dir": str(result.out_dir),
        "pdf": str(result.pdf_path) if result.pdf_path else None,
        "pdf_sha256": result.pdf_sha256,
        "signer": (result.signature or {}).get("name"),
        "logged_to_mlflow": bool(result.logged),
        "reported": True,
    }
