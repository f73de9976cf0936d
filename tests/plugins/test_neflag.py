"""NeFLAG: the spec's analytic oracles (methods-specxai-neflag.md §A5, N1-N9, and properties P1-P7) on the
math module, then the plugin on real models (torch and ONNX), bad inputs and the report section."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import integrate, special

from governance_plugins.neflag import flux
from governance_plugins.neflag.flux import FluxSettings, neflag

F64 = torch.float64
W = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0], dtype=F64)  # spec N1
BIG = 1 << 22  # max_batch large enough that every oracle runs in one chunk


def linear(points: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
    return points.reshape(len(points), -1) @ W + 0.3


def sin_y1_y2sq(points: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:  # spec N6/N8
    return torch.sin(points[:, 0]) * points[:, 1] ** 2


def run(fn, x, *, seeds=(0,), record=False, scale=None, **kw) -> flux.FluxResult:
    x = torch.as_tensor(x, dtype=F64).reshape(len(seeds), -1)
    s = FluxSettings(**{"max_batch": BIG, **kw})
    return neflag(fn, x, torch.zeros(len(x), dtype=torch.long), s, list(seeds), scale=scale, record=record)


def antithetic_pair_terms(res: flux.FluxResult, N: int, d: int) -> torch.Tensor:
    """Per-pair terms of the S1/S2 form-A estimator (its mean is the estimate) for one input."""
    phi, nu = res.records["phi"].view(2, N), res.records["normal"].view(2, N, d)
    return d * (phi.clamp(max=0)[..., None] * nu).sum(0)


def four_se(terms: torch.Tensor) -> torch.Tensor:
    return 4 * terms.std(dim=0) / math.sqrt(len(terms))


def c_d(d: int) -> float:
    return math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))


# ------------------------------------------------------------------------------------------- N1-N3
def test_n1_linear_form_a_uniform_antithetic():
    N = 200_000
    res = run(linear, torch.zeros(5), form="A", sampler="uniform_antithetic", n_directions=N, record=True)
    terms = antithetic_pair_terms(res, N, 5)
    torch.testing.assert_close(terms.mean(0), res.attribution[0], rtol=0, atol=1e-12)
    assert torch.all((res.attribution[0] - W).abs() <= four_se(terms))


@pytest.mark.parametrize("seed", [0, 1, 17, 123])
@pytest.mark.parametrize("eps", [1e-3, 0.1, 10.0])
def test_n2_linear_form_a_orthogonal_is_exact(seed, eps):
    res = run(linear, torch.randn(5, dtype=F64), seeds=(seed,), form="A", sampler="orthogonal_antithetic",
              n_directions=5, epsilon=eps)
    torch.testing.assert_close(res.attribution[0], W, rtol=0, atol=1e-12)


def test_n3_linear_form_b_and_completeness():
    N, eps = 200_000, 0.1
    x = torch.zeros(5, dtype=F64)
    res = run(linear, x, form="B", sampler="uniform_antithetic", n_directions=N, epsilon=eps, record=True)
    want = eps * c_d(5) * W**2 / W.norm()
    torch.testing.assert_close(want, torch.tensor([0.009934, 0.039736, 0, 0.002483, 0.089406], dtype=F64),
                               rtol=0, atol=1e-6)
    r = res.records
    neg = r["negative"]
    terms = -W * r["displacement"][neg]  # ∇f(s) ⊙ (x − s) at the negative-flux points
    assert torch.all((res.attribution[0] - want).abs() <= four_se(terms))
    assert res.attribution[0, 2] == 0.0  # dummy feature: exactly zero
    drop = (linear(x[None], None) - r["score"][neg]).mean()  # mean f(x) − f(s) over S⁻
    assert abs(float(res.attribution.sum() - drop)) < 1e-12
    assert float(drop) == pytest.approx(eps * c_d(5) * float(W.norm()), rel=0.01)  # ≈ 0.141559


@pytest.mark.parametrize("form,want", [("A", W), ("B", 0.1 * c_d(5) * W**2 / W.norm())])
def test_rejection_sampler_on_linear_model(form, want):
    """S3 (NeFLAG-n): conditional mean over accepted points. Form A: d·mean(φν) = w for a uniform field."""
    n = 40_000
    res = run(linear, torch.zeros(5), form=form, sampler="rejection", n_points=n, record=True)
    r = res.records
    acc = r["negative"]
    terms = 5 * r["phi"][acc, None] * r["normal"][acc] if form == "A" else -W * r["displacement"][acc]
    assert int(res.n_negative[0]) == n
    assert torch.all((res.attribution[0] - want).abs() <= four_se(terms))
    # a uniform field: every try has exactly one negative point of its pair, half of them the first draw, so
    # the antipode is probed for the other half: 1.5 evaluations per accepted point (spec A2.7)
    first_neg = round(res.first_draw_acceptance * n)
    assert res.first_draw_acceptance == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(n))
    assert int(res.n_evaluations[0]) == n + (n - first_neg)
    paired = run(linear, torch.zeros(5), form=form, sampler="rejection", n_points=n, antipodes="paired")
    assert int(paired.n_evaluations[0]) == 2 * n
    torch.testing.assert_close(paired.attribution, res.attribution, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", ["A", "B"])
def test_lazy_and_paired_antipodes_make_the_same_decisions(form):
    """A convex field with curvature: both points of a pair often have positive flux, so tries are repeated;
    probing antipodes lazily or in pairs must not change any decision."""
    fn = lambda y, _t: y[:, 0] + 4.0 * (y**2).sum(1)  # noqa: E731  q = 8: qε = 0.8 < ‖∇f(0)‖ = 1 at ε = 0.1
    x = torch.zeros(4, 3, dtype=F64)
    kw = dict(form=form, sampler="rejection", n_points=25, epsilon=0.1, seeds=(0, 1, 2, 3))
    lazy, paired = run(fn, x, **kw), run(fn, x, antipodes="paired", **kw)
    torch.testing.assert_close(lazy.attribution, paired.attribution, rtol=0, atol=1e-13)
    assert torch.equal(lazy.n_negative, paired.n_negative)
    assert torch.all(lazy.n_evaluations < paired.n_evaluations)
    assert torch.all(paired.n_evaluations > 2 * 25)  # some tries had no negative point
    assert lazy.first_draw_acceptance == paired.first_draw_acceptance


def test_descent_sampler_converges_to_steepest_descent_point():
    """S4: the points collapse to u = −ŵ, so form B gives ε·w²/‖w‖ (spec: biased w.r.t. the integral)."""
    res = run(linear, torch.zeros(5), form="B", sampler="descent", n_points=4, m=60)
    torch.testing.assert_close(res.attribution[0], 0.1 * W**2 / W.norm(), rtol=0, atol=1e-6)
    assert int(res.n_evaluations[0]) == 4 * 61


# ---------------------------------------------------------------------------------------- N4 / P7
def p7_quadrature(d: int, g: float, qe: float) -> float:
    """‖A_A‖ for f = bᵀy + (q/2)‖y‖² (P7), integrated in θ (t = cos θ) so d = 2 has no endpoint singularity."""
    c = min(1.0, max(-1.0, -qe / g))
    theta0 = math.acos(c)
    val, _ = integrate.quad(lambda th: (g * math.cos(th) + qe) * math.cos(th) * math.sin(th) ** (d - 2),
                            theta0, math.pi, epsabs=1e-13, epsrel=1e-12)
    return 2 * d * val / special.beta(0.5, (d - 1) / 2)


def p7_closed_form(d: int, g: float, qe: float) -> float:
    c = min(1.0, max(-1.0, -qe / g))
    if d == 3:
        return g * (c**3 + 1) + 1.5 * qe * (c**2 - 1)
    th = math.acos(c)
    return (2 / math.pi) * (g * (math.pi - th - 0.5 * math.sin(2 * th)) - 2 * qe * math.sin(th))


P7_TABLE = {  # spec A2.4, ‖g‖ = 1
    0.5: {2: 0.3910, 3: 0.3125, 10: 0.0819},
    -0.5: {2: 1.6090, 3: 1.6875, 10: 1.9181},
    0.0: {2: 1.0, 3: 1.0, 10: 1.0},
    -1.5: {2: 2.0, 3: 2.0, 10: 2.0},
    1.5: {2: 0.0, 3: 0.0, 10: 0.0},
}


@pytest.mark.parametrize("qe", list(P7_TABLE))
@pytest.mark.parametrize("d", [2, 3, 10])
def test_p7_isotropic_quadratic_table(d, qe):
    exact = p7_quadrature(d, 1.0, qe)
    assert exact == pytest.approx(P7_TABLE[qe][d], abs=6e-5)
    if d in (2, 3):
        assert p7_closed_form(d, 1.0, qe) == pytest.approx(exact, abs=1e-10)
    eps = 0.1
    q = qe / eps
    fn = lambda y, _t: y[:, 0] + 0.5 * q * (y**2).sum(1)  # noqa: E731  ∇f(0) = e₁
    N = 20_000
    res = run(fn, torch.zeros(d), form="A", sampler="uniform_antithetic", n_directions=N, epsilon=eps, record=True)
    terms = antithetic_pair_terms(res, N, d)
    want = torch.zeros(d, dtype=F64)
    want[0] = exact
    assert torch.all((res.attribution[0] - want).abs() <= four_se(terms) + 1e-12)


def test_n4_d3_with_the_specs_sample_size():
    N = 200_000
    res = run(lambda y, _t: y[:, 0] + 2.5 * (y**2).sum(1), torch.zeros(3), form="A",
              sampler="uniform_antithetic", n_directions=N, record=True)
    terms = antithetic_pair_terms(res, N, 3)
    assert torch.all((res.attribution[0] - torch.tensor([0.3125, 0, 0], dtype=F64)).abs() <= four_se(terms))


# ------------------------------------------------------------------------------------------- N5-N9
@pytest.mark.parametrize("seed", range(5))
def test_n5_negative_plus_positive_is_twice_the_gradient_for_any_quadratic(seed):
    g = torch.Generator().manual_seed(seed)
    d, eps = 6, 0.7
    M = torch.randn(d, d, generator=g, dtype=F64)
    H = M + M.T
    b = torch.randn(d, generator=g, dtype=F64)
    x = torch.randn(d, generator=g, dtype=F64)
    fn = lambda y, _t: y @ b + 0.5 * ((y @ H) * y).sum(1)  # noqa: E731
    res = run(fn, x, seeds=(seed,), form="A", sampler="orthogonal_antithetic", n_directions=d, epsilon=eps)
    torch.testing.assert_close(res.attribution[0] + res.positive[0], 2 * (b + H @ x), rtol=0, atol=1e-12)


X6 = torch.tensor([0.3, 0.8, -1.0], dtype=F64)


@pytest.mark.parametrize("sampler", ["uniform_antithetic", "orthogonal_antithetic", "rejection", "descent"])
def test_n6_dummy_feature_form_b_is_exactly_zero(sampler):
    res = run(sin_y1_y2sq, X6, form="B", sampler=sampler, epsilon=0.5, n_points=50, n_directions=50)
    assert res.attribution[0, 2] == 0.0
    assert res.attribution[0, :2].abs().sum() > 0


def test_n6_dummy_feature_form_a_within_4se():
    N = 200_000
    res = run(sin_y1_y2sq, X6, form="A", sampler="uniform_antithetic", n_directions=N, epsilon=0.5, record=True)
    terms = antithetic_pair_terms(res, N, 3)
    assert abs(float(res.attribution[0, 2])) <= float(four_se(terms)[2])


@pytest.mark.parametrize("sampler", ["uniform_antithetic", "orthogonal_antithetic", "rejection", "descent"])
@pytest.mark.parametrize("form", ["A", "B"])
def test_n7_constant_model_gives_zeros_not_nan(form, sampler):
    for fn in (lambda y, _t: torch.full((len(y),), 3.0, dtype=F64),  # not even connected to the input
               lambda y, _t: 0.0 * y.sum(1) + 3.0):  # connected, zero gradient
        res = run(fn, X6, form=form, sampler=sampler, n_points=5, n_directions=3)
        assert torch.equal(res.attribution, torch.zeros_like(res.attribution))
        assert int(res.n_negative[0]) == 0
        if sampler == "rejection":
            assert res.first_draw_acceptance == 0.0
            assert int(res.n_evaluations[0]) == 2 * 5 * 10  # n slots × m = 10 tries × the pair


def test_n8_radial_derivative_gradient_and_finite_difference():
    u = torch.tensor([[1.0, 2.0, 2.0]], dtype=F64) / 3
    t = torch.zeros(1, dtype=torch.long)
    exact = 1.062234372802171
    got = flux.radial_derivative(sin_y1_y2sq, X6[None], u, t, 0.5)
    assert float(got) == pytest.approx(exact, rel=1e-13)
    fd = flux.radial_derivative(sin_y1_y2sq, X6[None], u, t, 0.5, derivative="finite_difference", h=1e-5)
    assert float(fd) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("sampler", ["orthogonal_antithetic", "rejection", "uniform_antithetic"])
def test_finite_difference_form_a_matches_gradient_form_a(sampler):
    kw = dict(form="A", sampler=sampler, epsilon=0.5, n_points=30, n_directions=30)
    a = run(sin_y1_y2sq, X6, **kw)
    b = run(sin_y1_y2sq, X6, derivative="finite_difference", **kw)
    torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=1e-8)


@pytest.mark.parametrize("sampler", ["orthogonal_antithetic", "rejection", "descent"])
def test_n9_scaling_and_reparametrisation(sampler):
    kw = dict(sampler=sampler, epsilon=0.5, n_points=10, n_directions=3)
    for form in ("A", "B"):
        base = run(sin_y1_y2sq, X6, form=form, **kw).attribution
        scaled = run(lambda y, t: 2.5 * sin_y1_y2sq(y, t), X6, form=form, **kw).attribution
        torch.testing.assert_close(scaled, 2.5 * base, rtol=1e-10, atol=1e-14)
        alpha = 4.0
        kw2 = {**kw, "epsilon": 0.5 / alpha}
        rep = run(lambda y, t: sin_y1_y2sq(alpha * y, t), X6 / alpha, form=form, **kw2).attribution
        torch.testing.assert_close(rep, (alpha if form == "A" else 1.0) * base, rtol=1e-10, atol=1e-14)


def test_p4_small_epsilon_form_a_tends_to_the_gradient():
    res = run(sin_y1_y2sq, X6, form="A", sampler="orthogonal_antithetic", n_directions=3, epsilon=1e-6)
    grad = torch.tensor([math.cos(0.3) * 0.64, math.sin(0.3) * 1.6, 0.0], dtype=F64)
    torch.testing.assert_close(res.attribution[0], grad, rtol=0, atol=1e-5)


def test_feature_scale_reports_z_units():
    """x = σ ⊙ z: the field in z is σ ⊙ w, and S2 recovers it exactly (spec A6 'units of ε')."""
    sigma = torch.tensor([1.0, 2.0, 0.5, 4.0, 3.0], dtype=F64)
    res = run(linear, torch.randn(5, dtype=F64), form="A", sampler="orthogonal_antithetic", n_directions=5,
              scale=sigma)
    torch.testing.assert_close(res.attribution[0], sigma * W, rtol=0, atol=1e-12)


def test_clipping_recomputes_normals_and_keeps_completeness():
    x = torch.tensor([0.0, 1.0, 0.5, 0.02, 0.98], dtype=F64)
    res = run(linear, x, form="B", sampler="rejection", n_points=200, clip=(0.0, 1.0), record=True)
    r = res.records
    points = x + r["displacement"]
    assert res.n_clipped > 0
    assert torch.all(points >= 0) and torch.all(points <= 1)
    torch.testing.assert_close(r["normal"].norm(dim=1), torch.ones(len(points), dtype=F64))
    neg = r["negative"]
    drop = (linear(x[None], None) - r["score"][neg]).mean()
    assert abs(float(res.attribution.sum() - drop)) < 1e-12


# --------------------------------------------------------------------------------- batching contract
@pytest.mark.parametrize("sampler", ["orthogonal_antithetic", "rejection", "descent"])
def test_attribution_of_an_input_does_not_depend_on_its_batch(sampler):
    x = torch.randn(5, 3, dtype=F64)
    kw = dict(form="B", sampler=sampler, epsilon=0.5, n_points=7, n_directions=3)
    together = run(sin_y1_y2sq, x, seeds=tuple(range(5)), **kw).attribution
    alone = torch.cat([run(sin_y1_y2sq, x[i], seeds=(i,), **kw).attribution for i in range(5)])
    small = run(sin_y1_y2sq, x, seeds=tuple(range(5)), **{**kw, "max_batch": 5}).attribution
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-14)
    torch.testing.assert_close(together, small, rtol=0, atol=1e-14)


@pytest.mark.parametrize("sampler,antipodes", [("rejection", "paired"), ("rejection", "lazy"),
                                               ("uniform_antithetic", "lazy")])
def test_every_sphere_point_of_a_chunk_goes_through_one_forward_backward(sampler, antipodes):
    calls = []

    def fn(y, t):
        calls.append(len(y))
        return linear(y, t)

    res = run(fn, torch.randn(6, 5, dtype=F64), seeds=tuple(range(6)), form="B", sampler=sampler, n_points=20,
              n_directions=8, antipodes=antipodes)
    if sampler == "uniform_antithetic":
        assert calls == [6 * 2 * 8]
    elif antipodes == "paired":
        assert calls == [6 * 2 * 20]  # a linear field: one pass of pairs fills every slot
    else:  # first draws of all slots in one pass, then the antipodes of the rejected ones in a second
        assert len(calls) == 2 and calls[0] == 6 * 20 and calls[1] == 6 * 20 - round(res.first_draw_acceptance * 120)
    assert torch.all(res.n_negative == (20 if sampler == "rejection" else 8))


def test_non_finite_scores_raise():
    with pytest.raises(flux.NonFiniteError, match="NaN"):
        run(lambda y, _t: torch.log(y[:, 0]), torch.tensor([-1.0, 0.0]), form="B", sampler="rejection")


def test_settings_refuse_finite_differences_for_form_b():
    with pytest.raises(ValueError, match="form A"):
        run(linear, torch.zeros(5), form="B", derivative="finite_difference")


# ================================================================================== the plugin
from governance.contract.errors import ConfigError, MethodError  # noqa: E402
from governance.contract.method import MethodContext  # noqa: E402
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec  # noqa: E402
from governance.report.sections import render_method_section  # noqa: E402
from governance.testing import models as tm  # noqa: E402
from governance_plugins.neflag.method import NeflagMethod  # noqa: E402

SMALL = {"n_samples": 4, "quality": {"robustness_inputs": 2, "sensitivity_samples": 2, "stability_seeds": 2,
                                     "steps": 8, "random_draws": 3, "randomised_draws": 1, "cascading_steps": 2}}


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    cnn, ds = tm.trained_digits_cnn(epochs=2)
    return cnn, ds


@pytest.fixture(scope="module")
def cancer():
    mlp, ds = tm.trained_breast_cancer_mlp(epochs=5)
    return mlp, ds


def explain(model, data, tmp_path, raw=None, seed=0):
    cfg = NeflagMethod.parse_config({**SMALL, **(raw or {})})
    ctx = MethodContext(model=model, data=data, config=cfg, seed=seed, workdir=tmp_path)
    return NeflagMethod().explain(ctx)


def test_plugin_on_digits_cnn_torch(digits, tmp_path):
    cnn, ds = digits
    model = tm.as_loaded(cnn, (1, 8, 8))
    assert NeflagMethod.can_explain(model=model, data=ds) is None
    e = explain(model, ds, tmp_path)
    assert e.ok and e.summary.startswith("NeFLAG (form A, descent sampler, n = 8, m = 3")
    for key in ("neflag", "integrated_gradients", "saliency", "inputs"):
        assert e.arrays[key].shape == (4, 1, 8, 8)
    assert e.arrays["targets"].shape == (4,)
    for key in ("deletion_auc", "insertion_auc", "ig_deletion_auc", "saliency_insertion_auc", "max_sensitivity",
                "randomisation_spearman", "ig_randomisation_spearman", "seed_stability", "seconds_per_input",
                "ig_seconds_per_input", "epsilon"):
        assert np.isfinite(e.metrics[key]), key
    assert all(0 <= e.metrics[k] <= 1 for k in ("deletion_auc", "insertion_auc", "ig_deletion_auc"))
    assert e.metrics["evaluations_per_input"] == 8 * 4  # n starts x (m steps + the final probe)
    assert set(e.figures) == {"attribution_maps", "deletion_insertion"}
    assert all(p.exists() and p.stat().st_size > 1000 for p in e.figures.values())
    html = render_method_section(NeflagMethod, e.to_dict(), {k: p.name for k, p in e.figures.items()})
    for text in ("negative flux", "Deletion AUC", "Integrated Gradients", "reconstruction", "attribution_maps.png"):
        assert text in html
    assert "deterministic" in html


def test_torch_and_onnx_give_the_same_attributions(digits, tmp_path):
    cnn, ds = digits
    torch_model = tm.as_loaded(cnn, (1, 8, 8))
    onnx_model = tm.as_onnx_loaded(cnn, (1, 8, 8), tmp_path)
    assert onnx_model.runtime == "onnxruntime" and onnx_model.has_gradients
    raw = {"quality": {"deletion_insertion": True, "max_sensitivity": False, "randomisation": False,
                       "seed_stability": False, "steps": 8}}
    a = explain(torch_model, ds, tmp_path / "t", raw)
    b = explain(onnx_model, ds, tmp_path / "o", raw)
    np.testing.assert_array_equal(a.arrays["targets"], b.arrays["targets"])
    for key in ("neflag", "integrated_gradients", "saliency"):
        scale = np.abs(a.arrays[key]).max()
        np.testing.assert_allclose(b.arrays[key], a.arrays[key], rtol=0, atol=1e-4 * scale, err_msg=key)
    assert b.metrics["deletion_auc"] == pytest.approx(a.metrics["deletion_auc"], abs=1e-4)


def test_plugin_on_tabular_mlp_uses_form_a_in_z_units(cancer, tmp_path):
    mlp, ds = cancer
    model = tm.as_loaded(mlp, (30,))
    e = explain(model, ds, tmp_path, {"quality": {"randomisation_mode": "cascading", "steps": 10,
                                                   "robustness_inputs": 2, "sensitivity_samples": 2,
                                                   "stability_seeds": 2}})
    assert e.details["form"] == "A" and e.details["sampler"] == "descent" and e.details["map"] == "times_input"
    assert "standardised" in e.details["sphere_units"] and e.details["data_sigma"] == pytest.approx(1.0, abs=1e-6)
    assert e.details["epsilon"] == pytest.approx(math.sqrt(30), rel=1e-6)  # 1 x sigma x sqrt(d), sigma = 1 in z
    assert e.metrics["evaluations_per_input"] == 32
    assert set(e.figures) == {"feature_importance", "deletion_insertion"}
    top = e.tables["top_features"]
    assert len(top) == 10 and top[0]["feature"] in ds.feature_names
    assert [r["method"] for r in e.tables["comparison"]] == ["NeFLAG", "Integrated Gradients", "Saliency"]
    assert len(e.tables["randomisation_layers"]) == 3 * 3  # three Linear layers, three methods
    html = render_method_section(NeflagMethod, e.to_dict(), {k: p.name for k, p in e.figures.items()})
    assert "Top features" in html and "Cascading randomisation" in html


def test_finite_difference_mode_on_onnx_runtime(cancer, tmp_path):
    mlp, ds = cancer
    onnx_model = tm.as_onnx_loaded(mlp, (30,), tmp_path)
    raw = {"output": "logit", "sampler": "orthogonal_antithetic", "baselines": [],
           "quality": {"deletion_insertion": True, "steps": 5, "max_sensitivity": False,
                                                            "randomisation": False, "seed_stability": False}}
    grad = explain(onnx_model, ds, tmp_path / "g", raw)
    fd = explain(onnx_model, ds, tmp_path / "f", {**raw, "derivative": "finite_difference"})
    scale = np.abs(grad.arrays["neflag"]).max()
    np.testing.assert_allclose(fd.arrays["neflag"], grad.arrays["neflag"], rtol=0, atol=2e-2 * scale)
    assert fd.details["derivative"] == "finite_difference" and list(fd.arrays).count("saliency") == 0
    assert any("no baseline" in f for f in fd.findings)


class ForwardOnly(LoadedModel):
    """A model that can only run forward passes (no torch view)."""

    runtime = "onnxruntime"

    def __init__(self) -> None:
        self.info = ModelVersionInfo(uri="memory:forward-only", kind="memory", name="forward-only")
        self.input_spec = TensorSpec("x", (None, 4))
        self.output_spec = TensorSpec("y", (None, 2))
        self.torch_unavailable_reason = "the ONNX graph has no torch view (operators without a torch equivalent here: TopK)"
        self.details = {}

    def _predict_batch(self, x):
        return np.stack([x.sum(1), -x.sum(1)], 1)


def test_model_without_gradients_is_skipped_with_reason(tmp_path):
    from governance.contract.dataset import Dataset

    reason = NeflagMethod.can_explain(model=ForwardOnly(), data=Dataset(X=np.zeros((3, 4), np.float32)))
    assert reason and "gradients" in reason and "TopK" in reason


def test_onnx_graph_without_torch_view_is_skipped(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from governance.contract.dataset import Dataset
    from governance.host.runtimes.onnx_model import OnnxModel

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "ax"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [w, helper.make_tensor("ax", TensorProto.INT64, [], [1])])  # CumSum has no torch view (Sin now has one)
    path = tmp_path / "sin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = OnnxModel.from_path(path)
    reason = NeflagMethod.can_explain(model=model, data=Dataset(X=np.zeros((3, 4), np.float32)))
    assert reason and "gradients" in reason and "CumSum" in reason


def test_nan_inputs_raise_method_error(digits, tmp_path):
    from governance.contract.dataset import Dataset

    cnn, ds = digits
    X = ds.X[:4].copy()
    X[2, 0, 3, 3] = np.nan
    with pytest.raises(MethodError, match=r"NaN or infinite values: 1 of 4 .*rows 2") as err:
        explain(tm.as_loaded(cnn, (1, 8, 8)), Dataset(X=X, modality="image"), tmp_path)
    assert "impute" in err.value.hint


def test_model_with_nan_outputs_raises_method_error(tmp_path):
    from governance.contract.dataset import Dataset

    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.stack([torch.log(x[:, 0]), x[:, 1]], 1)

    X = np.array([[-1.0, 0.0], [2.0, 1.0]], np.float32)
    with pytest.raises(MethodError, match="NaN or infinite outputs"):
        explain(tm.as_loaded(Bad(), (2,)), Dataset(X=X), tmp_path)


def test_zero_gradient_model_gives_zero_attributions_and_a_warning(tmp_path):
    from governance.contract.dataset import Dataset

    lin = torch.nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.zero_()
    X = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    e = explain(tm.as_loaded(lin, (6,)), Dataset(X=X), tmp_path,
                {"quality": {"max_sensitivity": True, "randomisation": False, "seed_stability": False, "steps": 6}})
    assert np.all(e.arrays["neflag"] == 0) and not np.isnan(e.arrays["neflag"]).any()
    assert e.metrics["zero_attribution_fraction"] == 1.0
    assert any("no negative-flux point" in w for w in e.warnings)
    assert all(np.isfinite(v) for k, v in e.metrics.items() if "sensitivity" in k or "auc" in k)


def test_bad_targets_and_config(digits, tmp_path):
    from governance.contract.dataset import Dataset

    cnn, ds = digits
    model = tm.as_loaded(cnn, (1, 8, 8))
    with pytest.raises(MethodError, match="target class 12 does not exist"):
        explain(model, ds, tmp_path, {"target": 12})
    with pytest.raises(MethodError, match="needs labels"):
        explain(model, Dataset(X=ds.X[:4], modality="image"), tmp_path, {"target": "label"})
    with pytest.raises(ConfigError, match="epsilon"):
        NeflagMethod.parse_config({"epsilon": 0})
    with pytest.raises(ConfigError, match="valid keys"):
        NeflagMethod.parse_config({"n_point": 3})
    with pytest.raises(ConfigError, match="input_range"):
        NeflagMethod.parse_config({"input_range": [1, 0]})
    with pytest.raises(MethodError, match="finite_difference"):
        explain(model, ds, tmp_path, {"derivative": "finite_difference", "form": "B"})


def test_target_class_index_and_logit_output(digits, tmp_path):
    cnn, ds = digits
    e = explain(tm.as_loaded(cnn, (1, 8, 8)), ds, tmp_path,
                {"target": 3, "output": "log_prob", "sampler": "descent", "form": "A", "baselines": ["saliency"],
                 "quality": {"max_sensitivity": False, "randomisation": False, "seed_stability": False, "steps": 4}})
    assert np.all(e.arrays["targets"] == 3)
    assert "integrated_gradients" not in e.arrays and "ig_deletion_auc" not in e.metrics
    assert e.details["sampler"] == "descent" and e.metrics["evaluations_per_input"] == 8 * 4


def test_plugin_registers_through_its_entry_point_and_imports_cheaply():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="governance.plugins") if e.name == "neflag"]
    got = []
    ep.load().register_methods(register=got.append)
    assert got == [NeflagMethod]
    code = "import sys, governance_plugins.neflag; print(any(m in sys.modules for m in ('torch', 'numpy', 'matplotlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ====================================================== values against independent computations (issue 15)
QUIET = {"deletion_insertion": False, "controls": False, "max_sensitivity": False, "randomisation": False,
         "seed_stability": False}
W3 = np.array([[0.8, -1.5, 0.3, 2.0, -0.7, 1.1, 0.0, -0.4, 0.9, -2.2, 0.5, 1.7],
               [-0.3, 0.6, -1.2, 0.4, 1.9, -0.8, 0.7, 1.3, -0.5, 0.2, -1.6, 0.1],
               [1.4, 0.2, 0.9, -1.1, 0.3, 0.6, -1.8, 0.5, 1.2, -0.9, 0.8, -0.6]])
B3 = np.array([0.1, -0.2, 0.3])


def linear_case(kind: str, n: int = 6):
    """A 3-class linear model on 12 features, as a table (baseline = feature means, z-scaled sphere) or as
    1x3x4 images (baseline = zeros; H != W so a transposed map cannot pass)."""
    from governance.contract.dataset import Dataset

    torch.manual_seed(0)
    shape = (12,) if kind == "tabular" else (1, 3, 4)
    lin = torch.nn.Linear(12, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W3))
        lin.bias.copy_(torch.from_numpy(B3))
    module = torch.nn.Sequential(torch.nn.Flatten(), lin) if kind == "image" else lin
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(40, 12)) * np.linspace(0.5, 2.0, 12) + 1.0).astype(np.float32)
    if kind == "image":
        X = np.abs(X) / np.abs(X).max()
    ds = Dataset(X=X.reshape(40, *shape), modality=kind)
    return tm.as_loaded(module.eval(), shape), ds


def exact_contributions(e, ds):
    """w_c ⊙ (x − baseline): a linear logit's exact split, which IG reproduces (and NeFLAG x input must)."""
    X = e.arrays["inputs"]
    flat = X.reshape(len(X), -1).astype(np.float64)
    return (W3[e.arrays["targets"]] * (flat - ds.baseline.reshape(-1))).reshape(X.shape)


@pytest.mark.parametrize("kind", ["tabular", "image"])
def test_neflag_times_input_and_ig_equal_a_linear_models_exact_contributions(kind, tmp_path):
    """Form A with S2 (N = d) is exact for a linear model (N2), so NeFLAG x (x − b) = w ⊙ (x − b) = IG, feature by
    feature; Saliency is |w|. Catches a flipped sign, permuted features, IG replaced by zeros."""
    model, ds = linear_case(kind)
    e = explain(model, ds, tmp_path, {"n_samples": 6, "sampler": "orthogonal_antithetic", "quality": QUIET})
    want = exact_contributions(e, ds)
    scale = np.abs(want).max()
    np.testing.assert_allclose(e.arrays["neflag"], want, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(e.arrays["integrated_gradients"], want, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(e.arrays["saliency"], np.abs(W3[e.arrays["targets"]]).reshape(want.shape), atol=1e-6)
    assert e.details["units"].startswith("units of the explained score")


def test_default_descent_sampler_converges_to_the_exact_contributions(tmp_path):
    """The default sampler (S4) with many steps: every start ends at −ŵ, where φ·ν = w, so the map is w ⊙ (x − b)."""
    model, ds = linear_case("tabular")
    e = explain(model, ds, tmp_path, {"n_samples": 6, "m": 80, "baselines": [], "quality": QUIET})
    want = exact_contributions(e, ds)
    np.testing.assert_allclose(e.arrays["neflag"], want, rtol=0, atol=1e-5 * np.abs(want).max())


def softmax_gradients(X: np.ndarray, t: np.ndarray, output: str) -> np.ndarray:
    """∂/∂x of the explained score of a linear softmax model, by hand."""
    z = X.reshape(len(X), -1).astype(np.float64) @ W3.T + B3
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    centred = W3[t] - p @ W3  # ∂ log p_t / ∂x
    if output == "logit":
        return W3[t]
    return centred if output == "log_prob" else p[np.arange(len(X)), t][:, None] * centred


@pytest.mark.parametrize("output", ["prob", "log_prob", "logit"])
def test_every_method_explains_the_configured_output(output, tmp_path):
    """At a tiny radius form A is the gradient (P4), of the probability, log-probability or logit as configured;
    Saliency is its magnitude and IG its path integral (a 50-node Gauss-Legendre reference written here)."""
    model, ds = linear_case("tabular")
    raw = {"n_samples": 5, "sampler": "orthogonal_antithetic", "epsilon": 1e-4, "map": "flux",
           "feature_scale": "none", "output": output, "quality": QUIET}
    e = explain(model, ds, tmp_path, raw)
    X, t = e.arrays["inputs"].astype(np.float64), e.arrays["targets"]
    g = softmax_gradients(X, t, output)
    np.testing.assert_allclose(e.arrays["neflag"], g, rtol=0, atol=1e-3 * np.abs(g).max())
    np.testing.assert_allclose(e.arrays["saliency"], np.abs(g), rtol=0, atol=1e-5 * np.abs(g).max())
    nodes, weights = np.polynomial.legendre.leggauss(50)
    alphas, weights = (nodes + 1) / 2, weights / 2
    base = ds.baseline.astype(np.float64)
    ig = sum(w * softmax_gradients(base + a * (X - base), t, output) for a, w in zip(alphas, weights)) * (X - base)
    np.testing.assert_allclose(e.arrays["integrated_gradients"], ig, rtol=0, atol=1e-4 * np.abs(ig).max())


def target_probability(module, X, t) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(np.asarray(X, np.float32))), 1).numpy()[np.arange(len(X)), t]


def reference_game(module, X, A, baseline, t, steps):
    """Deletion and insertion AUCs in 20 lines: most important feature first, floor(k·d/steps) features moved
    at step k, the target's softmax probability, trapezoid over the share actually moved."""
    n, d = X.shape
    counts = [k * d // steps for k in range(steps + 1)]
    dele, ins = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    for i in range(n):
        order = np.argsort(-A[i], kind="stable")
        for k, c in enumerate(counts):
            gone = np.zeros(d, bool)
            gone[order[:c]] = True
            deleted = np.where(gone, baseline, X[i])
            inserted = np.where(gone, X[i], baseline)
            dele[i, k], ins[i, k] = target_probability(module, np.stack([deleted, inserted]), [t[i], t[i]])
    x = np.asarray(counts) / d
    auc = lambda c: float(np.mean(((c[:, 1:] + c[:, :-1]) / 2 * np.diff(x)).sum(1)))  # noqa: E731
    return auc(dele), auc(ins), dele, ins


def test_reported_aucs_and_curves_equal_an_independent_reference(cancer, tmp_path):
    """30 features in 20 steps (uneven steps). Catches an AUC replaced by a constant, a wrong step count, and a
    deletion substrate other than the dataset's baseline (curves must end at the baseline's probability)."""
    mlp, ds = cancer
    quality_cfg = {**QUIET, "deletion_insertion": True, "steps": 20}
    e = explain(tm.as_loaded(mlp, (30,)), ds, tmp_path, {"n_samples": 6, "quality": quality_cfg})
    X, t = e.arrays["inputs"], e.arrays["targets"]
    for key, pre in (("neflag", ""), ("integrated_gradients", "ig_"), ("saliency", "saliency_")):
        d_auc, i_auc, dele, ins = reference_game(mlp, X, e.arrays[key].astype(np.float64), ds.baseline, t, 20)
        assert e.metrics[pre + "deletion_auc"] == pytest.approx(d_auc, abs=1e-6), key
        assert e.metrics[pre + "insertion_auc"] == pytest.approx(i_auc, abs=1e-6), key
        np.testing.assert_allclose(e.arrays[f"deletion_{key}"], dele, atol=1e-6)
        np.testing.assert_allclose(e.arrays[f"insertion_{key}"], ins, atol=1e-6)
    at_baseline = target_probability(mlp, np.repeat(ds.baseline[None], len(X), 0), t)
    np.testing.assert_allclose(e.arrays["deletion_neflag"][:, -1], at_baseline, atol=1e-6)
    np.testing.assert_allclose(e.arrays["insertion_neflag"][:, 0], at_baseline, atol=1e-6)
    np.testing.assert_allclose(e.arrays["deletion_neflag"][:, 0], target_probability(mlp, X, t), atol=1e-6)


def test_max_sensitivity_uses_common_random_numbers(cancer, tmp_path):
    """Perturbed copies reuse their input's sphere seeds: at a vanishing radius NeFLAG's max-sensitivity goes to 0
    like IG's (with fresh seeds it stayed near 1, its own Monte-Carlo noise)."""
    mlp, ds = cancer
    q = {**QUIET, "max_sensitivity": True, "sensitivity_radius": 1e-6, "sensitivity_samples": 3, "robustness_inputs": 4}
    e = explain(tm.as_loaded(mlp, (30,)), ds, tmp_path, {"n_samples": 4, "quality": q})
    assert e.metrics["ig_max_sensitivity"] < 1e-3
    assert e.metrics["max_sensitivity"] < 1e-3


# ----------------------------------------------------------------------------------------- controls
def test_trained_cnn_figures_are_informative_and_the_controls_are_logged(digits, tmp_path):
    from governance.run.sink import control_metrics

    cnn, ds = digits
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    q = {**QUIET, "deletion_insertion": True, "controls": True, "randomisation": True, "steps": 16}
    e = explain(tm.as_loaded(cnn, (1, 8, 8)), ds, tmp_path, {"n_samples": 12, "quality": q})
    verdicts = e.verdicts()
    for figure in ("deletion_auc", "insertion_auc", "ig_deletion_auc", "ig_insertion_auc"):
        assert verdicts[figure] == "informative", (figure, [c.to_dict() for c in e.controls if c.metric == figure])
    keys = {(c.metric, c.key) for c in e.controls}
    assert {("deletion_auc", k) for k in ("random", "randomised_model", "cascading")} <= keys
    assert len(e.controls) == 3 * 2 * 3  # three methods x two figures x three controls
    for c in e.controls:
        assert c.margin >= 0.02 and c.margin_rule.startswith("max(")
    logged = control_metrics(e)
    assert logged["deletion_auc.informative"] == 1.0 and "insertion_auc.control.randomised_model" in logged
    assert "informative" in e.summary and "not informative" not in e.summary
    assert [r["control"] for r in e.tables["controls"][:3]] == ["random", "randomised_model", "cascading"]
    for k, v in cnn.state_dict().items():  # the controls randomise copies only
        assert torch.equal(v, before[k])


def test_a_model_with_random_weights_gets_not_informative(digits, tmp_path):
    """An untrained CNN's class probabilities barely move (~0.1 everywhere): no figure can beat the controls'
    absolute floor, whatever the attribution."""
    _, ds = digits
    torch.manual_seed(1)
    random_cnn = tm.digits_cnn().eval()
    q = {**QUIET, "deletion_insertion": True, "controls": True, "randomisation": True, "randomised_draws": 1,
         "cascading_steps": 2, "steps": 16}
    e = explain(tm.as_loaded(random_cnn, (1, 8, 8)), ds, tmp_path, {"n_samples": 8, "quality": q})
    assert set(e.verdicts().values()) == {"not informative"}
    assert len(e.verdicts()) == 6
    assert "not informative" in e.summary
    assert any(f.startswith("Not informative: NeFLAG deletion AUC and NeFLAG insertion AUC") for f in e.findings)


# ----------------------------------------------------------------------------------- flux internals
def test_descent_form_a_converges_to_the_gradient_of_a_linear_model():
    """S4 without S3's factor d: at convergence every point is −ŵ and φ·ν = w."""
    res = run(linear, torch.zeros(5), form="A", sampler="descent", n_points=4, m=60)
    torch.testing.assert_close(res.attribution[0], W, rtol=0, atol=1e-6)


def test_clipped_points_get_the_normal_of_their_actual_displacement():
    """After clipping, ν = (s − x)/‖s − x‖ and φ = ∇f(s)·ν for that ν (spec A6)."""
    x = torch.tensor([0.0, 1.0, 0.5, 0.02, 0.98], dtype=F64)
    for sampler in ("rejection", "orthogonal_antithetic"):
        res = run(linear, x, form="A", sampler=sampler, n_points=50, n_directions=5, clip=(0.0, 1.0), record=True)
        r = res.records
        disp = r["displacement"]
        assert res.n_clipped > 0
        torch.testing.assert_close(r["normal"], disp / disp.norm(dim=1, keepdim=True), rtol=0, atol=1e-12)
        torch.testing.assert_close(r["phi"], r["normal"] @ W, rtol=0, atol=1e-12)


def test_onnx_and_torch_models_get_the_same_controls(cancer, tmp_path):
    """The ONNX graph's torch view holds flat parameters (p0, p1, ...); its randomised copies must be the same
    functions as the torch module's, so every control matches (a cascade that shuffled an output bias alone
    reproduced the figure exactly and made every figure 'not informative' on ONNX models)."""
    mlp, ds = cancer
    q = {**QUIET, "deletion_insertion": True, "controls": True, "randomisation": True, "randomised_draws": 2,
         "steps": 10}
    got = {}
    for name, model in (("torch", tm.as_loaded(mlp, (30,))), ("onnx", tm.as_onnx_loaded(mlp, (30,), tmp_path))):
        e = explain(model, ds, tmp_path / name, {"n_samples": 6, "baselines": ["integrated_gradients"], "quality": q})
        got[name] = {(c.metric, c.key): c.control_value for c in e.controls}
    assert got["torch"].keys() == got["onnx"].keys() and len(got["torch"]) == 2 * 2 * 3
    for key, value in got["torch"].items():
        assert got["onnx"][key] == pytest.approx(value, abs=1e-4), key
    cascade = got["onnx"][("deletion_auc", "cascading")]
    assert cascade != pytest.approx(e.metrics["deletion_auc"], abs=1e-6)
