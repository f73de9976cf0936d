"""The manifest: sha256 of every evidence artifact and of the report files, and what exactly is hashed.

Chain of custody, in the order files are written:

1. evidence artifacts (``run.json``, ``explanations/<method>/...``) are hashed;
2. ``report.json`` lists those hashes (``integrity.artifacts``) and the model files' hashes;
3. ``report.html`` is rendered from ``report.json`` and prints ``report.json``'s sha256;
4. ``manifest.json`` lists the artifacts, ``report.json`` and ``report.html``;
5. ``report.pdf`` shows the same text as the HTML and embeds ``report.json`` and ``manifest.json``. It
   cannot list its own hash, so that hash goes to the sidecar ``report.pdf.sha256`` (``sha256sum`` format)
   and to the MLflow tag ``governance.report_sha256``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

MANIFEST_SCHEMA = "governance.manifest/1"
EVIDENCE_DIR = "evidence"

DEFINITION = (
    "sha256 of every evidence artifact (paths relative to the evidence root: the MLflow run's artifact root, "
    "or the folder 'evidence/' beside the report), of report.json and of report.html. report.pdf embeds this "
    "manifest and report.json, so the PDF's own sha256 is not listed here: it is in report.pdf.sha256 and in "
    "the model version tag governance.report_sha256."
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_role(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1].lower()
    if name == "run.json":
        return "run document"
    if name == "summary.json":
        return "method summary"
    if name.endswith(".npz") or name.endswith(".npy"):
        return "arrays"
    if name.endswith((".png", ".svg", ".jpg", ".jpeg")):
        return "figure"
    return "other"


def collect_evidence(workdir: Path | None) -> list[str]:
    """Relative paths (posix) of the run's evidence: ``run.json`` and every file under ``explanations/``."""
    if workdir is None or not Path(workdir).is_dir():
        return []
    root = Path(workdir)
    rels = []
    if (root / "run.json").is_file():
        rels.append("run.json")
    exp = root / "explanations"
    if exp.is_dir():
        rels += sorted(p.relative_to(root).as_posix() for p in exp.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return rels


def hash_artifacts(root: Path, rels: list[str]) -> list[dict[str, Any]]:
    out = []
    for rel in rels:
        p = root / rel
        out.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size, "role": artifact_role(rel)})
    return out


def build_manifest(doc: Mapping[str, Any], *, report_json: bytes, report_html: bytes | None) -> dict[str, Any]:
    model = doc.get("model") or {}
    reports = {"report.json": {"sha256": sha256_bytes(report_json), "bytes": len(report_json)}}
    if report_html is not None:
        reports["report.html"] = {"sha256": sha256_bytes(report_html), "bytes": len(report_html)}
    return {
        "schema": MANIFEST_SCHEMA,
        "report_id": doc.get("report_id"),
        "generated_at": doc.get("generated_at"),
        "algorithm": "sha256",
        "definition": DEFINITION,
        "model": {"name": model.get("name"), "version": model.get("version"), "uri": model.get("uri"),
                  "content_sha256": model.get("content_sha256"),
                  "files": {f["path"]: f["sha256"] for f in model.get("files") or []}},
        "evidence_root": EVIDENCE_DIR,
        "artifacts": list((doc.get("integrity") or {}).get("artifacts") or []),
        "reports": reports,
    }
