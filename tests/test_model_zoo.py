"""The models people actually register (issue 17), built in the test run: transformer-style torch blocks
exported both ways with and without dynamic axes, a pt2 model logged with a one-row input example,
skl2onnx classifiers with and without ZipMap, LightGBM, and regressors. Each checks that the explained
output is the native model's (probabilities, not the label) and which methods ran."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import governance
from governance.host.runtimes.onnx_model import OnnxModel
from governance.host.runtimes.parity import relative_parity

warnings.filterwarnings("ignore")
skl2onnx = pytest.importorskip("skl2onnx")

FAST = {"neflag": {"n_samples": 2, "n_points": 4}, "spectral": {"degree": 1},
        "interaction": {"n_samples": 1, "n_variables": 4, "traditional": False}}


def assert_same(got, want, rtol=1e-4):
    """Relative agreement that cannot pass on a zero output."""
    p = relative_parity(got, want, rtol)
    assert p.ok, p.describe()


class Block(nn.Module):
    """Tokens -> Linear -> LayerNorm -> multi-head attention (residual) -> Hardswish * Hardsigmoid -> mean -> Linear."""

    def __init__(self, d: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.inp, self.ln = nn.Linear(8, d), nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, 2, batch_first=True)
        self.hs, self.hsig, self.out = nn.Hardswish(), nn.Hardsigmoid(), nn.Linear(d, classes)

    def forward(self, x):
        h = self.ln(self.inp(x))
        a, _ = self.att(h, h, h, need_weights=False)
        h = h + a
        return self.out((self.hs(h) * self.hsig(h)).mean(1))


def _export(m, path, dynamo: bool, dynamic: bool):
    x = torch.randn(2 if dynamic else 1, 4, 8)
    logging.disable(logging.WARNING)
    try:
        if dynamo:
            kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
            torch.onnx.export(m, (x,), dynamo=True, **kw).save(str(path))
        else:
            kw = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}} if dynamic else {}
            torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"], **kw)
    finally:
        logging.disable(logging.NOTSET)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "fixed-batch-1"])
def test_transformer_block_exports_run_with_gradients(tmp_path, dynamo, dynamic):
    torch.manual_seed(0)
    m = Block().eval()
    model = OnnxModel.from_path(_export(m, tmp_path / "block.onnx", dynamo, dynamic))
    assert model.fixed_batch == (None if dynamic else 1)
    if not dynamic:
        assert any("fixed at 1" in n and "row by row" in n for n in model.notes)
    x = torch.randn(5, 4, 8)
    with torch.no_grad():
        want = m(x).numpy()
    assert_same(model.predict(x.numpy()), want)  # 5 rows through ORT, whatever the batch
    view = model.torch_module()
    assert view is not None, model.torch_unavailable_reason
    assert model.parity.ok and model.parity.reference_scale > 0
    xg = x.clone().requires_grad_(True)
    view(xg)[:, 1].sum().backward()
    x2 = x.clone().requires_grad_(True)
    m(x2)[:, 1].sum().backward()
    assert_same(xg.grad.numpy(), x2.grad.numpy(), rtol=1e-3)
    ln = next(n for n in model.layer_names() if "LayerNorm" in n or "layer_norm" in n.lower())
    _, acts = model.forward_with_activations(x, [ln])
    assert acts[ln].shape[0] == 5


def test_pt2_logged_with_one_row_example_runs_any_batch(tmp_path):
    import mlflow.pytorch

    from governance.host.plugins import get_plugin_host
    from governance.host.registry import resolve
    from governance.run.pipeline import load_model

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Hardswish(), nn.Linear(8, 3)).eval()
    x1 = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    mlflow.pytorch.save_model(m, str(tmp_path / "pt2"), input_example=x1, pip_requirements=["torch"])
    info = resolve(str(tmp_path / "pt2"), tracking_uri="sqlite:///unused.db", download_dir=tmp_path / "dl")
    model = load_model(info, device="cpu", batch_size=None, host=get_plugin_host())
    assert model.fixed_batch == 1 and model.task == "classification"
    X = np.random.default_rng(1).standard_normal((7, 6)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(X)).numpy()
    assert_same(model.predict(X), want)
    xg = torch.from_numpy(X).requires_grad_(True)
    model.torch_module()(xg)[:, 0].sum().backward()
    x2 = torch.from_numpy(X).requires_grad_(True)
    m(x2)[:, 0].sum().backward()
    assert_same(xg.grad.numpy(), x2.grad.numpy(), rtol=1e-4)


# ---------------------------------------------------------------------------------------- scikit-learn
@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32) / 16.0, y


def _skl(est, X, path, zipmap: bool):
    from skl2onnx import to_onnx

    final = est.steps[-1][1] if hasattr(est, "steps") else est
    proto = to_onnx(est, X[:2], options={id(final): {"zipmap": zipmap}})
    path.write_bytes(proto.SerializeToString())
    return OnnxModel.from_path(path)


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
@pytest.mark.parametrize("kind", ["logreg", "scaler+mlp"])
def test_skl2onnx_classifiers_explain_probabilities(digits, tmp_path, zipmap, kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = digits
    est = (LogisticRegression(max_iter=300) if kind == "logreg"
           else make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=60, random_state=0))).fit(X, y)
    model = _skl(est, X, tmp_path / "m.onnx", zipmap)
    assert model.output_choice["name"] == ("output_probability" if zipmap else "probabilities")
    assert model.output_choice["kind"] == ("zipmap" if zipmap else "tensor")
    assert model.task == "classification" and model.n_outputs == 10
    native = est.predict_proba(X[:40])
    assert_same(model.predict(X[:40]), native)
    view = model.torch_module()
    assert view is not None, model.torch_unavailable_reason
    with torch.no_grad():
        assert_same(view(torch.from_numpy(X[:40])).numpy(), native)


def test_output_override_and_bad_name(digits, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from governance.contract.errors import ConfigError

    X, y = digits
    lr = LogisticRegression(max_iter=300).fit(X, y)
    _skl(lr, X, tmp_path / "m.onnx", False)
    with pytest.raises(ConfigError) as err:
        OnnxModel.from_path(tmp_path / "m.onnx", output="proba")
    assert "probabilities" in err.value.hint and "--output" in err.value.hint
    chosen = OnnxModel.from_path(tmp_path / "m.onnx", output="probabilities")
    assert chosen.output_choice["reason"] == "chosen with --output"


def _log_and_explain(tmp_path, registry, flavor: str, est, X, y, methods, **kw):
    import importlib

    folder = tmp_path / flavor
    importlib.import_module(f"mlflow.{flavor}").save_model(est, str(folder), input_example=X[:2])
    data = tmp_path / "eval.npz"
    np.savez(data, X=X, y=y)
    return governance.explain(str(folder), methods=methods, data=str(data), tracking_uri=registry.uri,
                              experiment=f"zoo-{flavor}", workdir=tmp_path / "run", config=FAST, **kw)


def test_mlflow_sklearn_classifier_converted_and_explained(registry, tmp_path):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)[:120]
    y = y[:120]
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    run = _log_and_explain(tmp_path, registry, "sklearn", est, X, y, ["neflag", "spectral", "bort"])
    rt = run.runtime
    assert rt["converted_from"] == "sklearn" and rt["conversion_parity"]["ok"]
    assert rt["output_selection"]["name"] == "probabilities" and rt["task"] == "classification"
    native_acc = float((est.predict_proba(X).argmax(1) == y).mean())
    assert run.performance["evaluation"]["accuracy"] == pytest.approx(native_acc)
    status = {e.method: e.status for e in run.explanations}
    assert status == {"neflag": "ok", "spectral": "ok", "bort": "ok"}, {e.method: e.reason for e in run.explanations}
    assert len(run.explanation("spectral").details["reduction"]) and run.explanation("spectral").metrics["r2_data"] > 0.5


def test_mlflow_lightgbm_runs_forward_only_methods(registry, tmp_path):
    lgb = pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X.astype(np.float32)[:150], y[:150]
    est = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(X, y)
    run = _log_and_explain(tmp_path, registry, "lightgbm", est, X, y, ["neflag", "spectral", "interaction", "bort"])
    rt = run.runtime
    assert rt["converted_from"] == "lightgbm" and rt["output_selection"]["name"] == "probabilities"
    native = est.predict_proba(X)
    assert run.performance["evaluation"]["accuracy"] == pytest.approx(float((native.argmax(1) == y).mean()))
    by = {e.method: e for e in run.explanations}
    assert by["spectral"].status == "ok" and by["interaction"].status == "ok", by["interaction"].reason
    assert by["neflag"].status == "skipped" and "tree ensemble" in by["neflag"].reason
    assert by["bort"].status == "skipped" and "no weight matrices" in by["bort"].reason


def test_regressor_is_explained_as_regression(registry, tmp_path):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    X, y = X.astype(np.float32)[:120], y[:120]
    est = Ridge(alpha=0.1).fit(X, y)
    run = _log_and_explain(tmp_path, registry, "sklearn", est, X, y, ["neflag", "spectral", "interaction", "interpreter"])
    rt = run.runtime
    assert rt["task"] == "regression" and "regressor" in rt["task_reason"]
    perf = run.performance["evaluation"]
    native_rmse = float(np.sqrt(np.mean((est.predict(X) - y) ** 2)))
    assert perf["rmse"] == pytest.approx(native_rmse, rel=1e-4) and "accuracy" not in perf
    by = {e.method: e for e in run.explanations}
    for name in ("neflag", "interaction", "interpreter"):
        assert by[name].status == "skipped" and "regressor" in by[name].reason, (name, by[name].reason)
    spectral = by["spectral"]
    assert spectral.status == "ok" and spectral.details["output"] == "the predicted value (regression)"
    text = " ".join([spectral.summary or "", *spectral.findings, *spectral.warnings]).lower()
    assert "class" not in text and "probab" not in text


def test_torch_regressor_detected_and_task_override(tmp_path):
    from governance.testing.models import as_loaded

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    reg = as_loaded(net, (4,))
    assert reg.task == "regression" and "--task classification" in reg.task_reason
    from governance.host.runtimes.torch_model import TorchModel

    binary = TorchModel.from_module(net, (4,), task="classification")
    assert binary.task == "classification" and binary.task_reason == "set with --task"
    sig = TorchModel.from_module(nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), (4,))
    assert sig.task == "classification" and "sigmoid" in sig.task_reason
