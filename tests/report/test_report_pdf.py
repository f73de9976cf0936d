"""The report read back as a validator would: PDF pages and text (pypdf), embedded files, PDF/A markers,
figures, hostile registry text, plugin sections, template overrides and the integrity chain under tampering.

One full PDF is rendered for the module (WeasyPrint costs about a second per render); tampering tests work
on copies of it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from tests.report.conftest import CARD, POLICY, make_host
from governance.report import build_report, verify_report
from governance.report.crosswalk import SECTIONS

SIGNER = {"name": "A. Validator", "role": "Model validator", "organisation": "Acme Health"}


@pytest.fixture(scope="module")
def built(finished_run, http_recorder, section_package, tmp_path_factory):
    from tests.report.fixtures import hostile

    run = hostile(finished_run, http_recorder.port)
    out = tmp_path_factory.mktemp("report") / "out"
    host = make_host(f"{section_package}:section.html.j2", failing_hook=True)
    result = build_report(run, out_dir=out, policy=POLICY, model_card=CARD, signer=SIGNER, plugin_host=host)
    reader = PdfReader(result.pdf_path)
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return {"result": result, "reader": reader, "text": text, "flat": re.sub(r"\s+", " ", text),
            "html": result.html_path.read_text(encoding="utf-8"),
            "doc": json.loads(result.json_path.read_text(encoding="utf-8")), "run": run}


# --------------------------------------------------------------------------------------------- PDF content
def test_pdf_has_every_section_and_method_heading(built):
    flat = built["flat"]
    assert len(built["reader"].pages) >= 8
    for sec in SECTIONS:
        assert f"{sec.number} {sec.title}" in flat, sec.title
    for title in ("Contents and regulatory crosswalk", "NeFLAG negative-flux attributions", "FLINT-style interpreter",
                  "Bort weight audit", "SpecXAI spectral characterisation", "Fairness screening", "Deployment note"):
        assert title in flat, title
    for fw in ("EU AI Act Annex IV", "SR 11-7", "NIST AI RMF", "ISO/IEC 42001", "MEASURE 2.9", "A.6.2.7"):
        assert fw in flat
    assert re.search(r"Page 1 of \d+", flat)
    assert built["result"].report_id in flat and "Draft for sign-off" in flat


def test_human_fields_sources_and_not_provided(built):
    flat, doc = built["flat"], built["doc"]
    assert "Second-reading prioritisation of biopsy reports." in flat  # card wins over the description
    assert doc["human"]["intended_use"]["source"] == "model card"
    assert doc["human"]["users"]["source"] == "version tag governance.users"
    assert doc["human"]["assumptions"]["value"] is None
    assert flat.count("not provided") >= 5
    assert "Dr. B. Chief" in flat and "Head of pathology" in flat and "C. Challenger" in flat
    assert "deployment_region" in built["html"] or "Deployment region" in flat


def test_identity_lists_every_model_file_hash(built):
    flat = built["flat"].replace(" ", "")
    for rel, digest in built["run"].model["files"].items():
        assert digest in flat, rel
    assert built["run"].model["files"] and built["doc"]["model"]["content_sha256"] in flat


def test_limitations_list_methods_not_run_with_reasons(built):
    flat = built["flat"]
    assert "needs the model's weights, which this runtime does not expose" in flat
    assert "ONNX operator Loop is not supported" in flat
    assert "acme" in flat and "no module named acme_internal" in flat
    notes = built["doc"]["limitations"]["rendering"]
    assert any("sections plugin exploded" in n for n in notes)


def test_policy_results_in_report(built):
    doc, flat = built["doc"], built["flat"]
    assert doc["verdict"] == "pass" and built["result"].verdict == "pass"
    statuses = {c["metric"]: c["status"] for c in doc["policy"]["checks"]}
    assert statuses == {"interpreter.fidelity": "pass", "neflag.deletion_auc": "pass",
                        "bort.audit_deviation": "not_evaluated", "performance.accuracy": "pass"}
    assert "Champion gate" in flat and "NOT EVALUATED" in flat.upper()


def test_plugin_template_and_plugin_sections_render(built):
    html, flat = built["html"], built["flat"]
    assert html.count('class="marker"') == 2  # the method's own template, and the supplementary section
    assert "Plugin section for neflag" in flat and "Plugin figure: attribution bars" in flat
    assert "supp-marker" in html and "4 explanations seen" in flat
    assert "S1 Fairness screening" in flat and "2(g) discriminatory impact" in flat
    meta = built["doc"]["supplementary"]
    assert [s["title"] for s in meta] == ["Fairness screening", "Deployment note"]


def test_figures_are_embedded(built):
    html = built["html"]
    # the plugin template shows one neflag figure, the host appends the other; interpreter's is generic
    assert html.count('src="data:image/png;base64,') == 3
    assert "Further figures" in html and "Deletion curve" in built["flat"]
    images = sum(len(page.images) for page in built["reader"].pages)
    assert images >= 3


# --------------------------------------------------------------------------------------------- PDF/A + attachments
def test_embedded_files_and_pdfa(built):
    reader, result = built["reader"], built["result"]
    atts = reader.attachments
    assert set(atts) == {"report.json", "manifest.json"}
    assert atts["report.json"][0] == result.json_path.read_bytes()
    assert atts["manifest.json"][0] == result.manifest_path.read_bytes()
    root = reader.trailer["/Root"]
    assert "/OutputIntents" in root and "/AF" in root
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8", "replace")
    assert "pdfaid:part" in xmp and re.search(r"pdfaid:part[^0-9]*3", xmp)
    assert re.search(r"pdfaid:conformance[^A-Z]*B", xmp)
    assert result.pdf_variant == "pdf/a-3b"


def test_manifest_covers_every_artifact(built):
    result = built["result"]
    manifest = json.loads(result.manifest_path.read_text())
    paths = {a["path"] for a in manifest["artifacts"]}
    assert {"run.json", "explanations/neflag/arrays.npz", "explanations/neflag/summary.json",
            "explanations/neflag/attribution_bars.png", "explanations/neflag/deletion_curve.png",
            "explanations/interpreter/completeness.png"} <= paths
    assert manifest["reports"]["report.json"]["sha256"] == result.json_sha256
    assert manifest["reports"]["report.html"]["sha256"] == result.html_sha256
    sidecar = result.pdf_path.with_name("report.pdf.sha256").read_text().split()
    assert sidecar == [result.pdf_sha256, "report.pdf"]
    assert result.json_sha256 in built["flat"].replace(" ", "")


# --------------------------------------------------------------------------------------------- security
def test_hostile_registry_text_neither_executes_nor_fetches(built, http_recorder):
    html, flat = built["html"], built["flat"]
    assert http_recorder.requests == []
    assert built["result"].refused_urls == []  # escaped text never even reaches the fetcher
    for tag in ("<script", "<iframe", "<object", "<svg", "<img src=\"http", "<img src='http", "<link rel=\"attachment"):
        assert tag not in html, tag
    assert "&lt;script&gt;document.title=" in html
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;" in html  # cannot break out of the table
    assert "<script>document.title='pwned'</script>" in flat  # shown to the reader as text
    assert "url(http://127.0.0.1" in flat
    assert "pwned" not in (built["reader"].metadata.title or "")
    assert set(built["reader"].attachments) == {"report.json", "manifest.json"}  # no <link rel=attachment>


def test_url_fetcher_only_reads_report_assets(tmp_path, http_recorder):
    from governance.report.pdf import make_fetcher

    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.txt").write_text("secret")
    fetcher = make_fetcher([assets])
    assert fetcher.fetch((assets / "logo.png").as_uri()).read() == b"\x89PNG fake"
    assert fetcher.fetch("data:text/plain;base64,aGk=").read() == b"hi"
    for url in (f"http://127.0.0.1:{http_recorder.port}/x", f"https://127.0.0.1:{http_recorder.port}/x",
                (tmp_path / "secret.txt").as_uri(), (assets / ".." / "secret.txt").as_uri(), "file:///etc/passwd",
                f"ftp://127.0.0.1:{http_recorder.port}/x", "file://evil.example/share/x.png"):
        with pytest.raises(ValueError, match="refuses"):
            fetcher.fetch(url)
    assert http_recorder.requests == []
    assert len(fetcher.refused) == 7


def test_template_override_is_used_and_still_cannot_fetch(finished_run, http_recorder, tmp_path):
    """A user's template folder overrides single files; even trusted template markup cannot reach the network."""
    override = tmp_path / "tpl"
    override.mkdir()
    (override / "logo.png").write_bytes((finished_run.workdir / "explanations/neflag/attribution_bars.png").read_bytes())
    (override / "section_signoff.html.j2").write_text(
        '{% import "macros.html.j2" as m %}{{ m.heading(sec) }}<p>ACME sign-off form 7</p>'
        '<img src="{{ asset("logo.png") }}"><img src="http://127.0.0.1:' + str(http_recorder.port) + '/tpl.png">')
    css = (Path(__import__("governance.templates", fromlist=["x"]).__file__).parent / "report.css").read_text()
    (override / "report.css").write_text(css + f"\nbody {{ background: url(http://127.0.0.1:{http_recorder.port}/css) }}\n")
    run = finished_run.to_dict()
    run["explanations"] = run["explanations"][2:]  # keep the render small: no figures needed here
    result = build_report(run, out_dir=tmp_path / "out", template_dirs=[override],
                          plugin_host=make_host(None, sections_hook=False))
    text = " ".join(p.extract_text() for p in PdfReader(result.pdf_path).pages)
    assert "ACME sign-off form 7" in text
    assert http_recorder.requests == []
    assert sorted(u.rsplit("/", 1)[-1] for u in result.refused_urls) == ["css", "tpl.png"]
    assert 'src="data:image/png;base64,' in result.html_path.read_text().split("ACME sign-off form 7")[1]


# --------------------------------------------------------------------------------------------- integrity
@pytest.fixture
def copy_of(built, tmp_path):
    src = built["result"].out_dir
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_verify_passes_on_the_pristine_report(built):
    unsigned = verify_report(built["result"].pdf_path)
    assert not unsigned.ok and [c.name for c in unsigned.checks if c.status == "unavailable"] == ["PDF signature"]
    res = verify_report(built["result"].pdf_path, skip=["signature"])
    assert res.ok and res.integrity_only, [c for c in res.checks if c.status != "ok"]
    names = {c.name for c in res.checks if c.status == "ok"}
    assert "evidence artifacts match their sha256" in names
    assert "PDF pages print the embedded report.json hash and report id" in names
    assert res.report_id == built["result"].report_id
    assert verify_report(built["result"].out_dir, expected_sha256=built["result"].pdf_sha256, skip=["signature"]).ok


def _failed(res):
    return {c.name: c.detail for c in res.checks if c.status == "fail"}


def test_tampered_evidence_artifact_is_detected(copy_of):
    target = copy_of / "evidence/explanations/neflag/summary.json"
    target.write_text(target.read_text().replace("0.", "9.", 1))
    failed = _failed(verify_report(copy_of / "report.pdf"))
    assert "modified: explanations/neflag/summary.json" in failed["evidence artifacts match their sha256"]


def test_deleted_evidence_artifact_is_detected(copy_of):
    (copy_of / "evidence/explanations/neflag/arrays.npz").unlink()
    failed = _failed(verify_report(copy_of / "report.pdf"))
    assert "missing: explanations/neflag/arrays.npz" in failed["evidence artifacts match their sha256"]


def test_tampered_report_json_beside_the_pdf_is_detected(copy_of):
    p = copy_of / "report.json"
    p.write_text(p.read_text().replace('"verdict": "pass"', '"verdict": "fail"', 1))
    assert "report.json beside the PDF matches the manifest" in _failed(verify_report(copy_of / "report.pdf"))


def test_modified_pdf_is_detected_by_its_sidecar_and_expected_hash(copy_of, built):
    pdf = copy_of / "report.pdf"
    pdf.write_bytes(pdf.read_bytes() + b"\n% appended\n")
    failed = _failed(verify_report(pdf, expected_sha256=built["result"].pdf_sha256))
    assert "PDF matches report.pdf.sha256" in failed
    assert "PDF matches the expected sha256" in failed


def test_forged_attachments_do_not_match_the_printed_pages(copy_of):
    """A careful forger swaps report.json and fixes the manifest to match: the pages still print the
    original report.json hash, so the forgery is caught."""
    import hashlib

    src = copy_of / "report.pdf"
    reader = PdfReader(src)
    report = json.loads(reader.attachments["report.json"][0])
    report["verdict"] = "pass (forged)"
    forged_json = json.dumps(report).encode()
    manifest = json.loads(reader.attachments["manifest.json"][0])
    manifest["reports"]["report.json"]["sha256"] = hashlib.sha256(forged_json).hexdigest()
    writer = PdfWriter()
    writer.append(reader)
    writer.add_attachment("report.json", forged_json)
    writer.add_attachment("manifest.json", json.dumps(manifest).encode())
    forged = copy_of / "forged" / "report.pdf"
    forged.parent.mkdir()
    with open(forged, "wb") as fh:
        writer.write(fh)
    res = verify_report(forged, artifacts_dir=copy_of / "evidence")
    failed = _failed(res)
    assert "embedded report.json matches the manifest" not in failed
    assert "PDF pages print the embedded report.json hash and report id" in failed


def test_pdf_without_attachments_is_not_verified(tmp_path):
    import weasyprint

    plain = tmp_path / "plain.pdf"
    weasyprint.HTML(string="<p>hello</p>").write_pdf(plain)
    res = verify_report(plain)
    assert not res.ok and "missing: report.json, manifest.json" in _failed(res)["embedded report.json and manifest.json"]


def test_verify_cli_exit_codes(built, copy_of, cli_invoke):
    code, out, _ = cli_invoke("verify", str(built["result"].pdf_path), "--skip", "signature")
    assert code == 0 and "VERIFIED" in out
    (copy_of / "evidence/run.json").write_text("{}")
    code, out, err = cli_invoke("verify", str(copy_of / "report.pdf"), "--skip", "signature")
    assert code == 8
    assert "NOT VERIFIED" in err and "modified: run.json" in out
    code, out, _ = cli_invoke("verify", str(copy_of), "--json")
    assert code == 8 and json.loads(out)["ok"] is False


def test_verify_checks_model_files_against_the_registry_hashes(built, finished_run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(finished_run.workdir.parent / "model", model_dir)
    pdf = built["result"].pdf_path
    assert verify_report(pdf, model_dir=model_dir, skip=["signature"]).ok
    (model_dir / "model.onnx").write_bytes(b"not the model")
    (model_dir / "extra.bin").write_bytes(b"x")
    detail = _failed(verify_report(pdf, model_dir=model_dir))["model files match the registry hashes"]
    assert "differ or missing: model.onnx" in detail and "not in the registered model: extra.bin" in detail
