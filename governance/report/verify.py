"""``governance verify REPORT.pdf``: check a report's signature and integrity chain (see
:mod:`governance.report.manifest` and :mod:`governance.report.signature_check`). It fails closed.

What is checked, each as one line of the result:

* the PDF carries ``report.json`` and ``manifest.json`` as embedded files, and they agree (hash of
  ``report.json``, report id, artifact list);
* the PDF's visible text prints that same ``report.json`` sha256 and report id (so the attachments were
  not swapped under an unchanged page);
* ``signature``: the PAdES signature is intact, covers every byte of the file and chains to a certificate
  given with ``--trust``; an unsigned report is *integrity only* (anyone who can run governance could have
  made it);
* ``sidecar``: the PDF's own sha256 matches ``report.pdf.sha256`` beside it (or ``--sha256``);
* ``files``: ``report.json``, ``report.html`` and ``manifest.json`` beside the PDF match the manifest, and a
  signed report's ``manifest.json.p7s`` verifies;
* ``evidence``: every evidence artifact (``evidence/`` beside the PDF, the MLflow layout's run root one
  level up, or ``--artifacts DIR``) matches its sha256;
* with ``--model-dir``, every model file matches the registry hash recorded in the report.

A check that cannot run (no signature, no trusted certificate, no sidecar, files or evidence not found)
makes the verdict "not verified" unless the caller names its group in ``skip``. A check that runs and
fails is never skippable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from governance.contract.errors import ConfigError, ReportError
from governance.report.manifest import EVIDENCE_DIR, MANIFEST_SCHEMA, sha256_bytes, sha256_file

OK, FAIL, UNAVAILABLE, SKIPPED = "ok", "fail", "unavailable", "skipped"
#: the check groups a caller may skip when they cannot run (``--skip``), with what skipping gives up
SKIPPABLE = {
    "signature": "who made the report (an unsigned or untrusted report is integrity only)",
    "sidecar": "the PDF's own sha256 (report.pdf.sha256 or --sha256)",
    "files": "report.json, report.html, manifest.json (and its signature) beside the PDF",
    "evidence": "the evidence artifacts",
}
INTEGRITY_ONLY = "integrity only: anyone who can run governance could have made it"


@dataclass
class VerifyCheck:
    name: str
    status: str
    detail: str = ""
    group: str | None = None
    hint: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "group": self.group,
                "hint": self.hint}


@dataclass
class VerifyResult:
    path: Path
    checks: list[VerifyCheck] = field(default_factory=list)
    skip: frozenset[str] = frozenset()
    report_id: str | None = None
    model: str | None = None
    verdict: str | None = None
    pdf_sha256: str | None = None
    #: every PDF signature's signer (name, certificate_sha256, ...), first signature first
    signers: list[dict[str, Any]] = field(default_factory=list)
    #: True when every signature chains to a trusted certificate
    trusted: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not any(c.status in (FAIL, UNAVAILABLE) for c in self.checks)

    @property
    def failures(self) -> list[VerifyCheck]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def unavailable(self) -> list[VerifyCheck]:
        return [c for c in self.checks if c.status == UNAVAILABLE]

    @property
    def integrity_only(self) -> bool:
        """Verified, but without a trusted signature: the bytes are consistent, their author unknown."""
        return self.ok and not self.trusted

    def add(self, name: str, ok: bool | None, detail: str = "", *, group: str | None = None,
            hint: str = "") -> None:
        """``ok=None``: the check could not run (unavailable, or skipped when ``group`` is in ``skip``)."""
        status = OK if ok else FAIL if ok is False else SKIPPED if group in self.skip else UNAVAILABLE
        self.checks.append(VerifyCheck(name, status, detail, group, hint))

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "integrity_only": self.integrity_only,
                "trusted": self.trusted, "signers": self.signers, "report_id": self.report_id,
                "model": self.model, "verdict": self.verdict, "pdf_sha256": self.pdf_sha256,
                "skipped": sorted(self.skip), "checks": [c.to_dict() for c in self.checks]}


def _resolve(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "report.pdf"
    if not path.is_file():
        raise ReportError(f"{path} does not exist", hint="pass the report's PDF (or the folder holding report.pdf)")
    return path


def check_skip(skip: Iterable[str]) -> frozenset[str]:
    names = frozenset(s.strip() for s in skip if s.strip())
    if unknown := sorted(names - set(SKIPPABLE)):
        raise ConfigError(f"unknown --skip value(s): {', '.join(unknown)}",
                          hint=f"checks that may be skipped: {', '.join(SKIPPABLE)}")
    return names


def _attachments(reader: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, contents in reader.attachments.items():
        if contents:
            out[name] = contents[-1]
    return out


def verify_report(path: Path | str, *, artifacts_dir: Path | str | None = None,
                  model_dir: Path | str | None = None, expected_sha256: str | None = None,
                  trust: Iterable[Path | str] = (), skip: Iterable[str] = ()) -> VerifyResult:
    """Verify a report PDF; never raises for a tampered report (see ``VerifyResult.ok``).

    ``trust``: certificate files or folders whose certificates may sign reports (or issued the signers');
    ``skip``: groups of :data:`SKIPPABLE` the caller accepts not checking when they cannot run."""
    from pypdf import PdfReader

    from governance.report.signature_check import load_trust

    pdf = _resolve(Path(path))
    trust_certs = load_trust(list(trust)) if trust else []
    result = VerifyResult(path=pdf, skip=check_skip(skip))
    data = pdf.read_bytes()
    result.pdf_sha256 = sha256_bytes(data)
    try:
        reader = PdfReader(pdf)
        atts = _attachments(reader)
    except Exception as exc:  # pypdf raises many types on damaged files
        result.add("PDF readable", False, f"{type(exc).__name__}: {exc}")
        return result
    parsed = _embedded(result, atts)
    if parsed is None:
        return result
    report, manifest = parsed
    json_sha = sha256_bytes(atts["report.json"])
    _check_consistency(result, report, manifest, json_sha)
    _check_pages(result, reader, report, json_sha)
    _check_signature(result, data, report, trust_certs)
    _check_sidecar(result, pdf, expected_sha256)
    _check_files_beside(result, pdf, manifest, atts["manifest.json"], report, trust_certs)
    _check_evidence(result, pdf, manifest, Path(artifacts_dir) if artifacts_dir else None)
    if model_dir is not None:
        _check_model(result, manifest, Path(model_dir))
    return result


def _embedded(result: VerifyResult, atts: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    missing = [n for n in ("report.json", "manifest.json") if n not in atts]
    result.add("embedded report.json and manifest.json", not missing,
               f"missing: {', '.join(missing)} (not a governance report, or its attachments were removed)"
               if missing else "both present")
    if missing:
        return None
    try:
        report = json.loads(atts["report.json"])
        manifest = json.loads(atts["manifest.json"])
    except ValueError as exc:
        result.add("embedded JSON parses", False, str(exc))
        return None
    if not isinstance(report, dict) or not isinstance(manifest, dict):
        result.add("embedded JSON parses", False, "report.json and manifest.json must be JSON objects")
        return None
    if manifest.get("schema") != MANIFEST_SCHEMA:
        result.add("manifest schema", False, f"expected {MANIFEST_SCHEMA}, found {manifest.get('schema')!r}")
        return None
    result.report_id = report.get("report_id")
    result.model = (report.get("model") or {}).get("display_name")
    result.verdict = report.get("verdict")
    return report, manifest


def _check_consistency(result: VerifyResult, report: dict[str, Any], manifest: dict[str, Any], json_sha: str) -> None:
    want = ((manifest.get("reports") or {}).get("report.json") or {}).get("sha256")
    result.add("embedded report.json matches the manifest", json_sha == want,
               f"sha256 {json_sha}" if json_sha == want else f"manifest says {want}, embedded file hashes to {json_sha}")
    same_id = manifest.get("report_id") == report.get("report_id")
    result.add("report id agrees", same_id, f"{report.get('report_id')}" if same_id
               else f"manifest {manifest.get('report_id')!r} vs report.json {report.get('report_id')!r}")
    m_art = {a["path"]: a["sha256"] for a in manifest.get("artifacts") or []}
    r_art = {a["path"]: a["sha256"] for a in (report.get("integrity") or {}).get("artifacts") or []}
    result.add("artifact list agrees between manifest and report.json", m_art == r_art,
               f"{len(m_art)} artifacts" if m_art == r_art else
               f"differs for: {', '.join(sorted(set(m_art.items()) ^ set(r_art.items()), key=str)[:5])}")


def _check_pages(result: VerifyResult, reader: Any, report: dict[str, Any], json_sha: str) -> None:
    """The integrity annex is near the end: read pages backwards and stop once both strings are seen."""
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


def _who(signer: dict[str, Any]) -> str:
    return f"{signer.get('name')} (certificate sha256 {str(signer.get('certificate_sha256'))[:16]}...)"


def _check_signature(result: VerifyResult, data: bytes, report: dict[str, Any], trust: list[Any]) -> None:
    from governance.report.signature_check import check_pdf_signatures

    claimed = (report.get("document") or {}).get("signature")
    statuses = check_pdf_signatures(data, trust)
    fix = "sign reports with --sign-key/--sign-cert (try `governance keygen`), or pass --skip signature"
    if not statuses:
        if claimed:
            result.add("PDF signature", False, f"report.json says it was signed by {_who(claimed)}, but the PDF "
                       "carries no signature: it was removed or the pages were rebuilt")
        else:
            result.add("PDF signature", None, f"the report is unsigned ({INTEGRITY_ONLY})", group="signature",
                       hint=fix)
        return
    result.signers = [s.signer for s in statuses]
    problems = [f"signature {i + 1}: {p}" for i, s in enumerate(statuses) for p in s.problems]
    if claimed and claimed.get("certificate_sha256") != statuses[0].signer.get("certificate_sha256"):
        problems.append(f"report.json names {_who(claimed)}, but the PDF was signed by {_who(statuses[0].signer)}")
    names = "; ".join(_who(s.signer) for s in statuses if s.signer) or "unknown signer"
    result.add("PDF signature intact and covering every byte", not problems,
               "; ".join(problems) if problems else f"signed by {names}")
    if problems:
        return
    if not trust:
        result.add("signer trusted", None, f"signed by {names}, but no certificate to trust was given",
                   group="signature", hint="pass --trust CERT (the signer's certificate or its CA), or --skip signature")
        return
    untrusted = [s for s in statuses if not s.trusted]
    result.trusted = not untrusted
    result.add("signer trusted", not untrusted,
               f"{names} chains to a --trust certificate" if not untrusted else
               "not issued by any --trust certificate: " + "; ".join(_who(s.signer) for s in untrusted))


def _check_sidecar(result: VerifyResult, pdf: Path, expected: str | None) -> None:
    sidecar = pdf.with_name(pdf.name + ".sha256")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8", errors="replace").split()
        recorded = text[0].lower() if text else ""
        result.add(f"PDF matches {sidecar.name}", recorded == result.pdf_sha256,
                   result.pdf_sha256 if recorded == result.pdf_sha256
                   else f"{sidecar.name} says {recorded or '(empty)'}, the PDF hashes to {result.pdf_sha256}")
    if expected:
        exp = expected.strip().lower()
        result.add("PDF matches the expected sha256", exp == result.pdf_sha256,
                   result.pdf_sha256 if exp == result.pdf_sha256 else f"expected {exp}, got {result.pdf_sha256}")
    if not sidecar.is_file() and not expected:
        result.add("PDF sha256 recorded", None, f"{sidecar.name} is not beside the PDF and no --sha256 was given",
                   group="sidecar", hint="pass --sha256 HEX (the version tag governance.report_sha256), "
                   "or --skip sidecar")


def _check_files_beside(result: VerifyResult, pdf: Path, manifest: dict[str, Any], embedded_manifest: bytes,
                        report: dict[str, Any], trust: list[Any]) -> None:
    missing = []
    for name in ("report.json", "report.html"):
        beside = pdf.parent / name
        want = ((manifest.get("reports") or {}).get(name) or {}).get("sha256")
        if not want:
            continue
        if not beside.is_file():
            missing.append(name)
            continue
        got = sha256_file(beside)
        result.add(f"{name} beside the PDF matches the manifest", got == want,
                   got if got == want else f"manifest says {want}, file hashes to {got}")
    beside_manifest = pdf.parent / "manifest.json"
    if beside_manifest.is_file():
        same = beside_manifest.read_bytes() == embedded_manifest
        result.add("manifest.json beside the PDF equals the embedded one", same,
                   "identical" if same else "the file differs from the manifest embedded in the PDF")
    else:
        missing.append("manifest.json")
    if (report.get("document") or {}).get("signature"):
        missing += _check_manifest_signature(result, pdf.parent, embedded_manifest, trust)
    if missing:
        result.add("report files beside the PDF", None, f"not found beside the PDF: {', '.join(missing)}",
                   group="files", hint="verify the whole report folder, or pass --skip files")


def _check_manifest_signature(result: VerifyResult, folder: Path, manifest: bytes, trust: list[Any]) -> list[str]:
    from governance.report.signature_check import check_detached
    from governance.report.signing import MANIFEST_SIGNATURE

    sig = folder / MANIFEST_SIGNATURE
    if not sig.is_file():
        return [MANIFEST_SIGNATURE]
    status = check_detached(manifest, sig.read_bytes(), trust)
    same = not result.signers or status.signer.get("certificate_sha256") == result.signers[0].get("certificate_sha256")
    ok = not status.problems and status.intact and same and status.trusted is not False
    detail = ("; ".join(status.problems) if status.problems else
              "signed by another certificate than the PDF" if not same else
              "not issued by any --trust certificate" if status.trusted is False else
              f"signed by {_who(status.signer)}, the PDF's signer" + (", trusted" if status.trusted else ""))
    result.add(f"{MANIFEST_SIGNATURE} verifies manifest.json", ok, detail)
    return []


def _evidence_root(pdf_dir: Path, artifacts: list[dict[str, Any]], explicit: Path | None) -> Path | None:
    candidates = [explicit] if explicit else [pdf_dir / EVIDENCE_DIR, pdf_dir.parent]
    for root in candidates:
        if root and root.is_dir() and any((root / a["path"]).is_file() for a in artifacts):
            return root
    return None


def _check_evidence(result: VerifyResult, pdf: Path, manifest: dict[str, Any], explicit: Path | None) -> None:
    artifacts = manifest.get("artifacts") or []
    if not artifacts:
        result.add("evidence artifacts", True, "the report lists no evidence artifacts (built without a run folder)")
        return
    root = _evidence_root(pdf.parent, artifacts, explicit)
    if root is None:
        where = str(explicit) if explicit else f"{pdf.parent / EVIDENCE_DIR} or {pdf.parent.parent}"
        result.add("evidence artifacts", False if explicit else None, f"not found in {where}", group="evidence",
                   hint="pass --artifacts DIR (the report's evidence/ folder or the MLflow run's artifacts), "
                   "or --skip evidence")
        return
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


def _check_model(result: VerifyResult, manifest: dict[str, Any], mdir: Path) -> None:
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
