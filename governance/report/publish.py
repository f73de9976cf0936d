"""Publishing a built report: log its files to the governance run in MLflow and tag the model version.

MLflow layout: the report files go under ``report/`` in the same run as the explanations, so the run's
artifact root is the evidence root the manifest refers to (``report/`` sits beside ``explanations/``).
Model-version tags: ``governance.report_run_id``, ``governance.report_sha256`` (the PDF's sha256),
``governance.report_id``, ``governance.run_status`` (ok | partial | failed), ``governance.verdict`` (the policy
verdict, ``none`` without a policy) and ``governance.status``, the one-word summary: the verdict when a policy
was applied, else the run's status. A signed report adds ``governance.report_signer`` and
``governance.report_signer_sha256`` (the signing certificate's sha256) on the run and the version.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from governance.contract.errors import TrackingError
from governance.report.build import ReportResult

log = logging.getLogger("governance.report")

REPORT_ARTIFACT_PATH = "report"


def report_folder_name(model: Mapping[str, Any]) -> str:
    """``<name>-v<version>`` (or the model URI's last part), safe as a folder name."""
    name, version = model.get("name"), model.get("version")
    raw = f"{name}-v{version}" if name and version else str(model.get("uri") or "model").rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "model"


def previous_version_record(tracking_uri: str | None, model: Mapping[str, Any]) -> dict[str, Any] | None:
    """The previous version (found by the run, ``model["previous_version"]``) as the registry and its governance
    run know it: status, governance tags, content hash and the explanation metrics its governance run logged (for
    the cross-version comparison section). Best effort: a registry hiccup must not lose the report."""
    prev = model.get("previous_version")
    if not isinstance(prev, Mapping) or not model.get("name") or not prev.get("version"):
        return prev
    out = dict(prev)
    try:
        from governance.host.tracking import client as make_client, resolve_tracking_uri

        client = make_client(resolve_tracking_uri(tracking_uri))
        mv = client.get_model_version(model["name"], str(prev["version"]))
    except Exception as exc:  # the record is a courtesy: a registry hiccup must not lose the report
        log.warning("report: cannot read %s version %s: %s", model["name"], prev["version"], exc)
        return out
    from datetime import datetime, timezone

    out.update({"registry_status": mv.status, "training_run_id": mv.run_id})
    if mv.creation_timestamp:
        out["registered_at"] = datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(
            timespec="seconds")
    tags = dict(mv.tags or {})
    for key in ("governance.status", "governance.report_id", "governance.report_sha256", "governance.run_id"):
        if tags.get(key):
            out[key.replace(".", "_")] = tags[key]
    if tags.get("governance.run_id"):
        try:
            gov = client.get_run(tags["governance.run_id"])
            out["governance_metrics"] = {k: v for k, v in gov.data.metrics.items() if not k.endswith(".seconds")}
            if gov.data.tags.get("governance.model_sha256"):
                out["content_sha256"] = gov.data.tags["governance.model_sha256"]
        except Exception as exc:
            log.warning("report: cannot read governance run %s: %s", tags["governance.run_id"], exc)
    return out


def signer_tags(result: ReportResult) -> dict[str, str]:
    """Who signed the report (empty for an unsigned one): the certificate's name and sha256."""
    sig = result.signature or {}
    if not sig:
        return {}
    return {"governance.report_signer": str(sig.get("name") or "")[:250],
            "governance.report_signer_sha256": str(sig.get("certificate_sha256") or "")}


def publish_report(result: ReportResult, run: Any, *, tracking_uri: str | None = None) -> dict[str, str]:
    """Log the report files under ``report/`` in the run and set the run and model-version tags.

    Returns the tags set on the model version (empty for a model that is not in the registry)."""
    if isinstance(run, Mapping):
        mlf = run.get("mlflow") or {}
        run_id, model, uri = mlf.get("run_id"), run.get("model") or {}, tracking_uri or mlf.get("tracking_uri")
    else:
        run_id, model, uri = run.mlflow_run_id, run.model, tracking_uri or run.tracking_uri
    if not run_id:
        raise TrackingError("the run has no MLflow run id, so the report cannot be logged",
                            hint="report on a run made by `governance run`/`governance.explain`, or use --no-log")
    from governance.host.tracking import client as make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(uri))
    try:
        for path in result.files:
            client.log_artifact(run_id, str(path), REPORT_ARTIFACT_PATH)
        run_tags = {"governance.report_id": result.report_id, "governance.report_sha256": result.pdf_sha256 or "",
                    "governance.report_json_sha256": result.json_sha256,
                    "governance.report_verdict": result.verdict or "none", **signer_tags(result)}
        for k, v in run_tags.items():
            if v:
                client.set_tag(run_id, k, v)
        version_tags: dict[str, str] = {}
        if model.get("kind", "registry") == "registry" and model.get("name") and model.get("version"):
            version_tags = {"governance.report_run_id": run_id, "governance.report_id": result.report_id,
                            "governance.report_sha256": result.pdf_sha256 or result.json_sha256,
                            "governance.run_status": result.run_status or "unknown",
                            "governance.verdict": result.verdict or "none", "governance.status": result.status,
                            **signer_tags(result)}
            for k, v in version_tags.items():
                client.set_model_version_tag(model["name"], str(model["version"]), k, v)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"could not log the report to MLflow run {run_id}: {type(exc).__name__}: {exc}",
                            hint=f"the report files are kept in {result.out_dir}; check the tracking store") from exc
    result.run_id, result.logged, result.version_tags = run_id, True, version_tags
    return version_tags
