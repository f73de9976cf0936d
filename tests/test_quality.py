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


# ------------------------------------------------------------------------------- uneven step counts
def test_step_counts_when_units_do_not_divide_evenly():
    """30 features in 20 steps: floor(1.5 k) units, exactly (rounding the float shares gave 5, 11, 29 at k = 3, 7,
    19, depending on the last bit of k/20)."""
    want = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 28, 30]
    assert quality.step_counts(30, 20).tolist() == want
    assert quality.step_counts(64, 16).tolist() == list(range(0, 65, 4))
    assert quality.step_counts(5, 8).tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 5]


def test_deletion_auc_with_uneven_steps_matches_a_hand_computation(rng):
    d = 30
    w = np.linspace(-1.0, 2.0, d)
    X = rng.normal(size=(2, d))
    fn = lambda x: np.stack([np.zeros(len(x)), x.reshape(len(x), -1) @ w], 1)  # noqa: E731
    A = w * X
    res = quality.deletion_insertion(fn, X, A, np.zeros(d), 1, steps=20)
    counts = [k * d // 20 for k in range(21)]
    for i in range(2):
        order = np.argsort(-A[i], kind="stable")
        curve = [sigmoid(w @ np.where(np.isin(np.arange(d), order[:c]), 0.0, X[i])) for c in counts]
        np.testing.assert_allclose(res.deletion[i], curve, atol=1e-12)
        x = np.asarray(counts) / d
        assert res.deletion_auc[i] == pytest.approx(np.trapezoid(curve, x), abs=1e-12)
    np.testing.assert_allclose(res.fractions, np.asarray(counts) / d)


# ---------------------------------------------------------------------- common random numbers
def test_max_sensitivity_of_a_stochastic_explainer_needs_common_random_numbers(rng):
    """A noisy explainer Φ(x) = x + noise(seed): explaining each perturbed copy with its input's own seed
    (perturbed_sources) measures the input's effect (~ radius); fresh seeds measure the noise."""
    X = rng.normal(size=(3, D)) + 3.0
    t = np.zeros(3, dtype=int)
    seeds = np.array([11, 12, 13])

    def noisy(x, seeds_of_rows):
        return x + np.stack([np.random.default_rng(s).normal(size=x.shape[1:]) for s in seeds_of_rows])

    base = noisy(X, seeds)
    src = quality.perturbed_sources(3, 4)
    assert src.tolist() == [0, 1, 2] * 4
    crn = quality.max_sensitivity(lambda x, _t: noisy(x, seeds[src]), X, t, radius=1e-6, n_samples=4,
                                  rng=np.random.default_rng(0), attributions=base)
    fresh = quality.max_sensitivity(lambda x, _t: noisy(x, 100 + np.arange(len(x))), X, t, radius=1e-6,
                                    n_samples=4, rng=np.random.default_rng(0), attributions=base)
    assert np.all(crn < 1e-5)
    assert np.all(fresh > 0.1)


# ------------------------------------------------------------------------------- randomised copies
def test_randomised_models_full_and_cascading(rng):
    module = _mlp()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    full = list(quality.randomised_models(module, mode="full", draws=2, seed=5))
    assert [r.mode for r in full] == ["full", "full"] and full[0].layers == ["2", "0"]
    w = [dict(r.module.named_parameters())["0.weight"] for r in full]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[0], module[0].weight)
    torch.testing.assert_close(w[0].flatten().sort().values, module[0].weight.flatten().sort().values)  # a permutation
    cascade = list(quality.randomised_models(module, mode="cascading", seed=5))
    assert [r.layers for r in cascade] == [["2"], ["2", "0"]]
    top_only = cascade[0].module  # kept while the cascade went on: still only the top layer randomised
    assert torch.equal(top_only[0].weight, module[0].weight) and not torch.equal(top_only[2].weight, module[2].weight)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


def test_cascading_checkpoints_are_capped_and_keep_both_ends():
    deep = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(9)])
    steps = list(quality.randomised_models(deep, mode="cascading", max_steps=4))
    assert [len(r.layers) for r in steps] == [1, 4, 6, 9]
    assert steps[0].layers == ["8"] and steps[-1].label.startswith("all layers")


# -------------------------------------------------------------------------------------- controls
def _game(deletion_auc, insertion_auc, span=1.0):
    """A DeletionInsertion with given AUCs: two-point curves with these means, apart by ``span`` at one end."""
    fr = np.array([0.0, 1.0])
    dele = np.array([[deletion_auc + span / 2, deletion_auc - span / 2]])
    ins = np.array([[insertion_auc - span / 2, insertion_auc + span / 2]])
    return quality.DeletionInsertion(fr, dele, ins, np.array([deletion_auc]), np.array([insertion_auc]))


def test_control_margin_rule_and_verdicts():
    figure = _game(0.10, 0.90, span=0.6)
    random = [_game(0.40, 0.45, 0.6), _game(0.42, 0.47, 0.6), _game(0.44, 0.49, 0.6)]
    randomised = [quality.RandomisedGame("full", "all layers randomised (seed 0)", _game(0.12, 0.60, 0.6)),
                  quality.RandomisedGame("cascading", "top layer", _game(0.30, 0.85, 0.6))]
    cs = {(c.metric, c.key): c for c in quality.deletion_insertion_controls(
        figure, random=random, randomised=randomised, prefix="ig_", method_label="IG")}
    r = cs[("ig_deletion_auc", "random")]
    assert r.control_value == pytest.approx(0.42) and r.control_spread == pytest.approx(0.02) and r.draws == 3
    # span: every curve point lies in [0.1 - 0.3, 0.9 + 0.3] on the only input -> 1.4; 5 % of it = 0.07 > 2 sd
    assert r.margin == pytest.approx(0.07) and r.verdict == "informative" and r.label == "IG deletion AUC"
    full = cs[("ig_deletion_auc", "randomised_model")]  # one copy: the noise allowance is the random draws'
    assert full.control_value == pytest.approx(0.12) and full.advantage == pytest.approx(0.02)
    assert full.verdict == "not informative" and "random draws" in full.margin_rule
    cas = cs[("ig_insertion_auc", "cascading")]
    assert cas.better == "higher" and cas.control_value == pytest.approx(0.85) and cas.verdict == "not informative"
    assert cs[("ig_insertion_auc", "random")].verdict == "informative"
    assert quality.figure_verdicts(list(cs.values())) == {"ig_deletion_auc": "not informative",
                                                          "ig_insertion_auc": "not informative"}


def test_a_flat_model_is_never_informative_a_steep_one_is(rng):
    """The same perfect attribution (w ⊙ x) against random maps: on a model whose probability moves by less than
    the 0.02 floor it cannot be informative; on a steep one it is."""
    X = rng.normal(size=(16, D))
    for gain, want in ((0.005, "not informative"), (1.0, "informative")):
        fn = lambda x, g=gain: np.stack([np.zeros(len(x)), g * (x.reshape(len(x), -1) @ W)], 1)  # noqa: E731
        game = lambda a, fn=fn: quality.deletion_insertion(fn, X, a, np.zeros(D), 1, steps=D)  # noqa: E731
        figure = game(W * X)
        random = [game(a) for a in quality.random_maps(X.shape, 5, np.random.default_rng(1))]
        cs = quality.deletion_insertion_controls(figure, random=random)
        assert quality.output_span([figure, *random]) < 0.02 if gain < 1 else True
        assert {c.verdict for c in cs} == {want}, [c.to_dict() for c in cs]


def test_record_controls_goes_through_add_control():
    from governance import Explanation

    e = Explanation(method="m", metrics={"deletion_auc": 0.1, "insertion_auc": 0.9})
    cs = quality.deletion_insertion_controls(_game(0.1, 0.9), random=[_game(0.4, 0.5), _game(0.45, 0.5)])
    got = quality.record_controls(e, cs)
    assert e.controls == got and len(got) == 2 and e.verdicts() == {"deletion_auc": "informative",
                                                                    "insertion_auc": "informative"}
    with pytest.raises(KeyError, match="not one of this explanation's metrics"):
        quality.record_controls(Explanation(method="m"), cs)


def test_the_controls_example_in_docs_hooks_md_runs():
    """docs/hooks.md's Controls example is real code: run it."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "hooks.md").read_text()
    section = text[text.index("## Controls"):]
    block = section[section.index("```python") + len("```python"):]
    block = block[:block.index("```")]
    scope: dict = {}
    exec(compile(block, "docs/hooks.md", "exec"), scope)
    e = scope["explanation"]
    assert e.verdicts() == {"deletion_auc": "informative", "insertion_auc": "informative"}


def test_flat_parameter_lists_group_weights_with_their_biases():
    """An ONNX graph's torch view holds p0, p1, ...: a cascade step must take a weight with its bias (a bias alone
    leaves every input gradient unchanged, so the step would reproduce the trained model's map)."""

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.p0, self.p1 = torch.nn.Parameter(torch.randn(5, D)), torch.nn.Parameter(torch.randn(5))
            self.p2, self.p3 = torch.nn.Parameter(torch.randn(2, 5)), torch.nn.Parameter(torch.randn(2))

        def forward(self, x):
            return torch.relu(x @ self.p0.T + self.p1) @ self.p2.T + self.p3

    steps = list(quality.randomised_models(Flat(), mode="cascading"))
    assert [r.layers for r in steps] == [["p2+p3"], ["p2+p3", "p0+p1"]]
    X = np.random.default_rng(0).normal(size=(4, D)).astype(np.float32)
    grads = [_gradients(m, X, np.ones(4, dtype=int)) for m in (Flat(), steps[0].module)]
    assert not np.allclose(grads[0], grads[1])  # the top step changed the input gradients
