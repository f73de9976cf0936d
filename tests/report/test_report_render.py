"""Rendering edge cases without the PDF step: minimal run documents, broken plugin templates, missing
figures, user overrides of one method's section, and the document's structure."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.report.conftest import make_host
from governance.contract.errors import ReportError
from governance.report import build_report
from governance.report.crosswalk import SECTIONS

MINIMAL = {"model": {"uri": "models:/tiny/1", "name": "tiny", "version": "1", "tags": {}, "files": {}},
           "status": "ok", "explanations": []}


def _visible_text(html: str) -> str:
    body = html.split("<body>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_minimal_run_document_renders_with_not_provided_and_no_leaks(tmp_path):
    res = build_report(MINIMAL, out_dir=tmp_path / "r", plugin_host=make_host(None, sections_hook=False))
    html = res.html_path.read_text()
    text = _visible_text(html)
    for leak in (" None ", "Undefined", "{{", "{%", " nan "):
        assert leak not in text, leak
    assert text.count("not provided") >= 15
    assert "no run folder was given" in text
    for sec in SECTIONS:
        assert sec.title in text
    assert res.pdf_path and res.pages >= 5 and res.verdict is None and res.status == "ok"
    doc = json.loads(res.json_path.read_text())
    assert doc["schema"] == "governance.report/1" and doc["integrity"]["artifacts"] == []
    assert [s["id"] for s in doc["sections"]] == [s.id for s in SECTIONS]


def test_run_document_without_model_is_refused(tmp_path):
    with pytest.raises(ReportError, match="no 'model' block"):
        build_report({"explanations": []}, out_dir=tmp_path, plugin_host=make_host(None))
    with pytest.raises(ReportError, match="template folder .* does not exist"):
        build_report(MINIMAL, out_dir=tmp_path, template_dirs=[tmp_path / "nope"], plugin_host=make_host(None))


def test_broken_plugin_template_falls_back_to_the_generic_section(finished_run, section_package, tmp_path):
    res = build_report(finished_run, out_dir=tmp_path / "r", pdf=False,
                       plugin_host=make_host(f"{section_package}:broken.html.j2", sections_hook=False))
    doc = json.loads(res.json_path.read_text())
    assert any("neflag: its section template" in n and "no_such_filter" in n for n in doc["limitations"]["rendering"])
    text = _visible_text(res.html_path.read_text())
    assert "Top features" in text and "Deletion curve" in text  # generic rendering of the same evidence


def test_missing_figure_is_reported_not_fatal(finished_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(finished_run.workdir, work)
    (work / "explanations/neflag/deletion_curve.png").unlink()
    res = build_report(finished_run, workdir=work, out_dir=tmp_path / "r", pdf=False,
                       plugin_host=make_host(None, sections_hook=False))
    assert any("deletion_curve" in n for n in res.notes)
    assert "figure file not available" in res.html_path.read_text()


def test_user_override_of_one_method_section(finished_run, tmp_path):
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "method_interpreter.html.j2").write_text("<p>House style for {{ explanation.title }}: "
                                             "{{ explanation.metrics.fidelity | pct }}</p>")
    res = build_report(finished_run, out_dir=tmp_path / "r", pdf=False, template_dirs=[tmp_path / "tpl"],
                       plugin_host=make_host(None, sections_hook=False))
    html = res.html_path.read_text()
    assert "House style for FLINT-style interpreter: 97.0 %" in html
    assert "Figure 6.2.1" in html  # its figure was not in the override, so the host appends it


def test_method_without_installed_plugin_uses_generic_section(finished_run, tmp_path):
    res = build_report(finished_run, out_dir=tmp_path / "r", pdf=False, plugin_host=make_host(None, sections_hook=False))
    doc = json.loads(res.json_path.read_text())
    info = {e["method"]: e["method_info"] for e in doc["explanations"]}
    assert info["neflag"]["installed"] and not info["interpreter"]["installed"]
    assert "is not installed where the report was built" in res.html_path.read_text()


def test_report_json_holds_derived_blocks_and_the_raw_run(finished_run, tmp_path):
    res = build_report(finished_run, out_dir=tmp_path / "r", pdf=False, plugin_host=make_host(None, sections_hook=False))
    doc = json.loads(res.json_path.read_text())
    assert doc["run"]["config_hash"] == finished_run.config_hash
    kinds = {r["name"]: r["kind"] for r in doc["quality"]["rows"]}
    assert kinds["neflag.deletion_auc"] == "faithfulness" and kinds["neflag.seed_stability"] == "robustness"
    assert kinds["interpreter.fidelity"] == "faithfulness" and "interpreter.conciseness" not in kinds
    assert doc["comparison"]["file_diff"]["changed"] == ["model.onnx"]
    assert [m["method"] for m in doc["limitations"]["methods_not_run"]] == ["bort", "spectral"]
    assert re.fullmatch(r"GR-\d{8}-[0-9A-F]{8}-[0-9A-F]{8}", doc["report_id"]), doc["report_id"]


def test_rebuild_in_place_from_the_bundled_evidence(finished_run, tmp_path):
    """A report folder is self-contained: its evidence/ rebuilds the report (e.g. with a new policy) in place,
    and stale files of the previous build do not survive."""
    from governance.contract.results import run_from_dict

    out = tmp_path / "bundle"
    build_report(finished_run, out_dir=out, pdf=False, plugin_host=make_host(None, sections_hook=False))
    (out / "report.pdf").write_bytes(b"stale")
    evidence = out / "evidence"
    run = run_from_dict(json.loads((evidence / "run.json").read_text()), evidence)
    second = build_report(run, out_dir=out, pdf=False, plugin_host=make_host(None, sections_hook=False),
                          policy={"checks": [{"metric": "interpreter.fidelity", "op": ">=", "value": 0.99}]})
    assert not (out / "report.pdf").exists()
    assert second.verdict == "fail"
    m = json.loads(second.manifest_path.read_text())
    assert {x["path"] for x in m["artifacts"]} >= {"run.json", "explanations/neflag/arrays.npz"}
    from governance.report.manifest import sha256_file

    assert all(sha256_file(evidence / x["path"]) == x["sha256"] for x in m["artifacts"])
