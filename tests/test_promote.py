"""`governance promote` on a real SQLite MLflow store: an untrained version fails the release gate (exit 11, the
alias does not move, the version is tagged blocked with the failed check), a trained one passes (the alias moves,
notifications arrive signed), the move and the tags come only after the report is written, and a dry run writes
nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.notify_listener import NOTIFY_SECRET, Listener

NAME = "promo-mlp"
POLICY = "name: release gate\nrequired_methods: [occlusion]\nchecks:\n" \
         "  - metric: performance.accuracy\n    op: \">=\"\n    value: 0.9\n"
FAST = ("--plugins", "testplugin", "--methods", "occlusion", "--max-samples", "16", "--no-pdf")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """v1: an untrained MLP (accuracy far below 0.9), v2: the same architecture trained; both with labelled
    governance/eval.npz on their source run."""
    import mlflow
    import torch

    from governance.testing.models import breast_cancer_dataset, tabular_mlp, trained_breast_cancer_mlp

    root = tmp_path_factory.mktemp("promote-store")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # never a registry URI another test left behind
    mlflow.set_experiment("training")
    ds = breast_cancer_dataset()
    np.savez(root / "eval.npz", X=ds.X[:64], y=ds.y[:64])
    torch.manual_seed(0)
    for model in (tabular_mlp().eval(), trained_breast_cancer_mlp(epochs=5)[0]):
        with mlflow.start_run():
            mlflow.log_artifact(str(root / "eval.npz"), "governance")
            mlflow.pytorch.log_model(model, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                     registered_model_name=NAME)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    (root / "policy.yaml").write_text(POLICY)
    return {"uri": uri, "root": root, "policy": str(root / "policy.yaml")}


@pytest.fixture
def gov(store, cli_invoke, test_plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])

    def run(*args: str):
        return cli_invoke("promote", *args, "--policy", store["policy"], "--out", str(tmp_path / "reports"), *FAST)

    return run


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])


def _champion(store):
    version = _client(store).get_registered_model(NAME).aliases.get("champion")
    return None if version is None else str(version)


def _tags(store, version):
    return dict(_client(store).get_model_version(NAME, version).tags)


def test_dry_run_writes_nothing(gov, store):
    code, out, err = gov(f"models:/{NAME}/latest", "--to", "champion", "--dry-run")
    assert code == 0, err
    assert f"models:/{NAME}/2, @champion now at no version" in out and "nothing was run or written" in out
    assert "if the verdict is pass, move @champion from no version to version 2" in out
    client = _client(store)
    assert client.get_experiment_by_name("governance") is None  # no run was made
    assert _champion(store) is None and "governance.gate" not in _tags(store, "2")


def test_a_broken_report_moves_and_tags_nothing(gov, store, tmp_path):
    """The move and the tags come after the report is written: a report that fails leaves the alias and the
    version's gate tags as they were."""
    broken = tmp_path / "templates"
    broken.mkdir()
    (broken / "report.html.j2").write_text("{{ no_such_macro() }}")
    code, out, err = gov(f"models:/{NAME}/2", "--to", "champion", "--template-dir", str(broken))
    assert code == 8, out + err  # ReportError
    assert _champion(store) is None and "governance.gate" not in _tags(store, "2")


def test_a_failing_version_is_blocked_and_a_passing_one_promoted(gov, store, tmp_path, monkeypatch):
    listener = Listener().start()
    monkeypatch.setenv("GOVERNANCE_NOTIFY_SECRET", NOTIFY_SECRET)
    try:
        code, out, err = gov(f"models:/{NAME}/1", "--to", "champion", "--notify", listener.url, "--json")
        assert code == 11, err
        doc = json.loads(out)
        assert doc["action"] == "blocked" and doc["alias_after"] is None and doc["exit_code"] == 11
        assert _champion(store) is None  # the alias stayed where it was: nowhere
        tags = _tags(store, "1")
        assert tags["governance.gate"] == "blocked" and tags["governance.gate.action"] == "blocked"
        assert tags["governance.gate.failed_checks"] == "performance.accuracy >= 0.9"
        assert tags["governance.verdict"] == "fail"
        assert tags["governance.gate.report_id"] == tags["governance.report_id"]
        report = json.loads((tmp_path / "reports" / f"{NAME}-v1" / "report.json").read_text())
        assert report["gate"]["decision"] == "block" and report["gate"]["alias_before"] is None
        accuracy = report["policy"]["checks"][1]["actual"]
        assert accuracy < 0.9 and f"{accuracy:.6g} >= 0.9 does not hold" == report["policy"]["checks"][1]["reason"]

        code, out, err = gov(f"models:/{NAME}/2", "--to", "champion", "--notify", listener.url)
        assert code == 0, out + err
        assert "PROMOTED: @champion moved from no version to version 2" in out
        assert _champion(store) == "2"
        tags = _tags(store, "2")
        assert tags["governance.gate"] == "passed" and tags["governance.gate.failed_checks"] == "none"
        assert listener.events() == ["report.verdict", "gate.blocked", "report.verdict", "gate.promoted"]
        assert all(r.signature_ok for r in listener.received)
        promoted = listener.received[-1].doc
        assert promoted["model"] == {"name": NAME, "version": "2"} and promoted["alias_before"] is None
        assert listener.received[2].doc["verdict"] == "pass" and listener.received[0].doc["verdict"] == "fail"
    finally:
        listener.close()

    # again: the identical finished run is reused, the alias already points there
    run_id = tags["governance.report_run_id"]
    code, out, err = gov(f"models:/{NAME}@champion", "--to", "champion", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["action"] == "unchanged" and doc["report"]["run_id"] == run_id
    # a failing version never moves the alias away from the passing one
    code, out, _ = gov(f"models:/{NAME}/1", "--to", "champion")
    assert code == 11 and "version 1 not promoted: @champion at version 2" in out and _champion(store) == "2"


@pytest.mark.parametrize("args, code, message", [
    (("--to", "latest"), 2, "reserved by MLflow"),
    (("--to", "champion one"), 2, "invalid alias"),
])
def test_bad_aliases_are_refused_before_any_work(gov, args, code, message):
    got, out, err = gov(f"models:/{NAME}/2", *args)
    assert got == code and message in err


def test_promote_needs_a_policy_and_a_registered_version(store, cli_invoke, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    code, _, err = cli_invoke("promote", f"models:/{NAME}/2", "--to", "champion")
    assert code == 2 and "promote needs a policy" in err
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not really onnx")
    code, _, err = cli_invoke("promote", str(onnx), "--to", "champion", "--policy", store["policy"])
    assert code == 4 and "not a registered model version" in err
