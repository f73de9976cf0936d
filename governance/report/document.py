"""``report.json``: the report's source of truth, assembled from a run document, human fields and a policy.

Templates render this document and nothing else (plus the figure files it names), so the HTML and PDF
say exactly what the JSON says. Every derived block keeps the run's raw values; the full run document
is kept under ``run`` for machine readers.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any, Mapping

from governance.report.card import HumanField
from governance.report.crosswalk import DISCLAIMER, FRAMEWORKS, SECTIONS

SCHEMA = "governance.report/1"
TITLE = "Model validation and explainability test report"
NOT_PROVIDED = "not provided"

#: metric-name fragments that mark explanation-quality evidence, by kind (first match wins)
QUALITY_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("faithfulness", ("deletion", "insertion", "faithful", "infidelity", "fidelity", "flip", "road", "morf",
                      "lerf", "completeness", "agreement", "r2", "rmse")),
    ("robustness", ("sensitivity", "lipschitz", "stability", "seed", "robust", "variance", "jaccard",
                    "rank_corr", "spearman", "kendall")),
    ("sanity", ("random", "sanity", "cascad", "deviation", "audit")),
)


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_report_id(run: Mapping[str, Any], generated_at: str, nonce: str | None = None) -> str:
    """``GR-YYYYMMDD-CCCCCCCC-RRRRRRRR``: the date, 8 hex digits of the run document's content hash and 8
    random hex digits. Two reports built from the same run in the same second (a CLI report and a worker
    job, or a forger rebuilding an edited run document with the same ``generated_at``) never share an ID."""
    content = hashlib.sha256(
        json.dumps(run, sort_keys=True, default=str, ensure_ascii=False).encode() + b"|" + generated_at.encode()
    ).hexdigest()
    day = re.sub(r"\D", "", generated_at)[:8] or "00000000"
    return f"GR-{day}-{content[:8].upper()}-{(nonce or secrets.token_hex(4)).upper()}"


def quality_kind(metric: str) -> str | None:
    name = metric.lower()
    tokens = [t for t in re.split(r"[_.\-\s]+", name) if t]
    for kind, fragments in QUALITY_KINDS:
        for f in fragments:
            if ("_" in f and f in name) or any(t.startswith(f) for t in tokens):
                return kind
    return None


def _scalars(d: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k): v for k, v in (d or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}


def _identity(model: Mapping[str, Any], runtime: Mapping[str, Any]) -> dict[str, Any]:
    files = [{"path": p, "sha256": h} for p, h in sorted((model.get("files") or {}).items())]
    flavors = [{"name": name, "details": _scalars(spec)} for name, spec in sorted((model.get("flavors") or {}).items())]
    training = model.get("training_run") or {}
    ttags = training.get("tags") or {}
    name, version = model.get("name"), model.get("version")
    return {
        "display_name": f"{name} v{version}" if name and version else (model.get("uri") or NOT_PROVIDED),
        "name": name, "version": version, "uri": model.get("uri"), "kind": model.get("kind"),
        "model_id": model.get("model_id"), "run_id": model.get("run_id"), "source": model.get("source"),
        "aliases": list(model.get("aliases") or []), "created_at": model.get("created_at"),
        "registry_status": model.get("status"),
        "tags": {k: v for k, v in sorted((model.get("tags") or {}).items())},
        "flavors": flavors, "signature": model.get("signature"),
        "files": files, "content_sha256": model.get("content_sha256"),
        "git_commit": ttags.get("mlflow.source.git.commit") or (model.get("tags") or {}).get("mlflow.source.git.commit"),
        "description": model.get("description"),
        "training_run": {"run_id": training.get("run_id"),
                         "params": dict(sorted((training.get("params") or {}).items())),
                         "metrics": dict(sorted((training.get("metrics") or {}).items())),
                         "datasets": list(training.get("datasets") or [])} if training else None,
        "previous_version": model.get("previous_version"),
        "runtime": dict(runtime or {}),
    }


def _explanations(run: Mapping[str, Any], method_meta: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, exp in enumerate(run.get("explanations") or [], start=1):
        meta = dict(method_meta.get(exp.get("method"), {}))
        e = dict(exp)
        e["number"] = f"6.{i}"
        e["title"] = exp.get("title") or meta.get("title") or str(exp.get("method"))
        e["method_info"] = {
            "installed": bool(meta.get("installed")), "description": meta.get("description") or "",
            "reference": meta.get("reference") or "", "has_template": bool(meta.get("report_template")),
            "uses_peers": bool(meta.get("uses_peers")), "plugin": meta.get("plugin") or exp.get("plugin"),
            "plugin_version": meta.get("plugin_version"),
        }
        out.append(e)
    return out


def _quality(run: Mapping[str, Any], explanations: list[dict[str, Any]]) -> dict[str, Any]:
    """Quality metrics by kind, and every headline figure beside its control with the verdict (the evidence
    block the first page summarises: a figure that does not beat its control is printed "not informative")."""
    rows = []
    for e in explanations:
        if e.get("status") != "ok":
            continue
        for metric, value in sorted((e.get("metrics") or {}).items()):
            kind = quality_kind(metric)
            if kind:
                rows.append({"method": e["method"], "metric": metric, "name": f"{e['method']}.{metric}",
                             "value": value, "kind": kind, "section": e["number"]})
    controls = [{**c, "method": e["method"], "name": f"{e['method']}.{c.get('metric')}", "section": e["number"]}
                for e in explanations if e.get("status") == "ok" for c in (e.get("controls") or [])]
    figures: dict[str, dict[str, Any]] = {}
    for c in controls:
        fig = figures.setdefault(c["name"], {"name": c["name"], "method": c["method"], "metric": c.get("metric"),
                                             "label": c.get("label") or c.get("metric"), "value": c.get("value"),
                                             "section": c["section"], "verdict": "informative", "controls": []})
        fig["controls"].append(c.get("control"))
        if c.get("verdict") != "informative":
            fig["verdict"] = "not informative"
    listed = list(figures.values())
    return {"rows": rows, "controls": controls, "figures": listed,
            "not_informative": [f for f in listed if f["verdict"] != "informative"],
            "without_control": sorted({r["name"] for r in rows} - set(figures))}


def _comparison(run: Mapping[str, Any], explanations: list[dict[str, Any]], identity: Mapping[str, Any]
                ) -> dict[str, Any]:
    prev = identity.get("previous_version")
    diff = None
    if isinstance(prev, Mapping) and prev.get("files"):
        now = {f["path"]: f["sha256"] for f in identity["files"]}
        before = dict(prev["files"])
        diff = {
            "added": sorted(set(now) - set(before)),
            "removed": sorted(set(before) - set(now)),
            "changed": sorted(p for p in set(now) & set(before) if now[p] != before[p]),
            "unchanged": len([p for p in set(now) & set(before) if now[p] == before[p]]),
        }
    metrics_diff = []
    prev_metrics = (prev or {}).get("governance_metrics") if isinstance(prev, Mapping) else None
    if prev_metrics:
        for e in explanations:
            for name, value in sorted((e.get("metrics") or {}).items()):
                key = f"{e['method']}.{name}"
                if key in prev_metrics and isinstance(value, (int, float)) and isinstance(prev_metrics[key], (int, float)):
                    metrics_diff.append({"metric": key, "current": value, "previous": prev_metrics[key],
                                         "delta": value - prev_metrics[key]})
    comparative = [
        {"method": e["method"], "title": e["title"], "section": e["number"], "status": e.get("status")}
        for e in explanations if e["method_info"]["uses_peers"] or (e.get("details") or {}).get("peers")
    ]
    return {"previous_version": prev, "file_diff": diff, "metrics": metrics_diff,
            "peers": list(run.get("peers") or []), "comparative_methods": comparative}


def _limitations(run: Mapping[str, Any], explanations: list[dict[str, Any]], human: Mapping[str, HumanField]
                 ) -> dict[str, Any]:
    not_run = [
        {"method": e["method"], "title": e["title"], "status": e.get("status"),
         "reason": e.get("reason") or NOT_PROVIDED, "error_type": e.get("error_type"), "section": e["number"]}
        for e in explanations if e.get("status") != "ok"
    ]
    warnings = [{"method": e["method"], "section": e["number"], "text": w}
                for e in explanations for w in (e.get("warnings") or [])]
    runtime = run.get("runtime") or {}
    notes = []
    if runtime.get("torch_unavailable_reason"):
        notes.append("Gradient and activation methods could not use the model: "
                     f"{runtime['torch_unavailable_reason']}")
    if runtime.get("parity_max_abs_diff") is not None:
        notes.append("Gradients were computed on a torch view of the ONNX model; its outputs differed from "
                     f"ONNX Runtime by at most {runtime['parity_max_abs_diff']:.3g} on a probe batch.")
    for note in runtime.get("notes") or []:
        notes.append(f"Runtime: {note}")
    for note in (run.get("data") or {}).get("notes") or []:
        notes.append(f"Data: {note}")
    plugins_failed = [
        {"name": p.get("name"), "error": (p.get("error") or "").strip().splitlines()[0] if p.get("error") else NOT_PROVIDED}
        for p in run.get("plugins") or [] if p.get("status") == "failed"
    ]
    return {"human": human["limitations"].to_dict(), "assumptions": human["assumptions"].to_dict(),
            "methods_not_run": not_run, "warnings": warnings, "runtime_notes": notes,
            "plugins_failed": plugins_failed, "rendering": []}


def _reproducibility(run: Mapping[str, Any], explanations: list[dict[str, Any]],
                     policy: Mapping[str, Any] | None) -> dict[str, Any]:
    seeds = sorted({e.get("seed") for e in explanations if e.get("seed") is not None})
    return {
        "environment": dict(run.get("environment") or {}), "config": run.get("config") or {},
        "config_hash": run.get("config_hash"), "seeds": seeds, "invocation": run.get("invocation"),
        "mlflow": dict(run.get("mlflow") or {}), "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"), "reused": bool(run.get("reused")), "run_status": run.get("status"),
        "plugins": [{k: p.get(k) for k in ("name", "distribution", "version", "status", "methods", "builtin")}
                    for p in run.get("plugins") or []],
        "method_runs": [{"method": e["method"], "version": e.get("method_version"), "status": e.get("status"),
                         "seed": e.get("seed"), "seconds": e.get("seconds"), "config": e.get("config") or {}}
                        for e in explanations],
        "policy": {"name": policy.get("name"), "version": policy.get("version"), "source": policy.get("source"),
                   "sha256": policy.get("sha256")} if policy else None,
    }


def build_document(
    run: Mapping[str, Any],
    *,
    human: Mapping[str, HumanField],
    human_extra: Mapping[str, str],
    policy: Mapping[str, Any] | None,
    method_meta: Mapping[str, Mapping[str, Any]],
    artifacts: list[dict[str, Any]],
    signer: Mapping[str, Any] | None = None,
    signature: Mapping[str, Any] | None = None,
    generated_at: str | None = None,
    tool_version: str | None = None,
    model_card_source: str | None = None,
) -> dict[str, Any]:
    """Assemble the report document (plain JSON). ``signature`` describes the certificate the PDF will be
    signed with (:meth:`governance.report.signing.SigningIdentity.describe`); the signature itself is added
    to the PDF after rendering, so the document can name its signer on the sign-off page."""
    from governance import __version__

    generated_at = generated_at or utc_now()
    report_id = make_report_id(run, generated_at)
    model = run.get("model") or {}
    identity = _identity(model, run.get("runtime") or {})
    explanations = _explanations(run, method_meta)
    verdict = policy["verdict"] if policy else None
    signer_block = {k: str(v) for k, v in (signer or {}).items() if v is not None} or None
    human_d = {k: f.to_dict() for k, f in human.items()}
    return {
        "schema": SCHEMA,
        "report_id": report_id,
        "title": TITLE,
        "generated_at": generated_at,
        "document": {
            "report_id": report_id, "revision": "1", "generated_at": generated_at,
            "status": "Digitally signed" if signature else "Draft for sign-off",
            "generator": f"governance {tool_version or __version__}",
            "model_card": model_card_source,
            "signer": signer_block,
            "signature": dict(signature) if signature else None,
            "frameworks": [{"id": k, **v} for k, v in FRAMEWORKS.items()],
        },
        "verdict": verdict,
        "run_status": run.get("status"),
        "model": identity,
        "human": human_d,
        "human_extra": dict(human_extra),
        "data": dict(run.get("data") or {}),
        "performance": dict(run.get("performance") or {}),
        "explanations": explanations,
        "quality": _quality(run, explanations),
        "policy": policy,
        "comparison": _comparison(run, explanations, identity),
        "limitations": _limitations(run, explanations, human),
        "reproducibility": _reproducibility(run, explanations, policy),
        "integrity": {
            "algorithm": "sha256",
            "model_content_sha256": identity["content_sha256"],
            "model_files": len(identity["files"]),
            "artifacts": artifacts,
        },
        "sections": [s.to_dict() for s in SECTIONS],
        "crosswalk_disclaimer": DISCLAIMER,
        "supplementary": [],
        "run": dict(run),
    }
