"""Headline figures beside their controls, end to end on the report: the verdict in report.json, the control
table, the first page of the PDF saying "not informative", the MLflow metric names, and a policy requiring it."""

from __future__ import annotations

import copy

import pytest
from pypdf import PdfReader

from governance.contract.evidence import Control, figure_verdicts
from governance.report import build_report
from governance.report.policy import evaluate_policy
from governance.run.sink import control_metrics
from tests.report.conftest import make_host


def _with_controls(run):
    """The realistic run, with the neflag deletion AUC compared with its own random-order curve (computed by
    the fixture from the trained model) and the interpreter's fidelity with an untrained interpreter that
    matches it (a figure that does not beat its control)."""
    run = copy.deepcopy(run)
    neflag, interp = run.explanation("neflag"), run.explanation("interpreter")
    neflag.add_control("deletion_auc", neflag.metrics["random_deletion_auc"], key="random",
                       control="features removed in random order", better="lower", margin=0.01,
                       margin_rule="fixed 0.01", label="deletion AUC")
    interp.add_control("fidelity", 0.96, key="untrained", control="untrained interpreter", better="higher",
                       margin=0.05, margin_rule="fixed 0.05", label="fidelity")
    return run


def test_verdict_rule_and_hardest_control():
    c = Control(metric="auc", value=0.2, control_value=0.5, key="random", control="r", better="lower", margin=0.1)
    assert c.advantage == pytest.approx(0.3) and c.verdict == "informative"
    assert Control(metric="auc", value=0.45, control_value=0.5, key="random", control="r", better="lower",
                   margin=0.1).verdict == "not informative"  # better, but not by the margin
    higher = Control(metric="f", value=0.9, control_value=0.95, key="u", control="u", better="higher", margin=0.0)
    assert higher.advantage == pytest.approx(-0.05) and not higher.informative
    two = [c, Control(metric="auc", value=0.2, control_value=0.25, key="randomised_model", control="m",
                      better="lower", margin=0.1)]
    assert figure_verdicts(two) == {"auc": "not informative"}  # must beat every control
    with pytest.raises(ValueError, match="better"):
        Control(metric="a", value=1, control_value=0, key="k", control="c", better="more", margin=0)


def test_sink_metric_names_name_each_control_and_the_verdict(finished_run):
    run = _with_controls(finished_run)
    m = control_metrics(run.explanation("neflag"))
    assert m["deletion_auc.control.random"] == pytest.approx(run.explanation("neflag").metrics["random_deletion_auc"])
    assert m["deletion_auc.control"] == m["deletion_auc.control.random"]
    assert m["deletion_auc.informative"] == 1.0
    assert control_metrics(run.explanation("interpreter"))["fidelity.informative"] == 0.0


def test_report_prints_controls_and_not_informative_on_the_first_page(finished_run, tmp_path):
    run = _with_controls(finished_run)
    assert run.explanation("neflag").metrics["deletion_auc"] < run.explanation("neflag").metrics["random_deletion_auc"] - 0.01
    res = build_report(run, out_dir=tmp_path / "r", plugin_host=make_host(None, sections_hook=False))
    import json

    doc = json.loads(res.json_path.read_text())
    figs = {f["name"]: f["verdict"] for f in doc["quality"]["figures"]}
    assert figs == {"neflag.deletion_auc": "informative", "interpreter.fidelity": "not informative"}
    assert [f["name"] for f in doc["quality"]["not_informative"]] == ["interpreter.fidelity"]
    assert "neflag.random_deletion_auc" in doc["quality"]["without_control"]
    html = res.html_path.read_text()
    assert "untrained interpreter" in html and "features removed in random order" in html
    first_page = PdfReader(res.pdf_path).pages[0].extract_text()
    assert "1 of 2 headline figure(s) beat their controls" in " ".join(first_page.split())
    assert "not informative" in first_page and "interpreter fidelity" in " ".join(first_page.split())


def test_a_report_without_any_control_says_so_on_the_first_page(finished_run, tmp_path):
    res = build_report(finished_run, out_dir=tmp_path / "r", pdf=False, plugin_host=make_host(None, sections_hook=False))
    assert "No headline figure was compared with a control" in res.html_path.read_text()


def test_policy_informative_checks(finished_run):
    doc = _with_controls(finished_run).to_dict()
    policy = {"name": "p", "checks": [{"metric": "neflag.deletion_auc", "informative": True},
                                      {"metric": "interpreter.fidelity", "informative": True, "severity": "advisory"},
                                      {"metric": "neflag.seed_stability", "informative": True}]}
    res = evaluate_policy(policy, doc)
    status = {c["metric"]: (c["status"], c["reason"]) for c in res["checks"]}
    assert status["neflag.deletion_auc"] == ("pass", None)
    assert status["interpreter.fidelity"][0] == "warn" and "did not beat its control" in status["interpreter.fidelity"][1]
    assert status["neflag.seed_stability"] == ("not_evaluated", "no control was computed for neflag.seed_stability")
    assert res["verdict"] == "pass"
    policy["checks"][1]["severity"] = "required"
    assert evaluate_policy(policy, doc)["verdict"] == "fail"
    with pytest.raises(Exception, match="takes no op"):
        evaluate_policy({"checks": [{"metric": "a.b", "informative": True, "op": ">=", "value": 1}]}, doc)
