"""``build_report``: one run in, a dated report bundle out (JSON, HTML, PDF/A-3b, manifest, evidence).

Output folder::

    report.json          source of truth (schema governance.report/1)
    report.html          self-contained (figures embedded as data URIs)
    report.pdf           PDF/A-3b, report.json and manifest.json embedded
    report.pdf.sha256    the PDF's sha256 (sha256sum format)
    manifest.json        sha256 of every artifact, report.json and report.html
    manifest.json.p7s    detached CMS signature over manifest.json (signed reports only)
    evidence/            copy of the run's evidence (run.json, explanations/<method>/...)

The bundle is built in a temporary sibling folder and renamed into place when complete, so a failed or
interrupted build never leaves a half-written report (nor removes the previous one).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from governance.contract.errors import ReportError
from governance.contract.method import Requirement
from governance.report import manifest as mf

log = logging.getLogger("governance.report")

#: files build_report owns in its output folder (replaced on every build)
REPORT_FILES = ("report.json", "report.html", "report.pdf", "report.pdf.sha256", "manifest.json", "manifest.json.p7s")


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
    #: the signing certificate's facts (name, certificate_sha256, ...) when the report is signed
    signature: dict[str, Any] | None = None
    #: the promotion gate's decision printed on the first page (governance.report.gate.decide), when gated
    gate: dict[str, Any] | None = None
    #: notifications sent about this report (governance.host.notify.Delivery.to_dict())
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pdf(self) -> Path | None:
        return self.pdf_path

    def relocated(self, old: Path, new: Path) -> "ReportResult":
        """The same result with every path under ``old`` moved to ``new`` (after the bundle was renamed)."""
        def move(p: Path | None) -> Path | None:
            return new / p.relative_to(old) if p is not None else None

        self.out_dir, self.json_path, self.html_path = new, move(self.json_path), move(self.html_path)
        self.manifest_path, self.pdf_path = move(self.manifest_path), move(self.pdf_path)
        return self

    @property
    def status(self) -> str:
        """What ``governance.status`` should say: the policy verdict, else the run's status."""
        return self.verdict or self.run_status or "unknown"

    @property
    def files(self) -> list[Path]:
        fs = [self.json_path, self.html_path, self.manifest_path]
        if self.pdf_path:
            fs += [self.pdf_path, self.pdf_path.with_name(self.pdf_path.name + ".sha256")]
        if self.signature:
            fs.append(self.manifest_path.with_name(self.manifest_path.name + ".p7s"))
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
            "version_tags": self.version_tags, "signature": self.signature, "gate": self.gate,
            "notifications": self.notifications,
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
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)


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


def _ours(folder: Path) -> bool:
    """True when ``folder`` holds nothing but a previous report bundle (safe to replace as a whole)."""
    return all(p.name in REPORT_FILES or p.name == mf.EVIDENCE_DIR for p in folder.iterdir())


def _move_into_place(stage: Path, out: Path) -> None:
    """Rename the finished bundle to ``out``. A folder holding only an earlier bundle is swapped as a whole;
    a folder with other files in it keeps them (only the bundle's own files are replaced)."""
    if not out.exists():
        os.replace(stage, out)
        return
    if _ours(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "bundle")
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    if (stage / mf.EVIDENCE_DIR).is_dir():
        if (out / mf.EVIDENCE_DIR).exists():
            shutil.rmtree(out / mf.EVIDENCE_DIR)
        os.replace(stage / mf.EVIDENCE_DIR, out / mf.EVIDENCE_DIR)
    for name in REPORT_FILES:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
    shutil.rmtree(stage, ignore_errors=True)


@dataclass
class _Inputs:
    run_doc: dict[str, Any]
    workdir: Path | None
    template_dirs: list[Path]
    notes: list[str]


def _inputs(run: Any, workdir: Path | str | None, template_dirs: Iterable[Path | str]) -> _Inputs:
    """Check everything the build reads before any file is written."""
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
    dirs = [Path(d) for d in template_dirs]
    check_report_inputs(None, None, dirs)
    wd = Path(workdir) if workdir is not None else None
    notes: list[str] = []
    if wd is None or not wd.is_dir():
        notes.append("no run folder was given: the report has no figures and lists no evidence artifacts")
        wd = None
    return _Inputs(run_doc, wd, dirs, notes)


def build_report(
    run: Any,
    *,
    out_dir: Path | str,
    workdir: Path | str | None = None,
    model_card: Path | str | Mapping[str, Any] | None = None,
    policy: Any = None,
    template_dirs: Iterable[Path | str] = (),
    signer: Mapping[str, Any] | None = None,
    signing: Any = None,
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
    ({name, role, organisation, email}) names the person who signs the report first. ``signing`` (a
    :class:`~governance.report.signing.SigningIdentity`) signs the PDF (PAdES) and the manifest (CMS). ``gate`` (a
    :class:`~governance.report.gate.GateRequest`) puts the promotion gate's decision on the first page.
    """
    inputs = _inputs(run, workdir, template_dirs)
    if signing is not None and not pdf:
        raise ReportError("a signed report needs its PDF", hint="drop --no-pdf, or do not pass a signing key")
    if plugin_host is None:
        from governance.host.plugins import get_plugin_host

        plugin_host = get_plugin_host()
    out = Path(out_dir)
    check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as exc:
        raise _write_error(out, exc) from exc
    try:
        result = _build_in(stage, inputs, model_card=model_card, policy=policy, signer=signer, signing=signing,
                           pdf=pdf, copy_evidence=copy_evidence, plugin_host=plugin_host, generated_at=generated_at,
                           gate=gate)
        _move_into_place(stage, out)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise _write_error(out, exc) from exc
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return result.relocated(stage, out)


#: free space a report needs at least (a PDF, its evidence copy and the staging copy)
MIN_FREE_BYTES = 20 << 20


def check_output_dir(out: Path | str, *, min_free: int = MIN_FREE_BYTES) -> None:
    """Raise ReportError unless ``out`` exists or can be created, is writable and has some free space.
    Creates nothing: the nearest existing parent is what is checked."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ReportError(f"the report folder {out} is a file", hint="choose another --out folder")
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ReportError(f"cannot create the report folder {out}: {base} is not a folder",
                          hint="choose another --out folder")
    for folder in (base, out) if out.is_dir() else (base,):
        if not _writable(folder):
            raise ReportError(f"the report folder {folder} is not writable",
                              hint="choose a writable --out folder, or fix its permissions")
    free = shutil.disk_usage(base).free
    if free < min_free:
        raise ReportError(f"only {free >> 20} MiB are free under {base}; a report needs at least {min_free >> 20} MiB",
                          hint="free some space or choose another --out folder")


def _writable(folder: Path) -> bool:
    """Permission bits are not the whole story (root, read-only mounts, immutable folders): try it."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".governance-write-test-"):
            return True
    except OSError:
        return False


def _write_error(out: Path, exc: OSError) -> ReportError:
    return ReportError(f"writing the report to {out} failed: {exc.strerror or exc}",
                       hint="free some space or choose a writable --out folder; nothing was left behind")


def _build_in(stage: Path, inputs: _Inputs, *, model_card: Any, policy: Any, signer: Mapping[str, Any] | None,
              signing: Any, pdf: bool, copy_evidence: bool, plugin_host: Any, generated_at: str | None,
              gate: Any = None) -> ReportResult:
    """Write the whole bundle into ``stage``."""
    from governance.report.card import resolve_human_fields
    from governance.report.document import build_document
    from governance.report.policy import evaluate_policy
    from governance.report.render import make_env, plugin_sections, render_html, render_method_sections

    run_doc, workdir = inputs.run_doc, inputs.workdir
    rels = mf.collect_evidence(workdir)
    evidence_root = workdir
    if workdir is not None and copy_evidence:
        evidence_root = stage / mf.EVIDENCE_DIR
        _copy_evidence(workdir, evidence_root, rels)
    artifacts = mf.hash_artifacts(evidence_root, rels) if evidence_root else []

    human, extra = resolve_human_fields(run_doc["model"], model_card)
    policy_result = evaluate_policy(policy, run_doc) if policy is not None else None
    meta, methods = _method_meta(plugin_host, run_doc)
    doc = build_document(
        run_doc, human=human, human_extra=extra, policy=policy_result, method_meta=meta, artifacts=artifacts,
        signer=signer, signature=signing.describe() if signing is not None else None, generated_at=generated_at,
        model_card_source=(str(model_card) if isinstance(model_card, (str, Path)) else
                           "inline" if model_card is not None else None),
    )
    doc["limitations"]["rendering"].extend(inputs.notes)
    doc["gate"] = _gate_block(gate, policy_result)

    env = make_env(inputs.template_dirs)
    method_html = render_method_sections(doc, env, methods, evidence_root)
    supplementary = plugin_sections(doc, env, plugin_host)
    json_bytes = _dump(doc)
    json_sha = mf.sha256_bytes(json_bytes)
    (stage / "report.json").write_bytes(json_bytes)
    try:
        html = render_html(doc, env, method_html=method_html, supplementary=supplementary,
                           report_json_sha256=json_sha)
    except Exception as exc:
        raise ReportError(f"the report template failed: {type(exc).__name__}: {exc}",
                          hint="if you override templates (--template-dir), check them against the shipped ones") from exc
    html_bytes = html.encode("utf-8")
    (stage / "report.html").write_bytes(html_bytes)
    manifest_bytes = _dump(mf.build_manifest(doc, report_json=json_bytes, report_html=html_bytes))
    (stage / "manifest.json").write_bytes(manifest_bytes)

    info: dict[str, Any] = {"pages": None, "variant": None, "refused_urls": []}
    pdf_path = pdf_sha = None
    if pdf:
        pdf_path = stage / "report.pdf"
        info = _write_pdf(pdf_path, html, doc, json_bytes, manifest_bytes, inputs.template_dirs, stage)
        if signing is not None:
            _sign(stage, pdf_path, manifest_bytes, signing, doc)
        pdf_sha = mf.sha256_file(pdf_path)
        pdf_path.with_name(pdf_path.name + ".sha256").write_text(f"{pdf_sha}  {pdf_path.name}\n", encoding="utf-8")
    pdf_notes = ([f"{len(info['refused_urls'])} external URL(s) in the report were refused, not fetched"]
                 if info["refused_urls"] else [])
    return ReportResult(
        out_dir=stage, report_id=doc["report_id"], json_path=stage / "report.json", html_path=stage / "report.html",
        manifest_path=stage / "manifest.json", pdf_path=pdf_path, json_sha256=json_sha,
        html_sha256=mf.sha256_bytes(html_bytes), manifest_sha256=mf.sha256_bytes(manifest_bytes),
        pdf_sha256=pdf_sha, verdict=policy_result["verdict"] if policy_result else None, policy=policy_result,
        pages=info["pages"], pdf_variant=info["variant"], refused_urls=info["refused_urls"],
        notes=list(doc["limitations"]["rendering"]) + pdf_notes,
        model={k: doc["model"].get(k) for k in ("name", "version", "uri", "run_id", "content_sha256")},
        run_status=run_doc.get("status"), run_id=(run_doc.get("mlflow") or {}).get("run_id"),
        signature=doc["document"]["signature"], gate=doc["gate"],
    )


def _gate_block(gate: Any, policy_result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The gate's decision for report.json; the gate rule is the report's policy verdict (report/gate.py)."""
    if gate is None:
        return None
    from governance.report.gate import decide

    return decide(gate, policy_result["verdict"] if policy_result else None, policy_result)


def _write_pdf(pdf_path: Path, html: str, doc: Mapping[str, Any], json_bytes: bytes, manifest_bytes: bytes,
               template_dirs: list[Path], base_dir: Path) -> dict[str, Any]:
    from datetime import datetime

    from governance.report.pdf import render_pdf
    from governance.report.render import template_roots

    created = datetime.fromisoformat(doc["generated_at"].replace("Z", "+00:00"))
    try:
        return render_pdf(
            html, pdf_path, base_dir=base_dir, asset_roots=template_roots(template_dirs), created=created,
            attachments=[
                ("report.json", json_bytes, "Report document (source of truth, governance.report/1)", "Source"),
                ("manifest.json", manifest_bytes, "sha256 manifest of the evidence and report files", "Supplement"),
            ],
        )
    except Exception as exc:
        raise ReportError(f"PDF rendering failed: {type(exc).__name__}: {exc}",
                          hint="nothing was written to the output folder; check `governance doctor`") from exc


def _sign(stage: Path, pdf_path: Path, manifest_bytes: bytes, signing: Any, doc: Mapping[str, Any]) -> None:
    from governance.report.signing import MANIFEST_SIGNATURE, sign_detached, sign_pdf

    model = doc["model"].get("display_name")
    sign_pdf(pdf_path, signing, reason=f"governance report {doc['report_id']} for {model}")
    (stage / MANIFEST_SIGNATURE).write_bytes(sign_detached(manifest_bytes, signing))
