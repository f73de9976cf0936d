"""The run pipeline against a real SQLite MLflow store: artifacts, metrics, tags, isolation, idempotency,
and bad input that leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

import governance
from governance.contract.errors import DataError, ModelLoadError, ModelResolutionError, TrackingError


def _run_ids(registry, experiment="governance"):
    return {r.info.run_id for r in registry.runs(experiment)}


def test_run_logs_artifacts_metrics_and_version_tags(registry, test_plugins, tmp_path):
    run = governance.explain("models:/digits-cnn/1", methods=["occlusion"], data=registry.data["digits"],
                             tracking_uri=registry.uri, experiment="pipeline-basic", workdir=tmp_path)
    assert run.status == "ok" and not run.reused
    expl = run.explanation("occlusion")
    assert expl.ok and expl.arrays["attributions"].shape == (8, 1, 8, 8) and expl.seconds > 0
    client = registry.client()
    mlrun = client.get_run(run.mlflow_run_id)
    assert mlrun.info.status == "FINISHED"
    tags = mlrun.data.tags
    assert tags["governance.model_name"] == "digits-cnn" and tags["governance.model_version"] == "1"
    assert tags["governance.source_run_id"] == run.model["run_id"]
    assert "occlusion.mean_abs_attribution" in mlrun.data.metrics
    names = {a.path for a in client.list_artifacts(run.mlflow_run_id, "explanations/occlusion")}
    assert {"explanations/occlusion/summary.json", "explanations/occlusion/arrays.npz",
            "explanations/occlusion/occlusion.png"} <= names
    mv = client.get_model_version("digits-cnn", "1")
    assert mv.tags["governance.run_id"] == run.mlflow_run_id and mv.tags["governance.status"] == "ok"
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["performance"]["evaluation"]["accuracy"] > 0.5
    assert doc["model"]["training_run"]["params"]["epochs"] == "4"


def test_occlusion_oracle_on_a_linear_model(tmp_path):
    """Occlusion with baseline b on f(x) = Wx gives exactly W[c] * (x - b)."""
    import sys

    import torch

    from governance.contract.dataset import Dataset
    from governance.contract.method import MethodContext
    from governance.testing.models import as_loaded
    from tests.conftest import FIXTURE_PLUGINS

    sys.path.insert(0, str(FIXTURE_PLUGINS))
    try:
        from gov_testplugin import _classes
    finally:
        sys.path.remove(str(FIXTURE_PLUGINS))
    Occlusion, _ = _classes()
    lin = torch.nn.Linear(4, 2, bias=True)
    model = as_loaded(lin, (4,))
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    data = Dataset(X=X)
    ctx = MethodContext(model=model, data=data, config=Occlusion.Config(n_samples=5, target=1), seed=0,
                        workdir=tmp_path)
    expl = Occlusion().explain(ctx)
    W = lin.weight.detach().numpy()
    np.testing.assert_allclose(expl.arrays["attributions"], W[1] * (X - data.baseline), atol=1e-5)


def test_crashing_method_is_isolated_and_run_marked_failed(registry, test_plugins, tmp_path):
    run = governance.explain("models:/digits-cnn/1", methods=["crash", "occlusion"], data=registry.data["digits"],
                             tracking_uri=registry.uri, experiment="pipeline-crash", workdir=tmp_path)
    assert run.status == "partial"
    crash, occ = run.explanation("crash"), run.explanation("occlusion")
    assert crash.status == "failed" and "deliberate failure" in crash.reason and crash.traceback
    assert occ.ok  # the other method's results are kept
    client = registry.client()
    mlrun = client.get_run(run.mlflow_run_id)
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["governance.status"] == "partial"
    names = {a.path for a in client.list_artifacts(run.mlflow_run_id, "explanations/occlusion")}
    assert "explanations/occlusion/arrays.npz" in names
    assert client.get_model_version("digits-cnn", "1").tags["governance.status"] == "partial"


def test_same_config_is_reused_and_force_supersedes(registry, test_plugins, tmp_path):
    kwargs = dict(methods=["occlusion"], data=registry.data["bc"], tracking_uri=registry.uri, experiment="idem")
    first = governance.explain("models:/bc-mlp/1", workdir=tmp_path / "1", **kwargs)
    again = governance.explain("models:/bc-mlp/1", workdir=tmp_path / "2", **kwargs)
    assert again.reused and again.mlflow_run_id == first.mlflow_run_id
    np.testing.assert_array_equal(again.explanation("occlusion").arrays["attributions"],
                                  first.explanation("occlusion").arrays["attributions"])
    assert len(_run_ids(registry, "idem")) == 1
    forced = governance.explain("models:/bc-mlp/1", workdir=tmp_path / "3", force=True, **kwargs)
    assert forced.mlflow_run_id != first.mlflow_run_id
    old = registry.client().get_run(first.mlflow_run_id)
    assert old.data.tags["governance.superseded_by"] == forced.mlflow_run_id
    changed = governance.explain("models:/bc-mlp/1", workdir=tmp_path / "4", seed=1, **kwargs)
    assert changed.mlflow_run_id not in (first.mlflow_run_id, forced.mlflow_run_id)


def test_data_defaults_to_the_source_runs_eval_artifact(registry, test_plugins, tmp_path):
    run = governance.explain("models:/bc-mlp/1", methods=["occlusion"], tracking_uri=registry.uri,
                             experiment="default-data", workdir=tmp_path)
    assert run.data["source"].endswith("governance/eval.npz") and run.data["n_samples"] == 64


def test_input_example_is_the_last_resort(registry, test_plugins, tmp_path):
    run = governance.explain("models:/digits-cnn/1", methods=["occlusion"], tracking_uri=registry.uri,
                             experiment="example-data", workdir=tmp_path)
    assert run.data["n_samples"] == 2 and "input example" in run.data["source"]
    assert any("input example" in n for n in run.data["notes"])


@pytest.mark.parametrize("case", ["unknown-model", "wrong-version", "shape", "nan", "unreachable", "corrupt-onnx"])
def test_bad_input_fails_clearly_and_writes_nothing(registry, test_plugins, tmp_path, case):
    before_runs = _run_ids(registry, "bad-input")
    before_tags = dict(registry.client().get_model_version("digits-cnn", "1").tags)
    uri, data, tracking = "models:/digits-cnn/1", registry.data["digits"], registry.uri
    expected: type[Exception]
    if case == "unknown-model":
        uri, expected = "models:/nope/1", ModelResolutionError
    elif case == "wrong-version":
        uri, expected = "models:/digits-cnn/42", ModelResolutionError
    elif case == "shape":
        data, expected = registry.data["bc"], DataError
    elif case == "nan":
        X = np.load(registry.data["digits"])["X"].copy()
        X[3, 0, 2, 2] = np.nan
        data = tmp_path / "nan.npz"
        np.savez(data, X=X)
        expected = DataError
    elif case == "unreachable":
        tracking, expected = "http://127.0.0.1:9", TrackingError
    else:
        uri = str(tmp_path / "corrupt.onnx")
        (tmp_path / "corrupt.onnx").write_bytes(b"not an onnx model at all")
        expected = ModelLoadError
    with pytest.raises(expected) as err:
        governance.explain(uri, methods=["occlusion"], data=data, tracking_uri=tracking, experiment="bad-input",
                           workdir=tmp_path / "w")
    assert err.value.hint, "every user-facing error carries a fix"
    assert _run_ids(registry, "bad-input") == before_runs
    assert dict(registry.client().get_model_version("digits-cnn", "1").tags) == before_tags


def test_logged_dataset_of_the_source_run_is_used(registry, test_plugins, tmp_path):
    import mlflow

    from governance.testing.models import trained_breast_cancer_mlp

    mlp, ds = trained_breast_cancer_mlp(epochs=2)
    csv = tmp_path / "eval.csv"
    import pandas as pd

    frame = pd.DataFrame(ds.X[:40], columns=ds.feature_names)
    frame["target"] = ds.y[:40]
    frame.to_csv(csv, index=False)
    mlflow.set_tracking_uri(registry.uri)
    with mlflow.start_run():
        mlflow.log_input(mlflow.data.from_pandas(frame, source=str(csv), targets="target"), context="evaluation")
        mlflow.pytorch.log_model(mlp, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                 registered_model_name="bc-logged-dataset")
    run = governance.explain("models:/bc-logged-dataset/1", methods=["occlusion"], tracking_uri=registry.uri,
                             experiment="logged-dataset", workdir=tmp_path / "w")
    assert run.data["source"] == str(csv) and run.data["n_samples"] == 40 and run.data["has_labels"]
    assert run.data["feature_names"][0] == ds.feature_names[0]


def test_failed_upload_marks_run_failed_and_keeps_results(registry, test_plugins, tmp_path, monkeypatch):
    from governance.run.sink import MlflowSink

    real = MlflowSink.log_explanation

    def flaky(self, run_id, explanation, folder, model_id):
        if explanation.method == "occlusion":
            raise OSError("artifact store unavailable (injected)")
        return real(self, run_id, explanation, folder, model_id)

    monkeypatch.setattr(MlflowSink, "log_explanation", flaky)
    with pytest.raises(TrackingError) as err:
        governance.explain("models:/digits-cnn/1", methods=["occlusion"], data=registry.data["digits"],
                           tracking_uri=registry.uri, experiment="upload-fail", workdir=tmp_path, force=True)
    assert str(tmp_path) in err.value.hint
    assert (tmp_path / "explanations" / "occlusion" / "arrays.npz").is_file()
    (mlrun,) = registry.runs("upload-fail")
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["governance.status"] == "failed"


def test_settings_file_sets_defaults_and_block_list(registry, test_plugins, tmp_path, monkeypatch):
    from governance.host.plugins import PluginHost
    from governance.host.tracking import resolve_tracking_uri

    cfg = tmp_path / "governance.toml"
    cfg.write_text(f'tracking_uri = "{registry.uri}"\n[plugins]\nblock = ["testplugin"]\n')
    monkeypatch.setenv("GOVERNANCE_CONFIG", str(cfg))
    assert resolve_tracking_uri(None) == registry.uri
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"
    assert PluginHost().record("testplugin").status == "blocked"
    monkeypatch.setenv("GOVERNANCE_BLOCK_PLUGINS", "")
    assert PluginHost().record("testplugin").status == "loaded"  # the environment beats the file
    cfg.write_text("trackin_uri = 'x'\n")
    from governance.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="trackin_uri"):
        PluginHost()
    monkeypatch.delenv("GOVERNANCE_CONFIG")
