"""Pickle-format models are refused by default (issue 20): a registered model whose pickle creates a file
when it is loaded must not create it on `governance inspect`, `governance run` or in the service's job
handler, unless someone opted in. Real SQLite store, real MLflow model files, a real payload."""

from __future__ import annotations

import os

import pytest

from tests.pickle_payload import register_payload_model, write_payload_model


@pytest.fixture
def payload(registry, tmp_path):
    marker = tmp_path / "PAYLOAD-RAN"
    uri = register_payload_model(registry.uri, "payload-model", marker, tmp_path)
    return {"uri": uri, "marker": marker, "tracking": registry.uri}


def _no_trust(monkeypatch):
    for var in ("GOVERNANCE_TRUST_PICKLE", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        monkeypatch.delenv(var, raising=False)


def test_inspect_and_run_refuse_the_pickle_and_the_payload_never_runs(payload, registry, cli_invoke, monkeypatch,
                                                                      test_plugins):
    _no_trust(monkeypatch)
    runs_before = len(registry.runs())
    code, out, err = cli_invoke("inspect", payload["uri"], "--tracking-uri", payload["tracking"])
    assert code == 4 and "Traceback" not in out + err
    assert "pickle-format PyTorch model" in err and "runs any code" in err and "--trust-pickle" in err
    assert "serialization_format='pt2'" in err
    code, out, err = cli_invoke("run", payload["uri"], "--methods", "occlusion", "--tracking-uri", payload["tracking"])
    assert code == 4 and "pickle-format PyTorch model" in err and "Traceback" not in out + err
    assert not payload["marker"].exists()
    assert len(registry.runs()) == runs_before  # refused before anything was written


def test_mlflows_own_switch_wins_over_trust_pickle(payload, cli_invoke, monkeypatch):
    _no_trust(monkeypatch)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    code, out, err = cli_invoke("inspect", payload["uri"], "--tracking-uri", payload["tracking"], "--trust-pickle")
    assert code == 4 and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in err
    assert not payload["marker"].exists()


def test_the_payload_is_real_when_trusted(payload, cli_invoke, monkeypatch):
    """Control: with --trust-pickle the same file does run its code, so the refusals above are meaningful."""
    _no_trust(monkeypatch)
    code, out, err = cli_invoke("inspect", payload["uri"], "--tracking-uri", payload["tracking"], "--trust-pickle")
    assert payload["marker"].exists()
    assert code == 4 and "Traceback" not in out + err  # what it unpickled is not a model
    assert "GOVERNANCE_TRUST_PICKLE" not in os.environ  # the flag lasts for its command only


def test_a_benign_pickle_loads_with_each_opt_in(registry, monkeypatch, tmp_path):
    import governance
    from governance.contract.errors import ConfigError, ModelLoadError

    _no_trust(monkeypatch)
    uri = "models:/digits-cnn/2"  # a genuine pickle-format model
    with pytest.raises(ModelLoadError, match="refused by the default"):
        governance.load(uri, tracking_uri=registry.uri, device="cpu")
    monkeypatch.setenv("GOVERNANCE_TRUST_PICKLE", "1")
    assert governance.load(uri, tracking_uri=registry.uri, device="cpu").details["format"] == "nn.Module"
    monkeypatch.setenv("GOVERNANCE_TRUST_PICKLE", "0")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    with pytest.raises(ModelLoadError, match="GOVERNANCE_TRUST_PICKLE=0"):  # our switch decides over MLflow's true
        governance.load(uri, tracking_uri=registry.uri, device="cpu")
    monkeypatch.delenv("GOVERNANCE_TRUST_PICKLE")
    assert governance.load(uri, tracking_uri=registry.uri, device="cpu").runtime == "torch"  # explicit MLflow true
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    settings = tmp_path / "governance.toml"
    settings.write_text("trust_pickle = true\n")
    monkeypatch.setenv("GOVERNANCE_CONFIG", str(settings))
    assert governance.load(uri, tracking_uri=registry.uri, device="cpu").runtime == "torch"
    settings.write_text('trust_pickle = "yes please"\n')
    with pytest.raises(ConfigError, match="trust_pickle must be true or false"):
        governance.load(uri, tracking_uri=registry.uri, device="cpu")
    monkeypatch.delenv("GOVERNANCE_CONFIG")
    monkeypatch.setenv("GOVERNANCE_TRUST_PICKLE", "maybe")
    with pytest.raises(ConfigError, match="neither true nor false"):
        governance.load(uri, tracking_uri=registry.uri, device="cpu")


def test_pt2_models_load_under_the_safe_default(registry, monkeypatch):
    """The default refuses pickle but not pt2: MLflow's own pickle-free check of the archive passes."""
    import governance

    _no_trust(monkeypatch)
    model = governance.load("models:/digits-cnn/1", tracking_uri=registry.uri, device="cpu")
    assert model.details["format"].startswith("torch.export")
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in os.environ  # restored after the load


def test_the_service_handler_never_unpickles_unless_configured(payload, registry, monkeypatch, tmp_path,
                                                                test_plugins):
    """The job handler sets the switch from the service's own settings, whatever the environment says."""
    from governance.contract.errors import ModelLoadError
    from governance.service.handlers import report_job
    from governance.run.spec import RunSpec
    from governance.service.jobs import job_spec
    from governance.service.queue import JobQueue
    from governance.service.triggers import Trigger

    monkeypatch.setenv("GOVERNANCE_TRUST_PICKLE", "1")  # an ambient opt-in must not reach the service
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    name, version = payload["uri"][len("models:/"):].rsplit("/", 1)
    settings = RunSpec(tracking_uri=registry.uri, methods=("occlusion",), plugins=("testplugin",),
                       output_dir=str(tmp_path / "reports"))
    queue = JobQueue(tmp_path / "queue.db")
    queue.enqueue(**job_spec(Trigger(name, version, "created"), settings, source="webhook"))
    job = queue.claim("test-worker", 60)
    runs_before = len(registry.runs())
    with pytest.raises(ModelLoadError, match="pickle-format"):
        report_job(job)
    assert not payload["marker"].exists()
    assert len(registry.runs()) == runs_before
    assert not (tmp_path / "reports").exists()


def test_a_local_model_folder_is_refused_too(tmp_path, cli_invoke, monkeypatch):
    _no_trust(monkeypatch)
    marker = tmp_path / "RAN"
    folder = write_payload_model(tmp_path / "model", marker)
    code, out, err = cli_invoke("inspect", str(folder))
    assert code == 4 and "pickle-format" in err and not marker.exists()


def test_pickled_sklearn_estimators_are_refused_too(tmp_path, monkeypatch):
    """An sklearn estimator saved as (cloud)pickle falls under the same rule as a torch pickle; MLflow's
    default skops format (no code in the file) loads without an opt-in."""
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import governance
    from governance.contract.errors import ModelLoadError

    _no_trust(monkeypatch)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    folder = tmp_path / "sk"
    est = LogisticRegression().fit(X, X[:, 0] > 0)
    mlflow.sklearn.save_model(est, str(folder), input_example=X[:2], serialization_format="cloudpickle")
    with pytest.raises(ModelLoadError, match=r"is a pickled sklearn model \(model\.pkl\)") as err:
        governance.load(str(folder), device="cpu")
    assert "serialization_format='skops'" in err.value.hint and "--trust-pickle" in err.value.hint
    model = governance.load(str(folder), device="cpu", trust_pickle=True)
    assert model.predict(X[:4]).shape[0] == 4
    mlflow.sklearn.save_model(est, str(tmp_path / "skops"), input_example=X[:2])  # MLflow's default: skops
    assert governance.load(str(tmp_path / "skops"), device="cpu").predict(X[:4]).shape[0] == 4
