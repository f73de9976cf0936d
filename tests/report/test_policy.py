"""Policy files: absolute and relative thresholds, missing metrics, severities, verdicts, file formats."""

from __future__ import annotations

import pytest

from governance.contract.errors import ConfigError
from governance.report.policy import collect_metrics, evaluate_policy, exit_code, load_policy

RUN = {
    "schema": "governance.run/1",
    "status": "partial",
    "runtime": {"parity_max_abs_diff": 2e-7, "device": "cpu"},
    "performance": {"evaluation": {"accuracy": 0.93, "n": 100}, "training_run": {"metrics": {"val_loss": 0.2}}},
    "explanations": [
        {"method": "interpreter", "status": "ok", "metrics": {"fidelity": 0.95, "broken": None}},
        {"method": "neflag", "status": "ok", "metrics": {"deletion_auc": 0.21, "ig_deletion_auc": 0.25}},
        {"method": "bort", "status": "skipped", "reason": "needs weights", "metrics": {}},
    ],
}


def check(metric, op, value=None, ref=None, **kw):
    d = {"metric": metric, "op": op, **kw}
    if value is not None:
        d["value"] = value
    if ref is not None:
        d["ref"] = ref
    return d


def only(policy_checks, **kw):
    res = evaluate_policy({"checks": policy_checks, **kw}, RUN)
    return res, res["checks"]


@pytest.mark.parametrize("metric, op, value, status", [
    ("interpreter.fidelity", ">=", 0.9, "pass"),
    ("interpreter.fidelity", ">=", 0.96, "fail"),
    ("interpreter.fidelity", ">", 0.95, "fail"),
    ("interpreter.fidelity", "ge", 0.95, "pass"),
    ("interpreter.fidelity", "≥", 0.95, "pass"),
    ("neflag.deletion_auc", "<", 0.21, "fail"),
    ("neflag.deletion_auc", "<=", 0.21, "pass"),
    ("neflag.deletion_auc", "!=", 0.21, "fail"),
    ("performance.accuracy", ">=", 0.9, "pass"),
    ("training.val_loss", "<=", 0.1, "fail"),
    ("runtime.parity_max_abs_diff", "<=", 1e-6, "pass"),
])
def test_absolute_checks(metric, op, value, status):
    _, (c,) = only([check(metric, op, value)])
    assert c["status"] == status
    assert c["expected"] == pytest.approx(value)


def test_relative_check_compares_with_another_metric_times_factor():
    res, (c1, c2) = only([check("neflag.deletion_auc", "<=", ref="neflag.ig_deletion_auc"),
                          check("neflag.deletion_auc", "<=", ref="neflag.ig_deletion_auc", factor=0.5)])
    assert (c1["status"], c1["expected"]) == ("pass", 0.25)
    assert (c2["status"], c2["expected"]) == ("fail", 0.125)
    assert "0.21 <= 0.125 does not hold" in c2["reason"]
    assert c2["id"] == "neflag.deletion_auc <= 0.5 × neflag.ig_deletion_auc"
    assert res["verdict"] == "fail" and exit_code(res["verdict"]) == 11


def test_equality_uses_tolerance():
    _, (c,) = only([check("interpreter.fidelity", "==", 0.951, tolerance=0.01)])
    assert c["status"] == "pass"


def test_missing_metric_is_not_evaluated_with_the_reason():
    res, (c1, c2, c3) = only([check("bort.audit_deviation", "<=", 0.05),
                              check("spectral.r2", ">=", 0.9),
                              check("interpreter.broken", ">=", 0.9)])
    assert [c["status"] for c in (c1, c2, c3)] == ["not_evaluated"] * 3
    assert "method 'bort' skipped: needs weights" in c1["reason"]
    assert "no metric 'spectral.r2'" in c2["reason"]
    assert "not a finite number" in c3["reason"]
    assert res["verdict"] == "not_evaluated" and exit_code(res["verdict"]) == 0


def test_missing_metric_can_be_made_to_fail_globally_or_per_check():
    res, (c,) = only([check("bort.audit_deviation", "<=", 0.05)], on_missing="fail")
    assert c["status"] == "fail" and res["verdict"] == "fail"
    res, (c,) = only([check("bort.audit_deviation", "<=", 0.05, on_missing="fail")])
    assert c["status"] == "fail"
    res, (c,) = only([check("neflag.deletion_auc", "<=", ref="neflag.nope")], on_missing="fail")
    assert c["status"] == "fail" and "reference" in c["reason"]


def test_advisory_failure_warns_and_does_not_fail_the_verdict():
    res, (c1, c2) = only([check("interpreter.fidelity", ">=", 0.99, severity="advisory"),
                          check("neflag.deletion_auc", "<=", 0.5)])
    assert c1["status"] == "warn"
    assert res["verdict"] == "pass"
    assert res["counts"] == {"pass": 1, "fail": 0, "warn": 1, "not_evaluated": 0}


def test_required_methods_must_have_run():
    res = evaluate_policy({"required_methods": ["neflag", "bort", "spectral"]}, RUN)
    assert [c["status"] for c in res["checks"]] == ["pass", "fail", "fail"]
    assert "skipped: needs weights" in res["checks"][1]["reason"]
    assert "was not part of the run" in res["checks"][2]["reason"]
    assert res["verdict"] == "fail"


def test_policy_reads_a_report_document_too():
    report = {"schema": "governance.report/1", "explanations": [{"method": "x"}], "run": RUN}
    res = evaluate_policy({"checks": [check("interpreter.fidelity", ">=", 0.9)]}, report)
    assert res["checks"][0]["status"] == "pass"


def test_metric_namespace():
    metrics, why = collect_metrics(RUN)
    assert metrics["interpreter.fidelity"] == 0.95
    assert metrics["performance.accuracy"] == 0.93 and "performance.n" in metrics
    assert metrics["training.val_loss"] == 0.2
    assert "runtime.device" not in metrics and "interpreter.broken" not in metrics
    assert "bort" in why


def test_yaml_and_toml_files_give_the_same_result(tmp_path):
    yml = tmp_path / "p.yaml"
    yml.write_text("name: gate\nversion: 2\nchecks:\n  - metric: interpreter.fidelity\n    op: '>='\n    value: 0.9\n"
                   "  - {metric: neflag.deletion_auc, op: '<=', ref: neflag.ig_deletion_auc}\n")
    toml = tmp_path / "p.toml"
    toml.write_text('name = "gate"\nversion = 2\n[[checks]]\nmetric = "interpreter.fidelity"\nop = ">="\nvalue = 0.9\n'
                    '[[checks]]\nmetric = "neflag.deletion_auc"\nop = "<="\nref = "neflag.ig_deletion_auc"\n')
    a, b = evaluate_policy(yml, RUN), evaluate_policy(toml, RUN)
    assert a["verdict"] == b["verdict"] == "pass"
    assert [c["status"] for c in a["checks"]] == [c["status"] for c in b["checks"]]
    assert a["version"] == "2" and len(a["sha256"]) == 64 and a["source"] == str(yml)


@pytest.mark.parametrize("raw, needle", [
    ({"checks": [{"metric": "a.b", "op": "=>", "value": 1}]}, "unknown operator '=>'"),
    ({"checks": [{"metric": "a.b", "op": ">=", "value": 1, "ref": "a.c"}]}, "exactly one of 'value'"),
    ({"checks": [{"metric": "a.b", "op": ">="}]}, "exactly one of 'value'"),
    ({"checks": [{"metric": "fidelity", "op": ">=", "value": 1}]}, "<method>.<metric>"),
    ({"checks": [{"metric": "a.b", "op": ">=", "value": 1, "treshold": 2}]}, "treshold"),
    ({"chekcs": []}, "chekcs"),
    ({"checks": [{"metric": "a.b", "op": ">=", "value": 1, "severity": "fatal"}]}, "severity"),
])
def test_invalid_policies_name_the_problem(raw, needle):
    with pytest.raises(ConfigError) as err:
        load_policy(raw)
    assert needle in str(err.value)


def test_unreadable_policy_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_policy(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_policy(lst)


def test_example_policy_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
    policy = load_policy(example)
    assert policy.checks and policy.name
