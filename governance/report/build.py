"""``build_report``: one run in, a dated report bundle out (JSON, HTML, PDF/A-3b, manifest, evidence).

Output folder::

    report.json          source of truth (schema governance.report/1)
    report.html          self-contained (figures embedded as data URIs)
    report.pdf           PDF/A-3b, report.json and manifest.json embedded
    report.pdf.sha256    the PDF's sha256 (sha256sum format)
    manifest.json        sha256 of every artifact, report.json and report.html
    evidence/            copy of the run's evidence (run.json, explanations/<method>/...)
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from governance.contract.errors import ReportError
from governance.contract.method import Requirement
from governance.report import manifest as mf

log = logging.getLogger("governance.report")

#: files build_report owns in its output folder (replaced on every build)
REPORT_FILES = ("report.json", "report.html", "report.pdf", "report.pdf.sha256", "manifest.json")


@dataclass
class ReportResult:
    """Where the report went and what it says."""

    out_dir: Path
    report_id: str
    json_path: Path
    html_path: Path
    manifest_path: Path
    pdf_path: Path | None
    json_sha256: str
    html_sha256: str
    manifest_sha256: str
    pdf_sha256: str | None
    verdict: str | None  # policy verdict: pass | fail | not_evaluated, or None without a policy
    policy: dict[str, Any] | None
    pages: int | None = None
    pdf_variant: str | None = None
    refused_urls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    run_status: str | None = None
    #: the MLflow run holding the evidence (and the report once logged)
    run_id: str | None = None
    logged: bool = False
    #: model-version tags set when the report was logged
    version_tags: dict[str, str] = field(default_factory=dict)
    #: the promotion gate's decision printed on the first page (governance.report.gate.decide), when gated
    gate: dict[str, Any] | None = None
    #: notifications sent about this report (governance.host.notify.Delivery.to_dict())
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pdf(self) -> Path | None:
        return self.pdf_path

    @property
    def status(self) -> str:
        """What ``governance.status`` should say: the policy verdict, else the run's status."""
        return self.verdict or self.run_status or "unknown"

    @property
    def files(self) -> list[Path]:
        fs = [self.json_path, self.html_path, self.manifest_path]
        if self.pdf_path:
            fs += [self.pdf_path, self.pdf_path.with_name(self.pdf_path.name + ".sha256")]
        return fs

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_id": self.report_id, "out_dir": str(self.out_dir), "status": self.status,
            "verdict": self.verdict, "run_status": self.run_status,
            "files": {"json": str(self.json_path), "html": str(self.html_path),
                      "manifest": str(self.manifest_path), "pdf": str(self.pdf_path) if self.pdf_path else None},
            "sha256": {"json": self.json_sha256, "html": self.html_sha256, "manifest": self.manifest_sha256,
                       "pdf": self.pdf_sha256},
            "pages": self.pages, "pdf_variant": self.pdf_variant, "refused_urls": self.refused_urls,
            "notes": self.notes, "model": self.model, "run_id": self.run_id, "logged_to_mlflow": self.logged,
            "version_tags": self.version_tags, "gate": self.gate, "notifications": self.notifications,
            "policy": {"name": self.policy.get("name"), "verdict": self.policy.get("verdict"),
                       "counts": self.policy.get("counts")} if self.policy else None,
        }


def _method_meta(host: Any, run_doc: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, type]]:
    """Class attributes of each explained method's plugin (for section text), and the classes."""
    methods: dict[str, type] = dict(getattr(host, "methods", {}) or {}) if host is not None else {}
    versions = {p.get("name"): p.get("version") for p in run_doc.get("plugins") or []}
    meta: dict[str, dict[str, Any]] = {}
    for exp in run_doc.get("explanations") or []:
        name = exp.get("method")
        cls = methods.get(name)
        plugin = host.plugin_of(name) if cls is not None and hasattr(host, "plugin_of") else exp.get("plugin")
        meta[name] = {
            "installed": cls is not None,
            "title": getattr(cls, "title", None), "description": getattr(cls, "description", ""),
            "reference": getattr(cls, "reference", ""), "report_template": getattr(cls, "report_template", None),
            "uses_peers": Requirement.PEERS in getattr(cls, "requires", ()), "plugin": plugin,
            "plugin_version": versions.get(plugin),
        }
    return meta, methods


def _copy_evidence(src: Path, dst: Path, rels: list[str]) -> None:
    for rel in rels:
        target = dst / rel
        source = src / rel
        if target.exists() and target.resolve() == source.resolve():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")


def check_report_inputs(policy: Any, model_card: Any, template_dirs: Iterable[Path | str]) -> Any:
    """Read the user's report inputs before anything runs (a typo in the policy must not cost a whole run):
    returns the loaded policy (or None); raises ConfigError/ReportError naming the bad file."""
    from governance.report.card import load_model_card
    from governance.report.policy import load_policy

    loaded = load_policy(policy) if policy is not None else None
    if model_card is not None:
        load_model_card(model_card)
    for d in template_dirs:
        if not Path(d).is_dir():
            raise ReportError(f"template folder {d} does not exist",
                              hint="pass --template-dir with a folder holding your overriding templates")
    return loaded


def _run_document(run: Any, workdir: Path | str | None) -> tuple[dict[str, Any], Path | None]:
    from governance.contract.results import jsonable

    if hasattr(run, "to_dict"):
        run_doc = run.to_dict()
        workdir = workdir if workdir is not None else getattr(run, "workdir", None)
    elif isinstance(run, Mapping):
        run_doc = jsonable(dict(run))
    else:
        raise ReportError(f"build_report needs a RunResult or a run document (dict), got {type(run).__name__}")
    if not run_doc.get("model"):
        raise ReportError("the run document has no 'model' block", hint="pass RunResult.to_dict() or run.json")
    return run_doc, Path(workdir) if workdir is not None else None


def _prepare_folder(out: Path, workdir: Path | None, copy_evidence: bool) -> tuple[Path | None, list[dict[str, Any]]]:
    """Clear this builder's files from ``out`` (no stale file next to a new report), copy and hash the evidence.
    Returns the evidence root and the hashed artifacts."""
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    evidence = out / mf.EVIDENCE_DIR
    if copy_evidence and evidence.is_dir() and workdir is not None and evidence.resolve() != workdir.resolve():
        shutil.rmtree(evidence)
    rels = mf.collect_evidence(workdir)
    evidence_root = workdir
    if workdir is not None and copy_evidence:
        evidence_root = evidence
        _copy_evidence(workdir, evidence_root, rels)
    return evidence_root, (mf.hash_artifacts(evidence_root, rels) if evidence_root else [])


def _write_pdf(out: Path, doc: dict[str, Any], html: str, template_dirs: list[Path], json_bytes: bytes,
               manifest_bytes: bytes) -> tuple[Path, str, dict[str, Any]]:
    from datetime import datetime

    from governance.report.pdf import render_pdf
    from governance.report.render import template_roots

    pdf_path = out / "report.pdf"
    created = datetime.fromisoformat(doc["generated_at"].replace("Z", "+00:00"))
    try:
        info = render_pdf(
            html, pdf_path, base_dir=out, asset_roots=template_roots(template_dirs), created=created,
            attachments=[
                ("report.json", json_bytes, "Report document (source of truth, governance.report/1)", "Source"),
                ("manifest.json", manifest_bytes, "sha256 manifest of the evidence and report files", "Supplement"),
            ],
        )
    except Exception as exc:
        raise ReportError(f"PDF rendering failed: {type(exc).__name__}: {exc}",
                          hint="report.json and report.html were written; check `governance doctor`") from exc
    pdf_sha = mf.sha256_file(pdf_path)
    pdf_path.with_name(pdf_path.name + ".sha256").write_text(f"{pdf_sha}  {pdf_path.name}\n", encoding="utf-8")
    return pdf_path, pdf_sha, info


def _write_documents(out: Path, doc: dict[str, Any], template_dirs: list[Path], methods: dict[str, type],
                     evidence_root: Path | None, plugin_host: Any) -> tuple[str, bytes, bytes, bytes]:
    """Render the sections, then write report.json, report.html and manifest.json; returns the HTML and the
    three files' bytes."""
    from governance.report.render import make_env, plugin_sections, render_html, render_method_sections

    env = make_env(template_dirs)
    method_html = render_method_sections(doc, env, methods, evidence_root)
    supplementary = plugin_sections(doc, env, plugin_host)
    json_bytes = _dump(doc)
    (out / "report.json").write_bytes(json_bytes)
    try:
        html = render_html(doc, env, method_html=method_html, supplementary=supplementary,
                           report_json_sha256=mf.sha256_bytes(json_bytes))
    except Exception as exc:
        raise ReportError(f"the report template failed: {type(exc).__name__}: {exc}",
                          hint="if you override templates (--template-dir), check them against the shipped ones") from exc
    html_bytes = html.encode("utf-8")
    (out / "report.html").write_bytes(html_bytes)
    manifest_bytes = _dump(mf.build_manifest(doc, report_json=json_bytes, report_html=html_bytes))
    (out / "manifest.json").write_bytes(manifest_bytes)
    return html, json_bytes, html_bytes, manifest_bytes


def build_report(
    run: Any,
    *,
    out_dir: Path | str,
    workdir: Path | str | None = None,
    model_card: Path | str | Mapping[str, Any] | None = None,
    policy: Any = None,
    template_dirs: Iterable[Path | str] = (),
    signer: Mapping[str, Any] | None = None,
    pdf: bool = True,
    copy_evidence: bool = True,
    plugin_host: Any = None,
    generated_at: str | None = None,
    gate: Any = None,
) -> ReportResult:
    """Build the report for one run (a :class:`~governance.contract.results.RunResult` or its ``to_dict()``).

    ``workdir`` (default ``run.workdir``) holds the evidence (``explanations/<method>/...``); without it
    the report has no figures and lists no artifacts. ``policy`` is a path, a dict or a ``Policy``;
    ``model_card`` a YAML path or a dict; ``template_dirs`` override shipped templates; ``signer``
    ({name, role, organisation, email}) names the person who signs the report first. ``gate`` (a
    :class:`~governance.report.gate.GateRequest`) puts the promotion gate's decision on the first page.
    """
    from governance.report.card import resolve_human_fields
    from governance.report.document import build_document
    from governance.report.policy import evaluate_policy

    run_doc, workdir = _run_document(run, workdir)
    template_dirs = [Path(d) for d in template_dirs]
    check_report_inputs(None, None, template_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if workdir is None or not workdir.is_dir():
        notes.append("no run folder was given: the report has no figures and lists no evidence artifacts")
        workdir = None
    if plugin_host is None:
        from governance.host.plugins import get_plugin_host

        plugin_host = get_plugin_host()
    evidence_root, artifacts = _prepare_folder(out, workdir, copy_evidence)

    human, extra = resolve_human_fields(run_doc["model"], model_card)
    policy_result = evaluate_policy(policy, run_doc) if policy is not None else None
    meta, methods = _method_meta(plugin_host, run_doc)
    doc = build_document(
        run_doc, human=human, human_extra=extra, policy=policy_result, method_meta=meta, artifacts=artifacts,
        signer=signer, generated_at=generated_at,
        model_card_source=(str(model_card) if isinstance(model_card, (str, Path)) else
                           "inline" if model_card is not None else None),
    )
    doc["limitations"]["rendering"].extend(notes)
    doc["gate"] = _gate_block(gate, policy_result)
    html, json_bytes, html_bytes, manifest_bytes = _write_documents(out, doc, template_dirs, methods,
                                                                    evidence_root, plugin_host)
    json_sha = mf.sha256_bytes(json_bytes)
    pdf_path = pdf_sha = None
    info: dict[str, Any] = {"pages": None, "variant": None, "refused_urls": []}
    if pdf:
        pdf_path, pdf_sha, info = _write_pdf(out, doc, html, template_dirs, json_bytes, manifest_bytes)
    refused = [f"{len(info['refused_urls'])} external URL(s) in the report were refused, not fetched"] \
        if info["refused_urls"] else []
    return ReportResult(
        out_dir=out, report_id=doc["report_id"], json_path=out / "report.json", html_path=out / "report.html",
        manifest_path=out / "manifest.json", pdf_path=pdf_path, json_sha256=json_sha,
        html_sha256=mf.sha256_bytes(html_bytes), manifest_sha256=mf.sha256_bytes(manifest_bytes),
        pdf_sha256=pdf_sha, verdict=policy_result["verdict"] if policy_result else None, policy=policy_result,
        pages=info["pages"], pdf_variant=info["variant"], refused_urls=info["refused_urls"],
        notes=list(doc["limitations"]["rendering"]) + refused,
        model={k: doc["model"].get(k) for k in ("name", "version", "uri", "run_id", "content_sha256")},
        run_status=run_doc.get("status"), run_id=(run_doc.get("mlflow") or {}).get("run_id"), gate=doc["gate"],
    )


def _gate_block(gate: Any, policy_result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The gate's decision for report.json; the gate rule is the report's policy verdict (report/gate.py)."""
    if gate is None:
        return None
    from governance.report.gate import decide

    return decide(gate, policy_result["verdict"] if policy_result else None, policy_result)
