"""``governance verify REPORT.pdf``: check a report's integrity chain (see :mod:`governance.report.manifest`).

What is checked, each as one line of the result:

* the PDF carries ``report.json`` and ``manifest.json`` as embedded files;
* the manifest's sha256 of ``report.json`` matches the embedded ``report.json``;
* the report id and the artifact list agree between the two;
* the PDF's visible text prints that same ``report.json`` sha256 and report id (so the attachments were
  not swapped under an unchanged page);
* the PDF's own sha256 matches ``report.pdf.sha256`` beside it (and ``--sha256`` when given);
* ``report.json``, ``report.html`` and ``manifest.json`` beside the PDF, when present, match the manifest;
* every evidence artifact, when the evidence folder is found (``evidence/`` beside the PDF, the MLflow
  layout's run root one level up, or ``--artifacts DIR``), matches its sha256;
* with ``--model-dir``, every model file matches the registry hash recorded in the report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from governance.contract.errors import ReportError
from governance.report.manifest import EVIDENCE_DIR, MANIFEST_SCHEMA, sha256_bytes, sha256_file

OK, FAIL, SKIPPED = "ok", "fail", "skipped"


@dataclass
class VerifyCheck:
    name: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class VerifyResult:
    path: Path
    checks: list[VerifyCheck] = field(default_factory=list)
    report_id: str | None = None
    model: str | None = None
    verdict: str | None = None
    pdf_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not any(c.status == FAIL for c in self.checks)

    @property
    def failures(self) -> list[VerifyCheck]:
        return [c for c in self.checks if c.status == FAIL]

    def add(self, name: str, ok: bool | None, detail: str = "") -> None:
        self.checks.append(VerifyCheck(name, SKIPPED if ok is None else OK if ok else FAIL, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "report_id": self.report_id, "model": self.model,
                "verdict": self.verdict, "pdf_sha256": self.pdf_sha256,
                "checks": [c.to_dict() for c in self.checks]}


def _resolve(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "report.pdf"
    if not path.is_file():
        raise ReportError(f"{path} does not exist", hint="pass the report's PDF (or the folder holding report.pdf)")
    return path


def _attachments(reader: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, contents in reader.attachments.items():
        if contents:
            out[name] = contents[-1]
    return out


def _evidence_root(pdf_dir: Path, artifacts: list[dict[str, Any]], explicit: Path | None) -> Path | None:
    candidates = [explicit] if explicit else [pdf_dir / EVIDENCE_DIR, pdf_dir.parent]
    for root in candidates:
        if root and root.is_dir() and any((root / a["path"]).is_file() for a in artifacts):
            return root
    return None


def verify_report(path: Path | str, *, artifacts_dir: Path | str | None = None,
                  model_dir: Path | str | None = None, expected_sha256: str | None = None) -> VerifyResult:
    """Verify a report PDF; never raises for a tampered report (see ``VerifyResult.ok``)."""
    from pypdf import PdfReader

    pdf = _resolve(Path(path))
    result = VerifyResult(path=pdf)
    data = pdf.read_bytes()
    result.pdf_sha256 = sha256_bytes(data)
    try:
        reader = PdfReader(pdf)
        atts = _attachments(reader)
    except Exception as exc:  # pypdf raises many types on damaged files
        result.add("PDF readable", False, f"{type(exc).__name__}: {exc}")
        return result

    missing = [n for n in ("report.json", "manifest.json") if n not in atts]
    result.add("embedded report.json and manifest.json", not missing,
               f"missing: {', '.join(missing)} (not a governance report, or its attachments were removed)"
               if missing else "both present")
    if missing:
        return result
    try:
        report = json.loads(atts["report.json"])
        manifest = json.loads(atts["manifest.json"])
    except ValueError as exc:
        result.add("embedded JSON parses", False, str(exc))
        return result
    if manifest.get("schema") != MANIFEST_SCHEMA:
        result.add("manifest schema", False, f"expected {MANIFEST_SCHEMA}, found {manifest.get('schema')!r}")
        return result
    result.report_id = report.get("report_id")
    result.model = (report.get("model") or {}).get("display_name")
    result.verdict = report.get("verdict")

    json_sha = sha256_bytes(atts["report.json"])
    want = ((manifest.get("reports") or {}).get("report.json") or {}).get("sha256")
    result.add("embedded report.json matches the manifest", json_sha == want,
               f"sha256 {json_sha}" if json_sha == want else f"manifest says {want}, embedded file hashes to {json_sha}")
    result.add("report id agrees", manifest.get("report_id") == report.get("report_id"),
               f"{report.get('report_id')}" if manifest.get("report_id") == report.get("report_id")
               else f"manifest {manifest.get('report_id')!r} vs report.json {report.get('report_id')!r}")
    m_art = {a["path"]: a["sha256"] for a in manifest.get("artifacts") or []}
    r_art = {a["path"]: a["sha256"] for a in (report.get("integrity") or {}).get("artifacts") or []}
    result.add("artifact list agrees between manifest and report.json", m_art == r_art,
               f"{len(m_art)} artifacts" if m_art == r_art else
               f"differs for: {', '.join(sorted(set(m_art.items()) ^ set(r_art.items()), key=str)[:5])}")

    # the integrity annex is near the end: read pages backwards and stop once both strings are seen
    want_id, printed = str(report.get("report_id")), False
    seen_id = seen_sha = False
    try:
        for page in reversed(reader.pages):
            text = re.sub(r"\s+", "", page.extract_text() or "")
            seen_id, seen_sha = seen_id or want_id in text, seen_sha or json_sha in text
            if seen_id and seen_sha:
                printed = True
                break
    except Exception as exc:
        result.add("PDF text readable", False, f"{type(exc).__name__}: {exc}")
    result.add("PDF pages print the embedded report.json hash and report id", printed,
               "found in the integrity annex" if printed else
               "the pages do not show this report.json's sha256: the attachments do not belong to these pages")

    # the PDF itself
    sidecar = pdf.with_name(pdf.name + ".sha256")
    if sidecar.is_file():
        recorded = sidecar.read_text(encoding="utf-8").split()[0].lower() if sidecar.read_text().strip() else ""
        result.add(f"PDF matches {sidecar.name}", recorded == result.pdf_sha256,
                   result.pdf_sha256 if recorded == result.pdf_sha256
                   else f"{sidecar.name} says {recorded}, the PDF hashes to {result.pdf_sha256}")
    else:
        result.add("PDF sha256 sidecar", None, f"{sidecar.name} not found beside the PDF")
    if expected_sha256:
        exp = expected_sha256.strip().lower()
        result.add("PDF matches the expected sha256", exp == result.pdf_sha256,
                   result.pdf_sha256 if exp == result.pdf_sha256 else f"expected {exp}, got {result.pdf_sha256}")

    # report files beside the PDF
    for name in ("report.json", "report.html"):
        beside = pdf.parent / name
        want = ((manifest.get("reports") or {}).get(name) or {}).get("sha256")
        if beside.is_file() and want:
            got = sha256_file(beside)
            result.add(f"{name} beside the PDF matches the manifest", got == want,
                       got if got == want else f"manifest says {want}, file hashes to {got}")
    beside_manifest = pdf.parent / "manifest.json"
    if beside_manifest.is_file():
        same = sha256_file(beside_manifest) == sha256_bytes(atts["manifest.json"])
        result.add("manifest.json beside the PDF equals the embedded one", same,
                   "identical" if same else "the file differs from the manifest embedded in the PDF")

    # evidence artifacts
    artifacts = manifest.get("artifacts") or []
    root = _evidence_root(pdf.parent, artifacts, Path(artifacts_dir) if artifacts_dir else None)
    if not artifacts:
        result.add("evidence artifacts", None, "the manifest lists no artifacts")
    elif root is None:
        where = str(artifacts_dir) if artifacts_dir else f"{pdf.parent / EVIDENCE_DIR} or {pdf.parent.parent}"
        result.add("evidence artifacts", False if artifacts_dir else None,
                   f"not found in {where}" + ("" if artifacts_dir else " (pass --artifacts DIR to check them)"))
    else:
        bad, gone = [], []
        for a in artifacts:
            p = root / a["path"]
            if not p.is_file():
                gone.append(a["path"])
            elif sha256_file(p) != a["sha256"]:
                bad.append(a["path"])
        detail = f"{len(artifacts)} files under {root}"
        if bad:
            detail = f"modified: {', '.join(bad[:8])}" + (" ..." if len(bad) > 8 else "")
        if gone:
            detail = (detail + "; " if bad else "") + f"missing: {', '.join(gone[:8])}" + (" ..." if len(gone) > 8 else "")
        result.add("evidence artifacts match their sha256", not bad and not gone, detail)

    if model_dir is not None:
        mdir = Path(model_dir)
        files = (manifest.get("model") or {}).get("files") or {}
        bad = [rel for rel, h in files.items() if not (mdir / rel).is_file() or sha256_file(mdir / rel) != h]
        extra = sorted(p.relative_to(mdir).as_posix() for p in mdir.rglob("*") if p.is_file()
                       and p.relative_to(mdir).as_posix() not in files)
        ok = bool(files) and not bad and not extra
        detail = f"{len(files)} files" if ok else "; ".join(filter(None, [
            "no model files recorded" if not files else "",
            f"differ or missing: {', '.join(bad[:8])}" if bad else "",
            f"not in the registered model: {', '.join(extra[:8])}" if extra else ""]))
        result.add("model files match the registry hashes", ok, detail)
    return result
