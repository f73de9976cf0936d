"""Spectral surrogate (SpecXAI-inspired reconstruction): spec oracles S1-S7 of methods-specxai-neflag.md Part B,
model-level recovery of known polynomials and sinusoids, the ONNX path, and bad inputs."""

from __future__ import annotations

import subprocess
import sys
from math import comb, pi

import numpy as np
import pytest

from governance.contract.dataset import Dataset
from governance.contract.errors import ConfigError, MethodError
from governance.contract.method import MethodContext
from governance.contract.model import ModelVersionInfo, TensorSpec
from governance_plugins.spectral import basis as B
from governance_plugins.spectral import fit as F
from governance_plugins.spectral import formula as FM
from governance_plugins.spectral.method import SpectralSurrogate

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"):
        monkeypatch.setenv(var, str(tmp_path / "home"))


def coef_of(fit_or_alpha, coef_row, multi_index):
    alpha = fit_or_alpha.alpha if hasattr(fit_or_alpha, "alpha") else fit_or_alpha
    rows = [n for n, a in enumerate(np.asarray(alpha).tolist()) if tuple(a) == tuple(multi_index)]
    assert len(rows) == 1, f"{multi_index} not in the index set"
    return coef_row[rows[0]]


def truth_vector(alpha, entries):
    out = np.zeros(len(alpha))
    for mi, c in entries.items():
        out[[n for n, a in enumerate(alpha.tolist()) if tuple(a) == mi][0]] = c
    return out


class Fn(torch.nn.Module):
    def __init__(self, fn, n_out=1):
        super().__init__()
        self.fn, self.n_out = fn, n_out

    def forward(self, x):
        y = self.fn(x)
        return y if y.ndim == 2 else y[:, None]


def fn_model(fn, d: int):
    """A float64 torch model computing ``fn`` exactly (no float32 rounding in the oracles)."""
    from governance.host.runtimes.torch_model import TorchModel

    return TorchModel(Fn(fn).double(), ModelVersionInfo(uri="memory:fn", kind="memory", name="fn"),
                      TensorSpec("input", (None, d), "float64"), TensorSpec("output", (None, 1), "float64"))


def run(model, data, tmp_path, seed=0, **cfg):
    ctx = MethodContext(model=model, data=data, config=SpectralSurrogate.parse_config(cfg), seed=seed,
                        workdir=tmp_path / "spectral")
    return SpectralSurrogate().explain(ctx)


def box_data(d, n=200, lo=-1.0, hi=1.0, seed=0):
    X = np.random.default_rng(seed).uniform(lo, hi, size=(n, d))
    return Dataset(X=X, feature_names=[f"x{i + 1}" for i in range(d)])


# ------------------------------------------------------------------------------------ index set (B3.1)
@pytest.mark.parametrize("d,p,q", [(1, 4, 1), (2, 2, 2), (3, 3, 3), (5, 3, 2), (6, 4, 3), (7, 2, 7), (4, 5, 1)])
def test_index_set_size_matches_enumeration(d, p, q):
    alpha = B.index_set(d, p, q)
    assert len(alpha) == B.index_set_size(d, p, q)
    assert len({tuple(a) for a in alpha.tolist()}) == len(alpha)
    assert alpha.sum(axis=1).max() <= p and (alpha > 0).sum(axis=1).max() <= q
    assert alpha[0].sum() == 0  # constant term first


def test_index_set_size_closed_forms():
    assert B.index_set_size(50, 3, 2) == 3826  # spec example
    assert B.index_set_size(9, 4, 9) == comb(13, 4)
    assert B.index_set_size(30, 3, 2) == 1 + 30 * 3 + comb(30, 2) * 3


# ------------------------------------------------------------------------------------ S1, S2: quadrature
def test_s1_affine_plus_bilinear():
    fit = F.fit_quadrature(lambda z: 3 + 2 * z[:, 0] - z[:, 1] + z[:, 0] * z[:, 1], B.index_set(2, 2, 2),
                           "chebyshev", n_nodes=3)
    truth = truth_vector(fit.alpha, {(0, 0): 3, (1, 0): 2, (0, 1): -1, (1, 1): 1})
    np.testing.assert_allclose(fit.coef[0], truth, atol=1e-12)


@pytest.mark.parametrize("f,expected", [
    (lambda z: z[:, 0] ** 2, {0: 0.5, 2: 0.5}),
    (lambda z: z[:, 0] ** 3, {1: 0.75, 3: 0.25}),
    (lambda z: 4 * z[:, 0] ** 3 - 3 * z[:, 0], {3: 1.0}),
])
def test_s2_univariate_identities(f, expected):
    fit = F.fit_quadrature(f, B.index_set(1, 4, 1), "chebyshev", n_nodes=5)
    truth = np.array([expected.get(k, 0.0) for k in range(5)])
    np.testing.assert_allclose(fit.coef[0], truth, atol=1e-12)


def test_legendre_identity_and_norms():
    fit = F.fit_quadrature(lambda z: z[:, 0] ** 2, B.index_set(1, 3, 1), "legendre", n_nodes=4)
    np.testing.assert_allclose(fit.coef[0], [1 / 3, 0, 2 / 3, 0], atol=1e-12)  # z^2 = P0/3 + 2 P2/3
    np.testing.assert_allclose(B.norms(np.array([[0], [1], [2]]), "legendre"), [1, 1 / 3, 1 / 5])


# ------------------------------------------------------------------------------------ S3, S4: least squares
S3_TRUTH = {(1, 0, 0): 0.5, (0, 2, 0): -1.0, (1, 0, 1): 1.0}


def s3(z):
    return 1 + 0.5 * z[:, 0] - 2 * z[:, 1] ** 2 + z[:, 0] * z[:, 2]


@pytest.mark.parametrize("ridge,tol", [(0.0, 1e-10), (None, 1e-6)])
def test_s3_least_squares_recovery(ridge, tol):
    alpha = B.index_set(3, 3, 3)
    z = F.sample_reference(400, 3, "chebyshev", np.random.default_rng(0))
    fit = F.fit_least_squares(s3, alpha, "chebyshev", z, ridge=ridge)
    np.testing.assert_allclose(fit.coef[0], truth_vector(alpha, S3_TRUTH), atol=tol)
    assert abs(fit.coef[0, 0]) < tol  # z^2 = (1 + T2)/2 cancels the constant


def test_s4_variance_decomposition():
    alpha = B.index_set(3, 3, 3)
    coef = truth_vector(alpha, S3_TRUTH)[None]
    vd = F.variance_decomposition(coef, alpha, B.norms(alpha, "chebyshev"))
    assert vd.variance[0] == pytest.approx(0.875, abs=1e-12)
    np.testing.assert_allclose(vd.first_order[0], [1 / 7, 4 / 7, 0], atol=1e-12)
    np.testing.assert_allclose(vd.total[0], [3 / 7, 4 / 7, 2 / 7], atol=1e-12)
    assert vd.pair_share[0, 0, 2] == pytest.approx(2 / 7) and vd.pair_share[0, 2, 0] == pytest.approx(2 / 7)
    # Monte Carlo variance under the arcsine measure: within 4 standard errors
    y = s3(F.sample_reference(200_000, 3, "chebyshev", np.random.default_rng(1)))
    se = np.sqrt(np.mean((y - y.mean()) ** 4) / len(y))
    assert abs(y.var() - 0.875) < 4 * se


def test_omp_recovers_the_sparse_support():
    alpha = B.index_set(3, 3, 3)
    fit = F.fit_least_squares(s3, alpha, "chebyshev", F.sample_reference(400, 3, "chebyshev", np.random.default_rng(0)),
                              ridge=0.0)
    coef, mask = F.omp_bic(fit, max_terms=10)
    assert {tuple(a) for a in alpha[mask[0]].tolist()} == set(S3_TRUTH)
    np.testing.assert_allclose(coef[0], truth_vector(alpha, S3_TRUTH), atol=1e-8)


# ------------------------------------------------------------------------------------ S5: kinks and decay
def test_s5_relu_closed_form_and_decay():
    p = 40
    fit = F.fit_quadrature(lambda z: np.maximum(z[:, 0], 0.0), B.index_set(1, p, 1), "chebyshev", n_nodes=4096)
    c = fit.coef[0]
    closed = np.zeros(p + 1)
    closed[0], closed[1] = 1 / pi, 0.5
    for j in range(1, p // 2 + 1):
        closed[2 * j] = (-1) ** (j + 1) * 2 / (pi * (4 * j * j - 1))
    np.testing.assert_allclose(c, closed, atol=1e-6)
    np.testing.assert_allclose(c[:9], [0.318310, 0.5, 0.212207, 0, -0.042441, 0, 0.018189, 0, -0.010105], atol=1e-6)
    k = np.arange(10, p + 1, 2)
    assert np.polyfit(np.log(k), np.log(np.abs(c[k])), 1)[0] == pytest.approx(-2.0, abs=0.05)
    E = F.spectrum_by_degree(fit.coef, fit.alpha, fit.gamma)[0]
    assert np.polyfit(np.log(k), np.log(E[k]), 1)[0] == pytest.approx(-4.0, abs=0.1)


def test_s5_absolute_value():
    fit = F.fit_quadrature(lambda z: np.abs(z[:, 0]), B.index_set(1, 4, 1), "chebyshev", n_nodes=4096)
    np.testing.assert_allclose(fit.coef[0][:3], [2 / pi, 0.0, 4 / (3 * pi)], atol=1e-6)


# ------------------------------------------------------------------------------------ S6: box mapping, export
def test_s6_box_mapping_through_the_method(tmp_path):
    model = fn_model(lambda x: x[:, 0], 1)
    e = run(model, box_data(1, lo=0, hi=10), tmp_path, box=[(0.0, 10.0)], degree=2)
    np.testing.assert_allclose(e.arrays["coefficients"][0], [5.0, 5.0, 0.0], atol=1e-10)
    assert e.details["linear_formulas"][0]["formula"].startswith("0 +1·x1") or \
        abs(e.details["linear_formulas"][0]["intercept"]) < 1e-9


def test_s6_monomial_export():
    np.testing.assert_allclose(B.univariate_monomials(2, 0.0, 10.0), [1.0, -0.8, 0.08], atol=1e-12)
    import sympy

    alpha = np.array([[0], [1], [2]])
    expr = FM.to_sympy(np.array([0.0, 0.0, 1.0]), alpha, ["x"], "chebyshev", box=np.array([[0.0, 10.0]]))
    x = sympy.Symbol("x")
    poly = sympy.Poly(expr, x).all_coeffs()[::-1]
    np.testing.assert_allclose([float(c) for c in poly], [1.0, -0.8, 0.08], atol=1e-12)


# ------------------------------------------------------------------------------------ S7: linear model
def test_s7_linear_function_math_level():
    alpha = B.index_set(2, 3, 2)
    f = lambda z: 0.3 + 1.5 * z[:, 0] - 0.7 * z[:, 1]  # noqa: E731
    fit = F.fit_quadrature(f, alpha, "chebyshev", n_nodes=6)
    z = F.sample_reference(2000, 2, "chebyshev", np.random.default_rng(0))
    trunc = F.truncation_r2(z, f(z)[:, None], alpha, fit.coef, "chebyshev")
    assert trunc[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert F.spectrum_by_degree(fit.coef, alpha, fit.gamma)[0, 2:].max() < 1e-28


def test_s7_square_has_no_linear_part():
    alpha = B.index_set(1, 2, 1)
    f = lambda z: z[:, 0] ** 2  # noqa: E731
    fit = F.fit_quadrature(f, alpha, "chebyshev", n_nodes=4)
    z = F.sample_reference(20_000, 1, "chebyshev", np.random.default_rng(0))
    assert abs(F.truncation_r2(z, f(z)[:, None], alpha, fit.coef, "chebyshev")[0, 0]) <= 0.01
    E = F.spectrum_by_degree(fit.coef, alpha, fit.gamma)[0]
    assert E[1] < 1e-28 and E[2] == pytest.approx(0.125)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_s7_linear_network_gives_a_degree_one_surrogate_with_fidelity_one(tmp_path, runtime):
    from governance.testing.models import as_loaded, as_onnx_loaded

    torch.manual_seed(0)
    net = torch.nn.Linear(6, 3)
    model = as_loaded(net, (6,)) if runtime == "torch" else as_onnx_loaded(net, (6,), tmp_path)
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    e = run(model, Dataset(X=X), tmp_path, box_quantiles=(0.0, 1.0))  # every row inside the box: no clipping
    assert e.metrics["data_outside_box"] == 0.0
    assert e.metrics["r2_linear_heldout"] > 1 - 1e-9 and e.metrics["r2_linear_data"] > 1 - 1e-9
    assert e.metrics["r2_heldout"] > 1 - 1e-9
    assert e.metrics["agreement_heldout"] == 1.0 and e.metrics["agreement_data"] == 1.0
    assert e.metrics["linear_energy_share"] > 1 - 1e-9
    spectrum = e.arrays["spectrum"]
    assert spectrum[:, 2:].max() < 1e-9 * spectrum[:, 1].max()
    # the linear formula in input units recovers the weights and the bias
    for lf, k in zip(e.details["linear_formulas"], range(3)):
        assert lf["intercept"] == pytest.approx(float(net.bias.detach()[k]), abs=1e-4)


# ------------------------------------------------------------------------------------ model-level recovery
def test_polynomial_network_recovers_its_coefficients(tmp_path):
    model = fn_model(lambda x: 3 + 2 * x[:, 0] - x[:, 1] + x[:, 0] * x[:, 1], 2)
    e = run(model, box_data(2), tmp_path, box=[(-1.0, 1.0), (-1.0, 1.0)], degree=2)
    assert e.details["coefficient_method"] == "quadrature"
    truth = truth_vector(e.arrays["alpha"], {(0, 0): 3, (1, 0): 2, (0, 1): -1, (1, 1): 1})
    np.testing.assert_allclose(e.arrays["coefficients"][0], truth, atol=1e-12)
    assert e.metrics["r2_heldout"] == pytest.approx(1.0, abs=1e-12)
    assert "+1·T1(x1)·T1(x2)" in e.details["formulas"][0]["formula"]


def test_least_squares_through_the_method_recovers_s3(tmp_path):
    model = fn_model(lambda x: 1 + 0.5 * x[:, 0] - 2 * x[:, 1] ** 2 + x[:, 0] * x[:, 2], 3)
    e = run(model, box_data(3), tmp_path, box=[(-1.0, 1.0)] * 3, degree=3, interaction_order=3,
            coefficients="least_squares", n_samples=400, ridge=0.0)
    np.testing.assert_allclose(e.arrays["coefficients"][0], truth_vector(e.arrays["alpha"], S3_TRUTH), atol=1e-10)
    np.testing.assert_allclose(e.arrays["total_index"][0], [3 / 7, 4 / 7, 2 / 7], atol=1e-10)


def sinusoid_truth(a: float, b: float, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi-Anger: sin(a z) = 2 sum_k (-1)^k J_{2k+1}(a) T_{2k+1}; cos(b z) = J0(b) + 2 sum_k (-1)^k J_2k(b) T_2k."""
    from scipy.special import jv

    s, c = np.zeros(p + 1), np.zeros(p + 1)
    for n in range(p + 1):
        if n % 2:
            s[n] = 2 * (-1) ** ((n - 1) // 2) * jv(n, a)
        else:
            c[n] = (jv(0, b) if n == 0 else 2 * (-1) ** (n // 2) * jv(n, b))
    return s, c


@pytest.mark.parametrize("coefficients,tol", [("quadrature", 1e-10), ("least_squares", 1e-4)])
def test_sum_of_sinusoids_recovers_bessel_coefficients(tmp_path, coefficients, tol):
    # Degree 5 leaves out the tail |c_6| = 2 J_6(1.1) = 7e-5, |c_7| = 2 J_7(1.3) = 2e-5: quadrature (10 nodes) aliases
    # only degrees >= 15 onto the kept ones; least squares on 210 random points sees the tail as noise.
    a, b = 1.3, 1.1
    model = fn_model(lambda x: torch.sin(a * x[:, 0]) + torch.cos(b * x[:, 1]), 2)
    e = run(model, box_data(2), tmp_path, box=[(-1.0, 1.0)] * 2, coefficients=coefficients, degree=5)
    s, c = sinusoid_truth(a, b, 5)
    alpha, coef = e.arrays["alpha"], e.arrays["coefficients"][0]
    assert coef_of(alpha, coef, (0, 0)) == pytest.approx(c[0], abs=tol)
    for k in range(1, 6):
        assert coef_of(alpha, coef, (k, 0)) == pytest.approx(s[k], abs=tol)
        assert coef_of(alpha, coef, (0, k)) == pytest.approx(c[k], abs=tol)
    mixed = [n for n, r in enumerate(alpha.tolist()) if r[0] > 0 and r[1] > 0]
    assert np.abs(coef[mixed]).max() < tol  # additive function: no interaction terms


# ------------------------------------------------------------------------------------ real networks, ONNX
@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    from governance.testing.models import as_loaded, as_onnx_loaded, trained_breast_cancer_mlp

    torch.manual_seed(0)  # the helper builds the module before it seeds training: seed its initial weights here
    net, ds = trained_breast_cancer_mlp()
    return as_onnx_loaded(net, (30,), tmp_path_factory.mktemp("onnx")), as_loaded(net, (30,)), ds


def test_breast_cancer_mlp_on_onnx_runtime(tmp_path, breast_cancer):
    onnx_model, torch_model, ds = breast_cancer
    assert onnx_model.runtime == "onnxruntime"
    e = run(onnx_model, ds, tmp_path)
    m = e.metrics
    assert e.status == "ok" and m["n_terms"] == 1396 and m["n_inputs"] == 30 and m["degree"] == 3
    assert m["n_evaluations_fit"] == 13960 and e.details["coefficient_method"] == "least_squares"
    assert m["r2_heldout"] > 0.95 and m["r2_data"] > 0.75 and m["agreement_data"] > 0.95
    assert 0 < m["data_outside_box"] < 0.3 and m["r2_data_inside"] > 0.75
    assert all(np.isfinite(v) for v in m.values())
    assert e.arrays["coefficients"].shape == (2, 1396) and e.arrays["alpha"].shape == (1396, 30)
    assert e.arrays["spectrum"].shape == (2, 4) and e.arrays["feature_energy"].shape == (2, 30)
    np.testing.assert_allclose(e.arrays["total_index"].max(axis=1) <= 1.0, True)
    assert set(e.figures) == {"spectrum", "feature_energy", "fidelity"} and all(p.exists() for p in e.figures.values())
    assert any(name in e.details["formulas"][0]["formula"] for name in ds.feature_names)
    assert len(e.tables["top_terms_0"]) == 12 and e.tables["spectrum"][0]["degree"] == 1


def test_energy_sparsification_and_runtime_parity(tmp_path, breast_cancer):
    onnx_model, torch_model, ds = breast_cancer
    e = run(onnx_model, ds, tmp_path, sparsify="energy", energy_fraction=0.95, degree=2)
    # the same fit on the torch runtime: identical up to float32 rounding
    e_torch = run(torch_model, ds, tmp_path / "t", sparsify="energy", energy_fraction=0.95, degree=2)
    scale = np.abs(e.arrays["coefficients_full"]).max()
    np.testing.assert_allclose(e_torch.arrays["coefficients_full"], e.arrays["coefficients_full"], atol=1e-4 * scale)
    assert e.metrics["n_terms_kept"] < e.metrics["n_terms"] / 4
    assert e.metrics["r2_heldout"] > 0.9
    kept_energy = (e.arrays["coefficients"] ** 2 * e.arrays["gamma"])[:, 1:].sum(axis=1)
    full_energy = (e.arrays["coefficients_full"] ** 2 * e.arrays["gamma"])[:, 1:].sum(axis=1)
    assert np.all(kept_energy >= 0.95 * full_energy - 1e-12)


def test_digits_cnn_defaults_to_pca_coordinates(tmp_path):
    from governance.testing.models import as_onnx_loaded, digits_cnn, digits_dataset

    torch.manual_seed(0)
    ds = digits_dataset(400)
    e = run(as_onnx_loaded(digits_cnn().eval(), (1, 8, 8), tmp_path), ds, tmp_path, n_components=6)
    assert e.details["reduction"]["kind"] == "pca" and e.metrics["n_inputs"] == 6
    assert "r2_reduction_data" in e.metrics and e.metrics["r2_heldout"] > 0.9
    assert e.arrays["input_energy"].shape == (1, 8, 8) and "energy_map" in e.figures
    assert e.arrays["coefficients"].shape[0] == 10


def test_top_k_screen_picks_the_inputs_the_function_uses(tmp_path):
    model = fn_model(lambda x: 2 * x[:, 3] + x[:, 7] ** 2 - x[:, 11] * x[:, 3], 40)
    e = run(model, box_data(40, n=300), tmp_path, reduce="top_k", top_k=3)
    assert sorted(e.details["reduction"]["indices"]) == [3, 7, 11]
    assert e.metrics["r2_heldout"] > 1 - 1e-9


def test_prob_output(tmp_path):
    torch.manual_seed(1)
    from governance.testing.models import as_loaded

    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    e = run(as_loaded(net, (3,)), Dataset(X=X), tmp_path, output="prob")
    assert e.details["output"] == "prob" and e.details["coefficient_method"] == "quadrature"
    np.testing.assert_allclose(e.arrays["coefficients"][:, 0].sum(), 1.0, atol=1e-6)  # mean probabilities sum to 1
    assert e.metrics["r2_heldout"] > 0.99


# ------------------------------------------------------------------------------------ bad inputs
def test_too_many_inputs_names_the_limit_and_the_fix(tmp_path):
    model = fn_model(lambda x: x.sum(dim=1), 64)
    with pytest.raises(MethodError) as err:
        run(model, box_data(64, n=100), tmp_path)
    msg = str(err.value)
    assert B.max_dimension(3, 2, 4000) == 51  # |Lambda(3, 2)| is 3,979 at d = 51 and 4,135 at d = 52
    assert "6,241 terms" in msg and "max_terms=4,000" in msg and "at most 51 coordinates" in msg
    assert "reduce='pca'" in err.value.hint and "reduce='top_k'" in err.value.hint


def test_raw_image_pixels_are_refused_with_reduce_none(tmp_path):
    from governance.testing.models import as_loaded, digits_cnn, digits_dataset

    with pytest.raises(MethodError, match="max_terms") as err:
        run(as_loaded(digits_cnn().eval(), (1, 8, 8)), digits_dataset(200), tmp_path, reduce="none")
    assert "n_components" in err.value.hint


def test_bad_configs():
    with pytest.raises(ConfigError, match="valid keys"):
        SpectralSurrogate.parse_config({"degre": 3})
    with pytest.raises(ConfigError, match="box_quantiles"):
        SpectralSurrogate.parse_config({"box_quantiles": (0.9, 0.1)})


def test_bad_inputs_are_method_errors(tmp_path):
    model = fn_model(lambda x: x[:, 0], 2)
    with pytest.raises(MethodError, match="`box` has 1 entries"):
        run(model, box_data(2), tmp_path, box=[(0.0, 1.0)])
    with pytest.raises(MethodError, match="below 2 x"):
        run(model, box_data(2), tmp_path, coefficients="least_squares", n_samples=5)
    with pytest.raises(MethodError, match="not an input"):
        run(model, box_data(2), tmp_path, reduce="features", features=["nope"])
    X = box_data(2).X
    X[0, 0] = np.nan
    with pytest.raises(MethodError, match="NaN"):
        run(model, Dataset(X=X), tmp_path)


# ------------------------------------------------------------------------------------ report, plugin
def test_section_renders_with_escaping(tmp_path):
    from governance.report.sections import render_method_section

    model = fn_model(lambda x: x[:, 0] + 0.5 * x[:, 1] ** 2, 2)
    ds = box_data(2)
    ds.feature_names = ["<b>size</b>", "age"]
    e = run(model, ds, tmp_path)
    html = render_method_section(SpectralSurrogate, e.to_dict(), {k: f"{k}.png" for k in e.figures})
    assert "Reconstruction, not a reproduction" in html and "&lt;b&gt;size&lt;/b&gt;" in html
    assert "<b>size</b>" not in html and 'src="spectrum.png"' in html and "T2(age)" in html


def test_plugin_registers_and_imports_cheaply():
    code = ("import sys, governance_plugins.spectral as p; "
            "assert not {'numpy', 'torch', 'matplotlib'} & set(sys.modules), sorted(sys.modules); "
            "got = []; p.register_methods(register=got.append); print(got[0].name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "spectral"


def test_data_sampling_and_omp_through_the_method(tmp_path):
    model = fn_model(lambda x: 1 + 0.5 * x[:, 0] - 2 * x[:, 1] ** 2 + x[:, 0] * x[:, 2], 3)
    e = run(model, box_data(3, n=400), tmp_path, box=[(-1.0, 1.0)] * 3, degree=3, interaction_order=3,
            sampling="data", n_samples=300, sparsify="omp")
    assert e.details["coefficient_method"] == "least_squares" and e.metrics["n_evaluations_fit"] == 300
    assert e.metrics["n_terms_kept"] == 4  # constant (0 here) + the three true terms
    np.testing.assert_allclose(e.arrays["coefficients"][0], truth_vector(e.arrays["alpha"], S3_TRUTH), atol=1e-8)
    assert any("data measure" in w for w in e.warnings) and any("not used for the fit" in w for w in e.warnings)
    assert e.metrics["r2_data"] == pytest.approx(1.0, abs=1e-10)
