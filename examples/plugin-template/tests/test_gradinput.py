"""The gradinput plugin: discovered through its entry point (first), exact on models with known answers,
and conforming to governance's plugin contract (the suite from governance.testing)."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from governance import Dataset
from governance.errors import MethodError
from governance import MethodContext
from governance.testing import MethodConformance, as_loaded


def test_discovered_through_the_entry_point():
    from governance.host.plugins import PluginHost

    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="governance.plugins")}
    assert eps["gradinput"].value == "governance_gradinput"
    host = PluginHost(allow=["gradinput"])
    record = host.record("gradinput")
    assert record.status == "loaded" and record.distribution == "governance-gradinput"
    from governance_gradinput.method import GradientInput

    assert host.methods["gradinput"] is GradientInput and host.plugin_of("gradinput") == "gradinput"


def _explain(tmp_path, module, X, **config):
    from governance_gradinput.method import GradientInput

    ctx = MethodContext(model=as_loaded(module, X.shape[1:]), data=Dataset(X=X), seed=0, workdir=tmp_path,
                        config=GradientInput.parse_config(config))
    return GradientInput().explain(ctx)


@pytest.mark.parametrize("target", [None, 1])
def test_linear_model_gives_weight_times_input(tmp_path, target):
    """f(x) = Wx + b: attribution = W[c] * x exactly, and the sum is f_c(x) - f_c(0) (gap 0)."""
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    X = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    expl = _explain(tmp_path, lin, X, target=target, n_samples=7)
    W = lin.weight.detach().numpy()
    logits = X @ W.T + lin.bias.detach().numpy()
    c = logits.argmax(1) if target is None else np.full(7, target)
    np.testing.assert_allclose(expl.arrays["attributions"], W[c] * X, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(expl.arrays["targets"], c)
    assert expl.metrics["completeness_gap"] < 1e-4


def test_bias_free_relu_network_is_complete(tmp_path):
    """A ReLU network without biases is positively homogeneous: x . grad f(x) = f(x) (Euler), so the
    attributions sum to the explained output exactly."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8, bias=False), torch.nn.ReLU(), torch.nn.Linear(8, 2, bias=False))
    X = np.random.default_rng(2).standard_normal((10, 6)).astype(np.float32)
    expl = _explain(tmp_path, net, X, n_samples=10)
    out = net(torch.from_numpy(X)).detach().numpy()
    picked = out[np.arange(10), expl.arrays["targets"]]
    np.testing.assert_allclose(expl.arrays["attributions"].sum(1), picked, rtol=1e-5, atol=1e-5)


def test_target_beyond_the_outputs_is_a_clear_error(tmp_path):
    import torch

    with pytest.raises(MethodError, match="target 5 does not exist: the model has 3 output"):
        _explain(tmp_path, torch.nn.Linear(4, 3), np.zeros((2, 4), np.float32), target=5)


def test_forward_only_models_are_refused_with_a_reason(governance_forward_only):
    from governance_gradinput.method import GradientInput

    ctx = governance_forward_only("bc-mlp", n=8)
    reason = GradientInput.can_explain(model=ctx.model, data=ctx.data)
    assert "needs gradients" in reason


def test_images_get_a_heatmap_and_pixel_names(governance_context):
    from governance_gradinput.method import GradientInput

    ctx = governance_context("digits-cnn", config=GradientInput.parse_config({"n_samples": 8}), n=8)
    expl = GradientInput().explain(ctx)
    assert expl.arrays["attributions"].shape == (8, 1, 8, 8)
    assert expl.tables["top_features"][0]["feature"].startswith("pixel(0, ")
    assert expl.figures["importance"].is_file()


class TestGradInputConformance(MethodConformance):
    """governance's conformance suite: registration, config, results, determinism, report section."""

    plugin = "gradinput"
    method = "gradinput"
    config = {"n_samples": 16}
