"""governance.quality.attribution: the shared explanation-quality metrics, checked on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from governance import quality

D = 12
W = np.linspace(-1.5, 2.0, D)


def linear_logits(X: np.ndarray) -> np.ndarray:
    """Two-class logits (0, w·x): the probability of class 1 is sigmoid(w·x)."""
    z = np.asarray(X, dtype=np.float64).reshape(len(X), -1) @ W
    return np.stack([np.zeros_like(z), z], axis=1)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------------------------------- helpers
def test_spearman_rows_matches_scipy(rng):
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    b[2] = a[2] * 3 + 1
    got = quality.spearman_rows(a, b)
    want = [spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[2] == pytest.approx(1.0)
    assert np.isnan(quality.spearman_rows(np.ones((1, 4)), rng.normal(size=(1, 4))))[0]


@pytest.mark.parametrize("kind", ["logits", "probabilities", "binary"])
def test_target_probabilities(kind, rng):
    logits = rng.normal(size=(6, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = rng.integers(0, 4, size=6)
    if kind == "logits":
        got = quality.target_probabilities(logits, t)
    elif kind == "probabilities":
        assert quality.outputs_are_probabilities(p)
        got = quality.target_probabilities(p, t)
    else:
        z = logits[:, :1]
        t = t % 2
        np.testing.assert_allclose(quality.target_probabilities(z, t), np.where(t == 1, sigmoid(z[:, 0]), 1 - sigmoid(z[:, 0])))
        return
    np.testing.assert_allclose(got, p[np.arange(6), t], atol=1e-12)


# ------------------------------------------------------------------------------- deletion/insertion
def test_deletion_curve_matches_closed_form_on_linear_model(rng):
    """One feature per step: after k deletions the logit is w·x with the top-k features set to the baseline."""
    X = rng.normal(size=(3, D))
    base = np.zeros(D)
    A = W * X  # exact contribution of each feature to the logit
    res = quality.deletion_insertion(linear_logits, X, A, base, 1, steps=D)
    assert res.deletion.shape == (3, D + 1)
    for i in range(3):
        order = np.argsort(-A[i], kind="stable")
        x = X[i].copy()
        want_del = [sigmoid(W @ x)]
        for j in order:
            x[j] = 0.0
            want_del.append(sigmoid(W @ x))
        np.testing.assert_allclose(res.deletion[i], want_del, atol=1e-12)
        xi = np.zeros(D)
        want_ins = [sigmoid(0.0)]
        for j in order:
            xi[j] = X[i, j]
            want_ins.append(sigmoid(W @ xi))
        np.testing.assert_allclose(res.insertion[i], want_ins, atol=1e-12)
    fr = np.linspace(0, 1, D + 1)
    np.testing.assert_allclose(res.deletion_auc, np.trapezoid(res.deletion, fr, axis=1), atol=1e-12)
    assert res.mean_difference_auc == pytest.approx(np.mean(res.insertion_auc - res.deletion_auc))


def test_perfect_attribution_beats_random_on_linear_model(rng):
    X = rng.normal(size=(20, D))
    perfect = W * X
    random_attr = rng.normal(size=X.shape)
    good = quality.deletion_insertion(linear_logits, X, perfect, np.zeros(D), 1, steps=D)
    bad = quality.deletion_insertion(linear_logits, X, random_attr, np.zeros(D), 1, steps=D)
    assert good.mean_deletion_auc < bad.mean_deletion_auc - 0.05
    assert good.mean_insertion_auc > bad.mean_insertion_auc + 0.05


def test_deletion_removes_whole_pixels_and_batches_calls(rng):
    """With channel_axis the attribution is summed over channels and a pixel leaves every channel at once;
    all steps of all inputs reach the model in one call here."""
    X = rng.uniform(0.1, 1.0, size=(2, 3, 4, 4)).astype(np.float32)
    A = np.zeros_like(X)
    A[:, 0, 1, 2] = 5.0  # pixel (1, 2) ranks first on channel sum
    calls = []

    def model_fn(batch):
        calls.append(batch.copy())
        return np.stack([np.zeros(len(batch)), batch.reshape(len(batch), -1).sum(1)], 1)

    quality.deletion_insertion(model_fn, X, A, 0.0, 1, steps=16, channel_axis=0)
    assert len(calls) == 1
    batch = calls[0].reshape(2, 2, 17, 3, 4, 4)  # (input, deletion|insertion, step, C, H, W)
    step1 = batch[0, 0, 1]
    assert np.all(step1[:, 1, 2] == 0) and np.count_nonzero(step1 == 0) == 3  # one pixel, all channels
    assert np.all(batch[0, 1, 0] == 0) and np.all(batch[0, 0, 16] == 0) and np.all(batch[0, 1, 16] == X[0])


def test_deletion_rejects_mismatched_shapes(rng):
    with pytest.raises(ValueError, match="shape"):
        quality.deletion_insertion(linear_logits, rng.normal(size=(2, D)), np.zeros((2, D + 1)), 0.0, 1)


# --------------------------------------------------------------------------------- max-sensitivity
def test_max_sensitivity_closed_forms(rng):
    X = rng.normal(size=(4, D)) + 3.0
    t = np.zeros(4, dtype=int)
    const = quality.max_sensitivity(lambda x, _t: np.tile(W, (len(x), 1)), X, t, radius=0.1, n_samples=5,
                                    rng=np.random.default_rng(1))
    np.testing.assert_array_equal(const, 0.0)
    ident = quality.max_sensitivity(lambda x, _t: x, X, t, radius=0.1, n_samples=5, rng=np.random.default_rng(1))
    delta = np.random.default_rng(1).uniform(-0.1, 0.1, size=(5, *X.shape))
    want = (np.linalg.norm(delta, axis=2) / np.linalg.norm(X, axis=1)).max(0)
    np.testing.assert_allclose(ident, want, rtol=1e-12)
    scaled = quality.max_sensitivity(lambda x, _t: x, X, t, radius=0.1, n_samples=5, rng=np.random.default_rng(1),
                                     scale=2.0)
    np.testing.assert_allclose(scaled, 2 * want, rtol=1e-12)


# -------------------------------------------------------------------------------- randomisation check
def _mlp():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _gradients(module, X, targets):
    x = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    out = module(x)
    out.gather(1, torch.as_tensor(targets).view(-1, 1)).sum().backward()
    return x.grad.numpy()


def test_randomisation_low_for_gradients_high_for_weight_free_attribution(rng):
    module = _mlp()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    X = rng.normal(size=(6, D)).astype(np.float32)
    t = np.ones(6, dtype=int)
    grads = quality.randomisation_sanity_check(module, _gradients, X, t, seed=3)
    free = quality.randomisation_sanity_check(module, lambda _m, x, _t: x * 2.0, X, t, seed=3)
    assert free.mean_spearman == pytest.approx(1.0)
    assert abs(grads.mean_spearman) < 0.5
    for k, v in module.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k])


def test_randomisation_cascading_reports_each_layer(rng):
    X = rng.normal(size=(4, D)).astype(np.float32)
    res = quality.randomisation_sanity_check(_mlp(), _gradients, X, np.ones(4, dtype=int), mode="cascading")
    assert [row["layer"] for row in res.layers] == ["2", "0"]  # output layer first
    assert all(np.isfinite(row["spearman"]) for row in res.layers)


# ------------------------------------------------------------------------------------ seed stability
def test_seed_stability(rng):
    X = rng.normal(size=(5, 40))
    t = np.zeros(5, dtype=int)
    det = quality.seed_stability(lambda x, _t, s: x * 3, X, t, [0, 1, 2])
    assert det.mean_spearman == pytest.approx(1.0) and det.mean_pearson == pytest.approx(1.0)
    noise = quality.seed_stability(lambda x, _t, s: np.random.default_rng(s).normal(size=x.shape), X, t, [0, 1, 2, 3])
    assert abs(noise.mean_spearman) < 0.2
    half = quality.seed_stability(lambda x, _t, s: x + 0.5 * np.random.default_rng(s).normal(size=x.shape), X, t, [0, 1, 2])
    assert 0.5 < half.mean_pearson < 0.95
    with pytest.raises(ValueError):
        quality.seed_stability(lambda x, _t, s: x, X, t, [0])
