"""FLINT interpreter plugin: the spec's oracles (methods-flint-bort.md A5: O-F1..O-F6), the post-hoc method on
real models (torch, ONNX with and without a torch view), MLflow logging and reloading, by-design training and
its CLI command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from governance.contract.dataset import Dataset
from governance.contract.errors import ConfigError, DataError, MethodError
from governance.contract.method import MethodContext
from governance.testing.models import as_loaded, as_onnx_loaded, train, trained_digits_cnn
from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter.activations import as_class_logits, build_cache, choose_default_layers
from governance_plugins.interpreter.losses import (LossSchedule, conciseness_diversity_loss, output_fidelity_loss,
                                                   softmax_entropy)
from governance_plugins.interpreter.method import FlintMethod
from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec

FAST = dict(epochs=3, lr=1e-3, batch_size=32, min_steps_per_epoch=50, beta_after=0, sparsity_after=0, delta_after=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and far steadier on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module's MLflow tests (creating a store's tables costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def run_method(model, data, tmp_path, seed=0, **config):
    ctx = MethodContext(model=model, data=data, config=FlintMethod.parse_config(config), seed=seed,
                        workdir=Path(tmp_path) / "interpreter")
    return FlintMethod().explain(ctx), ctx


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)  # the host's helper builds the net before seeding
    net, ds = trained_digits_cnn(seed=0, epochs=6)
    return net, ds.subset(600, np.random.default_rng(0))


@pytest.fixture(scope="module")
def digits_run(digits, tmp_path_factory):
    """One post-hoc run on the digits CNN (torch), with the weights captured before and after."""
    net, ds = digits
    for p in net.parameters():
        p.grad = None
    model = as_loaded(net, (1, 8, 8))
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    raw_before = {k: v.tobytes() for k, v in model.parameters().items()}
    tmp = tmp_path_factory.mktemp("digits")
    expl, ctx = run_method(model, ds, tmp, log_model=False, am_pairs=2, am_rounds=2, am_steps=10, **FAST)
    return dict(net=net, ds=ds, model=model, expl=expl, ctx=ctx, before=before, raw_before=raw_before)


# ------------------------------------------------------------------------------------------- O-F1
def test_of1_relevance_and_conciseness_arithmetic():
    phi = np.array([[2.0, 1.0, 0.5, 0.0]])
    W = np.zeros((4, 3))
    W[:, 1] = [1.0, 1.5, -2.0, 3.0]
    alpha = M.contributions(phi, W, np.array([1]))
    np.testing.assert_allclose(alpha, [[2.0, 1.5, -1.0, 0.0]])
    r = M.relevances(alpha, "paper")
    np.testing.assert_allclose(r, [[1.0, 0.75, -0.5, 0.0]])
    assert [M.conciseness(r, t) for t in (1.5, 2, 5)] == [2, 2, 2]
    r_abs = M.relevances(alpha, "abs")
    assert M.conciseness(r_abs, 2.5) == 3 and M.conciseness(r_abs, 2) == 2  # 0.5 is not > 0.5


def test_of1_global_relevance_averages_per_predicted_class():
    r = np.array([[1, 0.75, -0.5, 0], [0.5, 1, 0, 0], [0.2, 0.2, 0.2, 0.2]])
    R = M.global_relevance(r, np.array([2, 2, 0]), 3)
    np.testing.assert_allclose(R[2], [0.75, 0.875, -0.25, 0])
    np.testing.assert_allclose(R[0], [0.2] * 4)
    assert np.isnan(R[1]).all()  # never predicted


@pytest.mark.parametrize("sign, paper, absolute", [(1.0, 1, 1), (-1.0, 0, 1)])
def test_of1_single_contribution(sign, paper, absolute):
    alpha = np.array([[0.0, sign * 0.7, 0.0]])
    for tau in (1.2, 1.5, 3.0, 5.0):
        assert M.conciseness(M.relevances(alpha, "paper"), tau) == paper
        assert M.conciseness(M.relevances(alpha, "abs"), tau) == absolute


@pytest.mark.parametrize("variant, r, cns15, cns25", [
    ("paper", [-1, 1 / 3, 1 / 6, 0], 0, 0),
    ("abs", [1, 1 / 3, 1 / 6, 0], 1, 1),
    ("signed_max", [-3, 1, 0.5, 0], 1, 2),
])
def test_of1_three_way_variant_check(variant, r, cns15, cns25):
    phi = np.array([[3.0, 1.0, 0.5, 0.0]])
    W = np.array([[-1.0], [1.0], [1.0], [1.0]])
    rel = M.relevances(M.contributions(phi, W, np.array([0])), variant)
    np.testing.assert_allclose(rel[0], r)
    assert M.conciseness(rel, 1.5) == cns15 and M.conciseness(rel, 2.5) == cns25


def test_relevance_guard_for_all_zero_contributions():
    r = M.relevances(np.zeros((2, 5)))
    assert np.isfinite(r).all() and (r == 0).all()


# ------------------------------------------------------------------------------------------- O-F2
def test_of2_entropy_identities():
    assert float(softmax_entropy(torch.zeros(25))) == pytest.approx(math.log(25), abs=1e-6)
    assert float(softmax_entropy(torch.zeros(25))) == pytest.approx(3.218876, abs=1e-6)
    for dtype in (torch.float32, torch.float64):
        v = torch.zeros(10, dtype=dtype)
        v[0] = 1000.0
        e = softmax_entropy(v)
        assert torch.isfinite(e) and float(e) < 1e-6  # the naive −Σ p log p gives NaN here
    phi = torch.ones(8, 25) * 3.0  # constant batch mean -> diversity term is −log J
    a = phi.abs()
    assert float(-softmax_entropy(a.mean(0))) == pytest.approx(-math.log(25), abs=1e-6)


def test_of2_lcd_lower_bound():
    gen = torch.Generator().manual_seed(0)
    for J in (4, 25, 180):
        for _ in range(15):
            phi = torch.randn(16, J, generator=gen) * torch.rand(1, generator=gen) * 20
            assert float(conciseness_diversity_loss(phi)) >= -math.log(J) - 1e-5
    near = 50.0 * torch.eye(180)  # near-one-hot with a constant mean reaches the bound up to rounding
    assert float(conciseness_diversity_loss(near)) >= -math.log(180) - 1e-5
    assert float(conciseness_diversity_loss(near)) == pytest.approx(-math.log(180), abs=1e-4)
    near64 = 50.0 * torch.eye(180, dtype=torch.float64)
    assert float(conciseness_diversity_loss(near64)) >= -math.log(180) - 1e-12


def test_loss_directions_and_schedule():
    f = torch.randn(6, 4)
    g = f.clone().requires_grad_(True)
    l_of = output_fidelity_loss(g, f)
    mean_entropy = softmax_entropy(f).mean()
    assert l_of.item() == pytest.approx(mean_entropy.item(), abs=1e-6)  # minimum = target entropy
    (grad,) = torch.autograd.grad(l_of, g)
    assert float(grad.abs().max()) < 1e-6  # g = f is a stationary point
    assert float(output_fidelity_loss(f + torch.randn(6, 4), f)) > float(mean_entropy)
    # the predictor is the detached target: no gradient reaches it through L_of
    f2 = torch.randn(6, 4, requires_grad=True)
    g2 = torch.randn(6, 4, requires_grad=True)
    assert torch.autograd.grad(output_fidelity_loss(g2, f2), [f2], allow_unused=True)[0] is None
    # A2.3 MNIST row: β = 0.5·[ep>2], γ = 0.8, δ = 0.2·[ep>4], λ_spa = 0.1·[ep>2]
    s = LossSchedule()
    assert [s.at(e)["beta"] for e in (1, 2, 3)] == [0, 0, 0.5]
    assert [s.at(e)["gamma"] for e in (1, 12)] == [0.8, 0.8]
    assert [s.at(e)["delta"] for e in (4, 5)] == [0, 0.2]
    assert [s.at(e)["sparsity"] for e in (2, 3)] == [0, 0.1]


# ------------------------------------------------------------------------------------------- O-F3
def test_of3_perfect_interpreter_by_construction(tmp_path):
    torch.manual_seed(0)
    H, C = 12, 3
    f = nn.Sequential(nn.Linear(5, H), nn.ReLU(), nn.Linear(H, C)).eval()
    model = as_loaded(f, (5,))
    X = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    cache = build_cache(model, X, ["1"], batch_size=64)
    assert cache.forward_calls == 4 and cache.acts[0].shape == (200, H)
    spec = InterpreterSpec(layers=["1"], layer_shapes=[[H]], n_classes=C, n_attributes=H, input_shape=[5])
    class IdentityPsi(nn.Module):  # Ψ = ReLU(I·a + 0): Ψ receives the list of tapped activations
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(H, H)
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(H))
                self.lin.bias.zero_()

        def forward(self, acts):
            return torch.relu(self.lin(acts[0]))

    interp = FlintInterpreter(spec, psi=IdentityPsi())
    with torch.no_grad():
        interp.linear.weight.copy_(f[2].weight)
        interp.linear.bias.copy_(f[2].bias)
    interp.eval()  # h has Dropout(0.01): g ≠ f in training mode
    with torch.no_grad():
        g, phi = interp(cache.acts)
    assert torch.equal(g, cache.outputs)
    assert M.fidelity(g.numpy(), cache.outputs.numpy()) == 1.0
    assert float(output_fidelity_loss(g, cache.outputs)) == pytest.approx(
        float(softmax_entropy(cache.outputs).mean()), abs=1e-6)
    W = interp.W.numpy()
    np.testing.assert_array_equal(W, f[2].weight.detach().numpy().T)  # W[j, c] = W2[c, j]
    pred = g.argmax(1).numpy()
    last = cache.acts[0].numpy() * f[2].weight.detach().numpy()[pred]
    expected = last / np.abs(last).max(1, keepdims=True)
    np.testing.assert_allclose(M.relevances(M.contributions(phi.numpy(), W, pred)), expected, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_trained_interpreter_reaches_perfect_fidelity_where_a_perfect_one_exists(tmp_path, seed):
    """The O-F3 setting trained instead of constructed: f = W2·ReLU(W1x + b1) + b2 on three Gaussian blobs, tapped
    at the ReLU, so g ≡ f is reachable (Ψ ≈ identity, h = (W2, b2)); post-hoc training must get there."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 600)
    X = (rng.standard_normal((3, 6))[y] * 2.5 + rng.standard_normal((600, 6))).astype(np.float32)
    torch.manual_seed(seed)
    f = train(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), Dataset(X=X, y=y.astype(np.int64)),
              epochs=20, lr=1e-2, seed=seed)
    data = Dataset(X=X, modality="tabular")  # no labels needed
    expl, _ = run_method(as_loaded(f, (6,)), data, tmp_path, layers=["1"], log_model=False, epochs=6, lr=3e-3,
                         batch_size=32, min_steps_per_epoch=0, beta_after=0, sparsity_after=0, delta_after=2)
    assert expl.metrics["fidelity"] >= 0.99
    assert "profiles" in expl.figures and "am" not in expl.figures


# ------------------------------------------------------------------------------------------- O-F4
def squares(n: int, seed: int, size: int = 16, side: int = 4) -> Dataset:
    """O-F4's generator, shrunk to 16×16: class k puts a 4×4 square of 1.0 at row {1, 9}[k // 5] and column
    {0, 3, 6, 9, 12}[k % 5] on a U(0, 0.5) background."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.uniform(0, 0.5, (n, 1, size, size)).astype(np.float32)
    for i, k in enumerate(y):
        r, c = (1, 9)[k // 5], (0, 3, 6, 9, 12)[k % 5]
        X[i, 0, r : r + side, c : c + side] = 1.0
    return Dataset(X=X, y=y.astype(np.int64), modality="image", class_names=[str(i) for i in range(10)])


def test_of4_posthoc_learnability_on_toy_and_frozen_predictor(tmp_path):
    from governance_plugins.interpreter.by_design import build_predictor

    torch.manual_seed(0)
    ds = squares(1000, seed=0)
    f, taps = build_predictor((1, 16, 16), 10)  # the LeNet-like MNIST predictor of A2.4
    train(f, ds.subset(800), epochs=2, lr=1e-3, seed=0)
    model = as_loaded(f, (1, 16, 16))
    assert (model.predict(ds.X).argmax(1) == ds.y).mean() == 1.0
    for p in f.parameters():
        p.requires_grad_(False)
        p.grad = None  # stale grads from training f would fail the check below
    before = {k: v.clone() for k, v in f.state_dict().items()}
    expl, _ = run_method(model, ds, tmp_path, layers=taps, log_model=False, am_pairs=0, n_attributes=25, epochs=3,
                         lr=1e-3, batch_size=64, min_steps_per_epoch=60, beta_after=0, sparsity_after=0,
                         delta_after=1)
    hist = expl.tables["history"]
    assert hist[1]["fidelity"] >= 0.98
    assert all(h["cns_g_2"] < hist[0]["cns_g_2"] for h in hist[1:])
    assert all(torch.equal(before[k], v) for k, v in f.state_dict().items())
    assert all(p.grad is None for p in f.parameters())


# ------------------------------------------------------------------------------------------- O-F5
def test_of5_stop_gradient_in_joint_mode():
    from governance_plugins.interpreter.by_design import build_predictor
    from governance_plugins.interpreter.training import LayerTaps

    torch.manual_seed(0)
    f, layers = build_predictor((1, 8, 8), 10)
    taps = LayerTaps(f, layers)
    x = torch.rand(8, 1, 8, 8)
    logits, acts = taps(x)
    spec = InterpreterSpec(layers=layers, layer_shapes=[list(a.shape[1:]) for a in acts], n_classes=10,
                           n_attributes=25, input_shape=[1, 8, 8], modality="image")
    interp = FlintInterpreter(spec)
    g, _ = interp(acts)
    l_of = output_fidelity_loss(g, logits)
    after = [f.fc1.weight, f.fc1.bias, f.fc2.weight, f.fc2.bias]  # layers after the tap
    for grad in torch.autograd.grad(l_of, after, retain_graph=True, allow_unused=True):
        assert grad is None or torch.count_nonzero(grad) == 0
    before = [f.conv1.weight, f.conv2.weight]  # up to the tap
    for grad in torch.autograd.grad(l_of, before + list(interp.psi.parameters())[:1], retain_graph=True):
        assert grad is not None and torch.count_nonzero(grad) > 0
    l_of.backward()
    assert f.fc2.weight.grad is None


# ------------------------------------------------------------------------------------------- post-hoc method
def test_posthoc_digits_outputs_and_frozen_weights(digits_run):
    expl, net, model = digits_run["expl"], digits_run["net"], digits_run["model"]
    assert expl.ok, expl.reason
    # the registered model stays frozen: byte-identical weights, no gradients
    assert all(torch.equal(digits_run["before"][k], v) for k, v in net.state_dict().items())
    assert {k: v.tobytes() for k, v in model.parameters().items()} == digits_run["raw_before"]
    assert all(p.grad is None for p in net.parameters())
    assert expl.details["predictor_unchanged"] is True
    J, C = expl.details["n_attributes"], 10
    assert J == 25 and expl.details["layers"] == ["3", "5"]  # default taps: the last two conv stages
    n_hold = expl.details["n_heldout"]
    assert expl.arrays["global_relevance"].shape == (C, J)
    assert expl.arrays["local_relevances"].shape == (n_hold, J)
    assert np.abs(expl.arrays["local_relevances"]).max() <= 1 + 1e-6
    assert expl.metrics["fidelity"] >= 0.8
    for tau in (1.5, 2, 2.5, 3, 4, 5):
        assert f"cns_g_tau_{tau:g}" in expl.metrics
    assert all(isinstance(v, float) for v in expl.metrics.values())
    assert {"global_relevance", "local", "mas", "am", "training"} <= set(expl.figures)
    assert all(Path(p).exists() for p in expl.figures.values())
    assert expl.tables["pairs"] and expl.tables["local"]
    assert len(expl.arrays["disagreements"]) == int(expl.metrics["n_disagreements"])
    assert expl.details["mlflow_model"]["logged"] is False
    json.dumps(expl.to_dict(), allow_nan=False)  # what the host writes to report.json


def test_saved_interpreter_reloads(digits_run):
    from governance_plugins.interpreter import interpret, load_interpreter

    folder = digits_run["ctx"].workdir / "model"
    interp = load_interpreter(folder)
    ds, model, expl = digits_run["ds"], digits_run["model"], digits_run["expl"]
    rows = expl.arrays["heldout_indices"][:20]
    out = interpret(interp, model, ds.X[rows])
    np.testing.assert_allclose(out["logits"], expl.arrays["interpreter_logits"][:20], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["relevances"], expl.arrays["local_relevances"][:20], atol=1e-5)


def test_cached_epochs_never_call_the_predictor(digits, tmp_path):
    """Predictor forward passes happen once (the cache); more epochs add none."""
    net, ds = digits
    ds = ds.subset(300)
    calls = []
    for epochs in (1, 3):
        model = as_loaded(net, (1, 8, 8))
        counter = {"fwa": 0, "module": 0, "predict": 0}
        original = model.forward_with_activations
        model.forward_with_activations = lambda x, l, _o=original: (counter.__setitem__("fwa", counter["fwa"] + 1), _o(x, l))[1]
        model.predict = lambda *a, **k: (_ for _ in ()).throw(AssertionError("predict is not needed"))
        h = net.register_forward_pre_hook(lambda *_: counter.__setitem__("module", counter["module"] + 1))
        try:
            expl, _ = run_method(model, ds, tmp_path / str(epochs), log_model=False, am_pairs=0, n_local=0,
                                 **{**FAST, "epochs": epochs, "min_steps_per_epoch": 10})
        finally:
            h.remove()
        calls.append(counter)
        assert expl.details["predictor_forward_calls"] == math.ceil(len(ds) / model.default_batch_size)
    assert calls[0] == calls[1]
    assert calls[0]["module"] == calls[0]["fwa"] <= 2 + math.ceil(len(ds) / 256)  # layer probes + the cache pass


def test_am_pi_properties(digits_run):
    """O-F6: live attributes rise; the range penalty lowers the out-of-range share; clamping keeps it at 0."""
    from governance_plugins.interpreter import visualise as V
    from governance_plugins.interpreter.storage import load_interpreter

    interp = load_interpreter(digits_run["ctx"].workdir / "model")
    model, ds = digits_run["model"], digits_run["ds"]
    x0 = ds.X[:6]
    with torch.no_grad():
        phi0 = V.attribute_values(model, interp, 0.3 * torch.from_numpy(x0)).numpy()
    live = [(i, int(np.argmax(phi0[i]))) for i in range(len(x0)) if phi0[i].max() > 0][:3]
    assert live
    xs, js = x0[[i for i, _ in live]], [j for _, j in live]
    quick = dict(rounds=3, steps=15)
    with_b = V.activation_maximisation(model, interp, xs, js, V.AMSettings.for_range(0, 1, clamp=False, **quick))
    assert (with_b["phi_after"] > with_b["phi_before"]).all()
    no_b = V.activation_maximisation(model, interp, xs, js,
                                     V.AMSettings.for_range(0, 1, clamp=False, lambda_B=0.0, **quick))
    assert with_b["outside_fraction"].mean() < no_b["outside_fraction"].mean()
    clamped = V.activation_maximisation(model, interp, xs, js, V.AMSettings.for_range(0, 1, clamp=True, **quick))
    assert clamped["images"].min() >= 0 and clamped["images"].max() <= 1
    assert float(V.out_of_range(torch.from_numpy(clamped["images"]), 0, 1).max()) == 0


def test_report_section_renders(digits_run):
    from governance.report.sections import render_method_section

    d = digits_run["expl"].to_dict()
    html = render_method_section(FlintMethod, d, {k: f"{k}.png" for k in d["figures"]})
    assert "What this method does" in html and "Fidelity" in html and "Limitations" in html
    assert "<code>3</code>, <code>5</code>" in html and "&lt;" not in html
    for name in ("global_relevance", "local", "mas", "am", "training"):
        assert f'src="{name}.png"' in html
    assert "n/a" not in html.split("Key numbers")[1].split("</table>")[0]


def test_onnx_model_with_torch_view(digits, tmp_path):
    net, ds = digits
    model = as_onnx_loaded(net, (1, 8, 8), tmp_path)
    assert model.runtime == "onnxruntime" and FlintMethod.can_explain(model=model, data=ds) is None
    weights = {k: v.tobytes() for k, v in model.parameters().items()}
    expl, _ = run_method(model, ds.subset(200), tmp_path, log_model=False, am_pairs=1, am_rounds=1, am_steps=5,
                         **{**FAST, "epochs": 2})
    assert expl.ok and expl.details["layers"] == ["/3/MaxPool", "/5/Relu"]  # ONNX node names
    assert {k: v.tobytes() for k, v in model.parameters().items()} == weights
    assert expl.metrics["fidelity"] > 0.5


def test_pt2_graph_model(digits, tmp_path):
    """MLflow's default pytorch format loads as a torch.export graph: taps come from the fx interpreter."""
    from governance.host.runtimes.torch_model import TorchModel

    net, ds = digits
    graph = torch.export.export(net, (torch.from_numpy(ds.X[:4]),),
                                dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    model = TorchModel.from_module(graph, (1, 8, 8))
    expl, _ = run_method(model, ds.subset(200), tmp_path, log_model=False, am_pairs=1, am_rounds=1, am_steps=3,
                         **{**FAST, "epochs": 1})
    assert expl.ok and expl.details["layers"] == ["3", "5"] and "am" in expl.figures


def test_onnx_model_without_torch_view_is_skipped_with_reason(tmp_path):
    from governance.host.runtimes.onnx_model import OnnxModel
    from governance.testing.models import export_onnx

    class CumNet(nn.Module):  # CumSum: no torch view op
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.cumsum(self.a(x), dim=1))

    model = OnnxModel.from_path(export_onnx(CumNet().eval(), (4,), tmp_path / "m.onnx"))
    data = Dataset(X=np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    why = FlintMethod.can_explain(model=model, data=data)
    assert why and "torch view" in why and "CumSum" in why


def test_unknown_layer_lists_available_layers(digits, tmp_path):
    net, ds = digits
    with pytest.raises(MethodError) as err:
        run_method(as_loaded(net, (1, 8, 8)), ds, tmp_path, layers=["5", "not_a_layer"], **FAST)
    assert "not_a_layer" in str(err.value) and "available layers" in str(err.value.hint)
    assert "3" in err.value.hint.split(":")[1]


def test_bad_inputs(digits, tmp_path):
    net, ds = digits
    model = as_loaded(net, (1, 8, 8))
    with pytest.raises(MethodError, match="at least 20"):
        run_method(model, ds.subset(10), tmp_path)
    with pytest.raises(MethodError, match="max_cache_mb"):
        run_method(model, ds, tmp_path, max_cache_mb=0.01)
    with pytest.raises(ConfigError):
        FlintMethod.parse_config({"taus": [0.5]})
    with pytest.raises(ConfigError):
        FlintMethod.parse_config({"epochz": 3})


def test_default_layers_for_an_mlp_and_output_conversion():
    from governance.testing.models import tabular_mlp

    torch.manual_seed(0)
    model = as_loaded(tabular_mlp(), (30,))
    layers, why = choose_default_layers(model, np.zeros((4, 30), np.float32), image=False)
    assert layers == ["1", "3"] and "hidden layers" in why
    probs = torch.softmax(torch.randn(5, 3), 1)
    logits, how = as_class_logits(probs)
    assert "probabilities" in how and torch.allclose(torch.softmax(logits, 1), probs, atol=1e-6)
    two, how = as_class_logits(torch.tensor([[0.3], [-2.0]]))
    assert two.shape == (2, 2) and how.startswith("binary logit")


# ------------------------------------------------------------------------------------------- MLflow
def test_interpreter_logged_to_active_mlflow_run_and_reloadable(digits, tmp_path, tracking_uri):
    import mlflow

    net, ds = digits
    model = as_loaded(net, (1, 8, 8))
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        expl, ctx = run_method(model, ds.subset(200), tmp_path, am_pairs=0, register_as="digits-interpreter",
                               **{**FAST, "epochs": 1})
    info = expl.details["mlflow_model"]
    assert info["logged"] and info["registered_model_version"] is not None
    loaded = mlflow.pytorch.load_model(f"models:/digits-interpreter/{info['registered_model_version']}")
    from governance_plugins.interpreter import load_interpreter
    from governance_plugins.interpreter.nets import flatten_activations

    interp = load_interpreter(ctx.workdir / "model")
    x = torch.from_numpy(ds.X[:7])
    _, acts = model.forward_with_activations(x, interp.spec.layers)
    flat = flatten_activations([acts[l] for l in interp.spec.layers])
    with torch.no_grad():
        np.testing.assert_allclose(loaded(flat).numpy(), interp([acts[l] for l in interp.spec.layers])[0].numpy(),
                                   rtol=1e-5, atol=1e-5)
    tags = mlflow.MlflowClient().get_model_version("digits-interpreter", info["registered_model_version"]).tags
    assert tags["governance.interprets"] == model.info.uri


# ------------------------------------------------------------------------------------------- by design
def test_train_interpretable_cli_registers_both_models(tmp_path, tracking_uri):
    import mlflow
    from click.testing import CliRunner

    from governance.cli import cli
    from governance.testing.models import breast_cancer_dataset

    ds = breast_cancer_dataset()
    np.savez(tmp_path / "bc.npz", X=ds.X, y=ds.y, class_names=np.array(ds.class_names))
    uri = tracking_uri
    result = CliRunner().invoke(cli, ["train-interpretable", "--data", str(tmp_path / "bc.npz"), "--name", "bc",
                                      "--epochs", "3", "--lr", "3e-3", "--batch-size", "32",
                                      "--min-steps-per-epoch", "0", "--tracking-uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "models:/bc/1" in result.output and "models:/bc-interpreter/1" in result.output
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    assert client.get_model_version("bc-interpreter", "1").tags["governance.interprets"] == "models:/bc/1"
    assert client.get_model_version("bc", "1").tags["governance.interpreter"] == "models:/bc-interpreter/1"
    predictor = mlflow.pytorch.load_model("models:/bc/1")
    interp_model = mlflow.pytorch.load_model("models:/bc-interpreter/1")
    x = torch.from_numpy(ds.X[:50])
    with torch.no_grad():
        f_pred, g_pred = predictor(x).argmax(1), interp_model(x).argmax(1)
    assert (f_pred == torch.from_numpy(ds.y[:50])).float().mean() > 0.85
    assert (f_pred == g_pred).float().mean() > 0.8
    run_id = client.get_model_version("bc", "1").run_id
    files = {Path(a.path).name for a in client.list_artifacts(run_id, "interpreter_files")}
    assert files == {"interpreter.json", "interpreter.pt"}


def test_train_interpretable_cli_rejects_bad_data(tmp_path):
    from click.testing import CliRunner

    from governance.cli import cli

    np.savez(tmp_path / "bad.npz", inputs=np.zeros((30, 4)))
    result = CliRunner().invoke(cli, ["train-interpretable", "--data", str(tmp_path / "bad.npz"), "--name", "x"])
    assert isinstance(result.exception, DataError) and "'X' and 'y'" in str(result.exception)


def test_train_interpretable_python_api_images():
    from governance.testing.models import digits_dataset
    from governance_plugins.interpreter import train_interpretable
    from governance_plugins.interpreter.by_design import build_predictor

    ds = digits_dataset().subset(400, np.random.default_rng(0))
    torch.manual_seed(0)
    f, layers = build_predictor(ds.sample_shape, 10)
    f, interp, metrics = train_interpretable(f, ds, epochs=3, lr=3e-3, batch_size=32, min_steps_per_epoch=0,
                                             schedule=LossSchedule())
    assert layers == ["relu2"]  # the reference's tap when the caller names it; the default reads two stages:
    assert metrics["layers"] == ["conv2", "relu2"]
    assert len(metrics["history"]) == 3 and not f.training and not interp.training
    assert metrics["accuracy_predictor"] > 0.6
    for k in ("fidelity", "accuracy_interpreter", "cns_g_tau_2", "reconstruction_error"):
        assert math.isfinite(metrics[k])
    with pytest.raises(DataError, match="labels"):
        train_interpretable(f, Dataset(X=ds.X, modality="image"))
