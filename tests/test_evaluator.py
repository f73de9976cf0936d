"""``mlflow.models.evaluate(..., evaluators=["governance"])`` writes governance explanations into the caller's
run: a real MLflow evaluation on a SQLite store, through MLflow's own evaluator entry-point discovery."""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pytest

from governance import Explanation, Method, Requirement, hookimpl
from governance.contract.errors import ConfigError
from governance.integrations.mlflow_evaluator import GovernanceEvaluator, parse_evaluator_config

pytestmark = pytest.mark.filterwarnings("ignore:.*Add type hints to the `predict` method")


class Saliency(Method):
    """Mean |d f_c / d x| over the samples: the smallest real gradient method, to see gradient methods run on
    torch/ONNX flavors and get skipped (with the reason) on forward-only pyfunc models."""

    name = "saliency"
    version = "0.1.0"
    title = "Saliency"
    requires = frozenset({Requirement.GRADIENTS})

    def explain(self, ctx, **kwargs):
        import torch

        x = torch.from_numpy(ctx.data.X[:8]).requires_grad_(True)
        out = ctx.model.torch_module()(x)
        (grad,) = torch.autograd.grad(out.max(1).values.sum(), x)
        return Explanation(method=self.name, summary="gradients computed",
                           metrics={"mean_abs_gradient": float(grad.abs().mean())})


class SaliencyPlugin:
    @hookimpl
    def register_methods(self, register):
        register(Saliency)


class LinearLogits(mlflow.pyfunc.PythonModel):
    """A pyfunc-only model (no torch or ONNX flavor): logits = X @ W.T."""

    def __init__(self, W):
        self.W = W

    def predict(self, context, model_input, params=None):
        return np.asarray(model_input, dtype=np.float32) @ self.W.T


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with bc-mlp (pytorch flavor), digits-cnn (onnx flavor) and a pyfunc-only model."""
    import onnx

    from governance.testing.conformance import reference_model
    from governance.testing.models import export_onnx

    root = tmp_path_factory.mktemp("evalstore")
    cwd = os.getcwd()
    os.chdir(root)  # MLflow puts the artifacts of new experiments under ./mlruns of the current folder
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("evaluator-models")  # the process may hold another store's active experiment
    mlp, bc = reference_model("bc-mlp")
    cnn, digits = reference_model("digits-cnn")
    W = np.random.default_rng(0).standard_normal((2, 30)).astype(np.float32)
    models = {}
    with mlflow.start_run() as run:
        models["bc-mlp"] = mlflow.pytorch.log_model(mlp, name="mlp", input_example=bc.X[:2],
                                                    pip_requirements=["torch"]).model_uri
        path = export_onnx(cnn, (1, 8, 8), root / "cnn.onnx")
        models["digits-onnx"] = mlflow.onnx.log_model(onnx.load(str(path)), name="cnn", input_example=digits.X[:2],
                                                      pip_requirements=["onnx"]).model_uri
        models["pyfunc"] = mlflow.pyfunc.log_model(name="linear", python_model=LinearLogits(W),
                                                   input_example=bc.X[:2], pip_requirements=["numpy"]).model_uri
    yield {"uri": uri, "models": models, "mlp": mlp, "cnn": cnn, "W": W, "bc": bc, "digits": digits,
           "run_id": run.info.run_id}
    os.chdir(cwd)  # (conftest resets MLflow's process-wide store and experiment after each test)


@pytest.fixture
def methods(test_plugins):
    """The fixture plugin's occlusion (forward-only) plus the gradient method above, on the default host."""
    test_plugins.register_plugin(SaliencyPlugin(), "saliency-plugin")
    return test_plugins


def _evaluate(store, model_key, X, y, config, *, as_list=True):
    """With a list of evaluators MLflow wants the config keyed by evaluator name; with one name, not."""
    mlflow.set_tracking_uri(store["uri"])
    mlflow.set_experiment("evaluations")
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(store["models"][model_key], X, targets=y, model_type="classifier",
                                        evaluators=["governance"] if as_list else "governance",
                                        evaluator_config={"governance": config} if as_list else config)
    client = mlflow.MlflowClient(store["uri"])
    return result, client.get_run(run.info.run_id), client


def _files(client, run_id, path):
    return {a.path for a in client.list_artifacts(run_id, path)}


def _evaluation_json(client, run_id, tmp_path):
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="governance/evaluation.json",
                                                dst_path=str(tmp_path), tracking_uri=client.tracking_uri)
    return json.loads(open(local).read())


def test_mlflow_discovers_the_evaluator_through_its_entry_point():
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    assert "governance" in mlflow.models.list_evaluators()
    assert isinstance(_model_evaluation_registry.get_evaluator("governance"), GovernanceEvaluator)


def test_torch_model_gets_every_method_in_the_callers_run(store, methods, tmp_path):
    bc = store["bc"]
    X, y = bc.X[:40], bc.y[:40]
    result, run, client = _evaluate(store, "bc-mlp", X, y, {
        "methods": ["occlusion", "saliency"], "config": {"occlusion": {"n_samples": 5}}, "seed": 1})
    # the explanations are in the caller's run: metrics, artifacts, tags
    assert run.data.metrics["occlusion.mean_abs_attribution"] == pytest.approx(result.metrics["occlusion.mean_abs_attribution"])
    assert "saliency.mean_abs_gradient" in run.data.metrics and result.metrics["saliency.mean_abs_gradient"] > 0
    assert run.data.tags["governance.method.occlusion"] == "ok" and run.data.tags["governance.method.saliency"] == "ok"
    assert run.data.tags["governance.evaluator.status"] == "ok"
    assert {"explanations/occlusion/occlusion.png", "explanations/occlusion/arrays.npz",
            "explanations/occlusion/summary.json"} <= _files(client, run.info.run_id, "explanations/occlusion")
    assert result.artifacts["occlusion_occlusion"].uri.endswith("explanations/occlusion/occlusion.png")
    assert result.artifacts["occlusion_occlusion"].content.size[0] > 100  # a real image, loaded back from MLflow
    doc = _evaluation_json(client, run.info.run_id, tmp_path)
    assert doc["model"]["runtime"]["runtime"] == "torch" and doc["model"]["runtime"]["gradients"]
    assert doc["model"]["kind"] == "logged_model" and doc["data"]["n_samples"] == 40
    # the numbers are the method's, on exactly these samples: recompute occlusion directly
    from governance.contract.dataset import Dataset
    from governance.contract.method import MethodContext
    from governance.testing.models import as_loaded

    occlusion = methods.methods["occlusion"]
    ctx = MethodContext(model=as_loaded(store["mlp"], (30,)), data=Dataset(X=X, y=y, modality="tabular"),
                        config=occlusion.parse_config({"n_samples": 5}), seed=1, workdir=tmp_path / "direct")
    direct = occlusion().explain(ctx)
    assert result.metrics["occlusion.mean_abs_attribution"] == pytest.approx(
        direct.metrics["mean_abs_attribution"], rel=1e-5)


def test_pyfunc_only_model_runs_forward_only_methods_and_skips_gradient_ones(store, methods, tmp_path):
    bc = store["bc"]
    X, y = bc.X[:30], bc.y[:30]
    result, run, client = _evaluate(store, "pyfunc", X, y, {"methods": ["occlusion", "saliency"],
                                                              "config": {"occlusion": {"n_samples": 3, "target": 1}}},
                                    as_list=False)
    assert run.data.tags["governance.method.occlusion"] == "ok"
    assert run.data.tags["governance.method.saliency"] == "skipped"
    doc = _evaluation_json(client, run.info.run_id, tmp_path)
    saliency = next(e for e in doc["explanations"] if e["method"] == "saliency")
    assert "pyfunc" in saliency["reason"] and doc["model"]["runtime"]["runtime"] == "pyfunc"
    # occlusion on logits = X W^T with the dataset-mean baseline: exactly W[1] * (x - mean), summed over |.|
    W, base = store["W"], X.mean(0)
    expected = np.abs(W[1] * (X[:3] - base)).mean()
    assert result.metrics["occlusion.mean_abs_attribution"] == pytest.approx(float(expected), rel=1e-4)


def test_image_model_evaluated_on_flat_rows(store, methods, tmp_path):
    digits = store["digits"]
    X = digits.X[:20].reshape(20, -1)  # what a DataFrame/table of pixels gives
    result, run, client = _evaluate(store, "digits-onnx", X, digits.y[:20],
                                    {"methods": ["occlusion"], "config": {"occlusion": {"n_samples": 2}}})
    doc = _evaluation_json(client, run.info.run_id, tmp_path)
    assert doc["data"]["sample_shape"] == [1, 8, 8] and doc["data"]["modality"] == "image"
    assert doc["model"]["runtime"]["runtime"] == "onnxruntime"
    assert "occlusion.mean_abs_attribution" in result.metrics


def test_bad_evaluator_config_names_the_valid_keys(store, methods):
    with pytest.raises(ConfigError, match="methodz") as err:
        _evaluate(store, "bc-mlp", store["bc"].X[:10], store["bc"].y[:10], {"methodz": ["occlusion"]})
    assert "methods" in err.value.hint
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        _evaluate(store, "bc-mlp", store["bc"].X[:10], store["bc"].y[:10], {"methods": ["nope"]})


def test_only_classifiers_and_regressors_are_claimed():
    assert GovernanceEvaluator.can_evaluate(model_type="classifier", evaluator_config={})
    assert GovernanceEvaluator.can_evaluate(model_type="regressor", evaluator_config={})
    assert not GovernanceEvaluator.can_evaluate(model_type="text", evaluator_config={})
    assert parse_evaluator_config(None).max_samples == 512
