"""`governance report`, `governance policy check` and the MLflow side: exit codes, artifacts under report/,
model-version tags, reuse of an earlier run, and verification of the report as downloaded from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAILING_POLICY = "name: strict\nchecks:\n  - {metric: interpreter.fidelity, op: '>=', value: 0.99}\n"
PASSING_POLICY = "name: lenient\nchecks:\n  - {metric: interpreter.fidelity, op: '>=', value: 0.5}\n"


@pytest.fixture
def run_folder(finished_run):
    return finished_run.workdir


def test_report_from_run_folder_exit_11_on_policy_fail(run_folder, tmp_path, cli_invoke):
    policy = tmp_path / "strict.yaml"
    policy.write_text(FAILING_POLICY)
    code, out, err = cli_invoke("report", "--from-run", str(run_folder), "--policy", str(policy),
                                "-o", str(tmp_path / "out"), "--no-pdf", "--json")
    assert code == 11, err
    doc = json.loads(out)
    assert doc["verdict"] == "fail" and doc["status"] == "fail" and doc["files"]["pdf"] is None
    assert Path(doc["files"]["json"]).parent.name == "breast-cancer-mlp-v3"
    report = json.loads(Path(doc["files"]["json"]).read_text())
    assert report["policy"]["checks"][0]["status"] == "fail"


def test_report_exit_codes_without_policy_follow_the_run(run_folder, tmp_path, cli_invoke):
    code, out, _ = cli_invoke("report", "--from-run", str(run_folder), "-o", str(tmp_path), "--no-pdf")
    assert code == 10  # the run is partial: one method failed
    assert "verdict no policy" in out and "run status partial" in out
    policy = tmp_path / "ok.yaml"
    policy.write_text(PASSING_POLICY)
    code, out, _ = cli_invoke("report", "--from-run", str(run_folder), "-o", str(tmp_path), "--no-pdf",
                              "--policy", str(policy))
    assert code == 0 and "verdict pass" in out


def test_report_usage_errors(tmp_path, cli_invoke, run_folder):
    code, _, err = cli_invoke("report", "-o", str(tmp_path))
    assert code == 2 and "give a MODEL_URI or --from-run" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - {metric: a.b, op: '=>', value: 1}\n")
    code, _, err = cli_invoke("report", "--from-run", str(run_folder), "--policy", str(bad), "-o", str(tmp_path))
    assert code == 2 and "unknown operator" in err


def test_policy_check_command(run_folder, tmp_path, cli_invoke):
    strict, lenient = tmp_path / "strict.yaml", tmp_path / "lenient.toml"
    strict.write_text(FAILING_POLICY)
    lenient.write_text('name = "lenient"\n[[checks]]\nmetric = "interpreter.fidelity"\nop = ">="\nvalue = 0.5\n')
    code, out, _ = cli_invoke("policy", "check", str(strict), str(run_folder / "run.json"))
    assert code == 11 and "policy strict: fail (0 pass, 1 fail" in out and "0.97 >= 0.99" in out
    code, out, _ = cli_invoke("policy", "check", str(lenient), str(run_folder), "--json")
    assert code == 0 and json.loads(out)["verdict"] == "pass"


def test_report_package_and_api_function_do_not_collide():
    import governance
    import governance.report

    assert governance.report.build_report.__name__ == "build_report"
    assert governance.report_model.__module__ == "governance.api"


def test_report_on_a_registered_model_logs_to_mlflow_and_tags_the_version(registry, test_plugins, tmp_path,
                                                                           cli_invoke):
    import mlflow.artifacts

    from governance.report import verify_report

    policy = tmp_path / "p.yaml"
    policy.write_text("name: gate\nchecks:\n  - {metric: occlusion.mean_abs_attribution, op: '>=', value: 0}\n"
                      "  - {metric: performance.accuracy, op: '>=', value: 0.5}\n")
    card = tmp_path / "card.yaml"
    card.write_text("intended_use: test of the report command\napprovers: [{name: Q. Approver, role: MRM}]\n")
    from governance.report.signing import make_test_identity

    key, cert = make_test_identity(tmp_path / "keys", name="R. Eporter")
    args = ("report", "models:/bc-mlp/1", "--methods", "occlusion", "--tracking-uri", registry.uri,
            "--experiment", "report-cli", "--policy", str(policy), "--model-card", str(card),
            "-o", str(tmp_path / "out"), "--sign-key", str(key), "--sign-cert", str(cert), "--json")
    code, out, err = cli_invoke(*args)
    assert code == 0, err
    doc = json.loads(out)
    run_id = doc["run_id"]
    assert doc["logged_to_mlflow"] and doc["verdict"] == "pass"
    fingerprint = doc["signature"]["certificate_sha256"]

    client = registry.client()
    tags = client.get_model_version("bc-mlp", "1").tags
    assert tags["governance.report_run_id"] == run_id
    assert tags["governance.report_sha256"] == doc["sha256"]["pdf"]
    assert tags["governance.status"] == "pass"
    assert tags["governance.report_id"] == doc["report_id"]
    assert tags["governance.report_signer"] == "R. Eporter" and tags["governance.report_signer_sha256"] == fingerprint
    names = {f.path for f in client.list_artifacts(run_id, "report")}
    assert names == {"report/report.pdf", "report/report.html", "report/report.json", "report/manifest.json",
                     "report/report.pdf.sha256", "report/manifest.json.p7s"}
    run_tags = client.get_run(run_id).data.tags
    assert run_tags["governance.report_sha256"] == doc["sha256"]["pdf"]
    assert run_tags["governance.report_signer_sha256"] == fingerprint

    # the whole run as downloaded from MLflow verifies: report/ sits beside explanations/ and run.json
    dl = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl"),
                                                  tracking_uri=registry.uri))
    res = verify_report(dl / "report" / "report.pdf", expected_sha256=tags["governance.report_sha256"], trust=[cert])
    assert res.ok and res.trusted, [c for c in res.checks if c.status != "ok"]
    assert any(c.name == "evidence artifacts match their sha256" and c.status == "ok" for c in res.checks)
    report = json.loads((dl / "report" / "report.json").read_text())
    assert report["human"]["intended_use"]["source"] == "model card"
    assert report["model"]["training_run"]["run_id"] == registry.bc_run_id  # lineage: the training run

    # a second report reuses the finished run instead of explaining again
    code, out, err = cli_invoke(*args)
    assert code == 0, err
    again = json.loads(out)
    assert again["run_id"] == run_id and again["report_id"] != doc["report_id"]
    second = json.loads(Path(again["files"]["json"]).read_text())
    assert second["reproducibility"]["reused"] is True


def test_report_defaults_from_the_settings_file(run_folder, tmp_path, cli_invoke, monkeypatch):
    (tmp_path / "strict.yaml").write_text(FAILING_POLICY)
    (tmp_path / "governance.toml").write_text(
        f'[report]\npolicy = "{tmp_path / "strict.yaml"}"\nout_dir = "{tmp_path / "reports"}"\nsigner = "S. Igner, CRO"\n')
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli_invoke("report", "--from-run", str(run_folder), "--no-pdf", "--json")
    assert code == 11
    doc = json.loads(out)
    assert doc["out_dir"].startswith(str(tmp_path / "reports"))
    report = json.loads(Path(doc["files"]["json"]).read_text())
    assert report["document"]["signer"] == {"name": "S. Igner", "role": "CRO"}
