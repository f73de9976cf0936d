"""The promotion gate's rule (report/gate.py) and where the report shows it: a version passes the gate only on
verdict ``pass``; the first page of the PDF, report.json and the tags all state the same decision."""

from __future__ import annotations

import re

import pytest

from governance.report.gate import PROMOTE, SERVICE, GateRequest, decide, failed_checks, gate_tags, restored_tag


def _policy(*checks: tuple[str, str], verdict: str = "fail", name: str = "release gate") -> dict:
    return {"name": name, "verdict": verdict,
            "checks": [{"id": cid, "metric": cid.split(" ")[0], "status": status, "reason": f"{cid} {status}"}
                       for cid, status in checks]}


FAILING = _policy(("performance.accuracy >= 0.9", "fail"), ("neflag.deletion_auc <= 0.2", "pass"),
                  ("spectral.agreement >= 0.9", "warn"), ("interpreter.fidelity >= 0.9", "fail"))


def test_only_the_failed_required_checks_block():
    # advisory checks that failed are "warn": they do not block, and are not listed as blocking
    assert [c["id"] for c in failed_checks(FAILING)] == ["performance.accuracy >= 0.9",
                                                          "interpreter.fidelity >= 0.9"]
    assert failed_checks(None) == []


@pytest.mark.parametrize("verdict, passes", [("pass", True), ("fail", False), ("not_evaluated", False),
                                             (None, False)])
def test_only_a_pass_lets_a_version_through(verdict, passes):
    for mode, yes, no in ((PROMOTE, "promote", "block"), (SERVICE, "keep", "revert")):
        d = decide(GateRequest("champion", "m", "3", mode, "2"), verdict,
                   None if verdict is None else _policy(verdict=verdict))
        assert d["passes"] is passes and d["decision"] == (yes if passes else no)


def test_promote_statements_name_the_versions_and_the_failed_checks():
    blocked = decide(GateRequest("champion", "fraud", "3", PROMOTE, "2"), "fail", FAILING)
    assert blocked["statement"] == (
        "policy 'release gate' failed 2 required check(s): performance.accuracy >= 0.9; interpreter.fidelity >= 0.9:"
        " version 3 is blocked, leaving @champion at version 2.")
    passed = decide(GateRequest("champion", "fraud", "3", PROMOTE, None), "pass", _policy(verdict="pass"))
    assert passed["statement"] == "policy 'release gate' passed: @champion moves from no version to version 3."
    again = decide(GateRequest("champion", "fraud", "3", PROMOTE, "3"), "pass", _policy(verdict="pass"))
    assert again["statement"].startswith("@champion already points at version 3")
    unevaluated = decide(GateRequest("champion", "fraud", "3", PROMOTE, "2"), "not_evaluated",
                         _policy(verdict="not_evaluated"))
    assert "could not evaluate any check" in unevaluated["reason"] and unevaluated["decision"] == "block"


def test_service_statements_say_back_to_where_or_removed():
    back = decide(GateRequest("champion", "fraud", "3", SERVICE, "2"), "fail", FAILING)
    assert "so governance moves @champion back to version 2, unless the alias has moved on" in back["statement"]
    gone = decide(GateRequest("champion", "fraud", "3", SERVICE, None), "fail", FAILING)
    assert "removes @champion (it pointed at no version before)" in gone["statement"]


def test_tags_record_the_action_and_the_failed_checks():
    d = decide(GateRequest("champion", "fraud", "3", SERVICE, "2"), "fail", FAILING)
    tags = gate_tags(d, "reverted", "@champion moved back from version 3 to version 2", at="T", report_id="GR-1")
    assert tags["governance.gate"] == "blocked" and tags["governance.gate.action"] == "reverted"
    assert tags["governance.gate.failed_checks"] == "performance.accuracy >= 0.9; interpreter.fidelity >= 0.9"
    assert tags["governance.gate.report_id"] == "GR-1" and tags["governance.gate.alias"] == "champion"
    kept = gate_tags(decide(GateRequest("champion", "fraud", "3", SERVICE, "2"), "pass", _policy(verdict="pass")),
                     "kept", "stays", at="T", report_id=None)
    assert kept["governance.gate"] == "passed" and kept["governance.gate.failed_checks"] == "none"
    assert restored_tag(d, at="T")["governance.gate.restored"].startswith("T: @champion moved back here from version 3")
    with pytest.raises(ValueError):
        gate_tags(d, "teleported", "", at="T", report_id=None)


def test_the_first_page_states_the_gate_decision(finished_run, tmp_path):
    """report.json carries the decision and the PDF's first page prints it (read back with pypdf)."""
    from pypdf import PdfReader

    from governance.report.build import build_report

    policy = {"name": "release gate", "checks": [{"metric": "performance.accuracy", "op": ">=", "value": 1.5}]}
    request = GateRequest("champion", "bc-mlp", "3", PROMOTE, "2")
    result = build_report(finished_run, out_dir=tmp_path / "r", policy=policy, gate=request)
    assert result.verdict == "fail" and result.gate["decision"] == "block"
    import json

    doc = json.loads(result.json_path.read_text())
    assert doc["gate"] == result.gate and doc["gate"]["failed_checks"][0]["id"] == "performance.accuracy >= 1.5"
    first = re.sub(r"\s+", " ", PdfReader(result.pdf_path).pages[0].extract_text())
    assert "PROMOTION GATE · @CHAMPION" in first.upper() and "BLOCK" in first
    assert "version 3 is blocked, leaving @champion at version 2" in first
    ungated = build_report(finished_run, out_dir=tmp_path / "u", policy=policy, pdf=False)
    assert ungated.gate is None and "Promotion gate" not in ungated.html_path.read_text()
