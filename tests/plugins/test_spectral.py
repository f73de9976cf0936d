"""Spectral surrogate (SpecXAI-inspired reconstruction): spec oracles S1-S7 of methods-specxai-neflag.md Part B,
model-level recovery of known polynomials and sinusoids, the readable formula in the inputs' units (against hand
expansions), the controls of the headline figures (against values recomputed here), every fallback warned, the
ONNX path, and bad inputs."""

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
    sparse = F.omp_bic(fit, max_terms=10)
    assert {tuple(a) for a in alpha[sparse.mask[0]].tolist()} == set(S3_TRUTH) and sparse.empty_outputs == []
    np.testing.assert_allclose(sparse.coef[0], truth_vector(alpha, S3_TRUTH), atol=1e-8)


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
    e = run(model, Dataset(X=X), tmp_path, box_quantiles=(0.0, 1.0),  # every row inside the box: no clipping
            formula_share=0.999999)
    assert e.metrics["data_outside_box"] == 0.0
    assert e.metrics["r2_linear_heldout"] > 1 - 1e-9 and e.metrics["r2_linear_data"] > 1 - 1e-9
    assert e.metrics["r2_heldout"] > 1 - 1e-9
    assert e.metrics["agreement_heldout"] == 1.0 and e.metrics["agreement_data"] == 1.0
    assert e.metrics["linear_energy_share"] > 1 - 1e-9
    spectrum = e.arrays["spectrum"]
    assert spectrum[:, 2:].max() < 1e-9 * spectrum[:, 1].max()
    # the linear formula in input units recovers the weights and the bias
    W, b = net.weight.detach().double().numpy(), net.bias.detach().double().numpy()
    for lf, k in zip(e.details["linear_formulas"], range(3)):
        assert lf["intercept"] == pytest.approx(b[k], abs=1e-4)
        np.testing.assert_allclose([lf["weights"][f"x{i}"] for i in range(6)], W[k], atol=1e-5)
    # the readable formula: the 6 linear terms, each input's coefficient its weight (3 significant digits), the
    # intercept the network at the box centre
    centre = X.astype(np.float64).min(axis=0) / 2 + X.astype(np.float64).max(axis=0) / 2
    for f, k in zip(e.details["formulas"], range(3)):
        assert f["n_terms"] == 6 and f["share"] > 1 - 1e-6
        got = {m["powers"][0][0]: m["coefficient"] for m in f["monomials"]}
        assert all(len(m["powers"]) == 1 and m["powers"][0][1] == 1 for m in f["monomials"])
        np.testing.assert_allclose([got[f"x{i}"] for i in range(6)], W[k], rtol=5e-3)
        assert f["intercept"] == pytest.approx(b[k] + W[k] @ centre, abs=5e-3 * (1 + abs(b[k] + W[k] @ centre)))
    # a linear network needs no term above degree 1: the degree-1 control says so, and the summary does too
    deg1 = [c for c in e.controls if c.metric == "r2_heldout" and c.key == "degree1"]
    assert len(deg1) == 1 and deg1[0].verdict == "not informative" and e.verdicts()["r2_heldout"] == "not informative"
    assert "Not informative against their controls: surrogate R² on held-out box points (the degree-1" in e.summary


# ------------------------------------------------------------------------------------ model-level recovery
def test_polynomial_network_recovers_its_coefficients(tmp_path):
    model = fn_model(lambda x: 3 + 2 * x[:, 0] - x[:, 1] + x[:, 0] * x[:, 1], 2)
    e = run(model, box_data(2), tmp_path, box=[(-1.0, 1.0), (-1.0, 1.0)], degree=2, formula_share=1.0)
    assert e.details["coefficient_method"] == "quadrature"
    truth = truth_vector(e.arrays["alpha"], {(0, 0): 3, (1, 0): 2, (0, 1): -1, (1, 1): 1})
    np.testing.assert_allclose(e.arrays["coefficients"][0], truth, atol=1e-12)
    assert e.metrics["r2_heldout"] == pytest.approx(1.0, abs=1e-12)
    assert e.details["formulas"][0]["chebyshev"] == "3 + 2·T1(x1) − 1·T1(x2) + 1·T1(x1)·T1(x2)"
    # the box is [-1, 1]^2, so the formula in units is the function itself
    assert e.details["formulas"][0]["formula"] == "3 + 2·x1 − 1·x2 + 1·x1·x2"


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
    # the readable formula: at most formula_max_terms of the 1,396 terms, at least 90 % of the variance
    for f in e.details["formulas"]:
        assert 1 <= f["n_terms"] <= 40 and f["share"] >= 0.9 and f["n_terms_needed"] == f["n_terms"]
    # printed in the features' own units: evaluated here at the scored rows (clipped to the box, as the surrogate
    # is) it reproduces the R² the method reports for it, and the network's outputs are the stored ones
    rows, box = e.arrays["data_rows"], e.arrays["box"]
    Xc = np.clip(ds.X[rows].astype(np.float64), box[:, 0], box[:, 1])
    np.testing.assert_allclose(e.arrays["data_network"], onnx_model.predict(ds.X[rows]), atol=1e-5)
    names = sorted(ds.feature_names, key=len, reverse=True)  # longest first: 'worst area' before 'area'
    for f in e.details["formulas"]:
        text = f["formula"]
        for n, name in enumerate(names):
            text = text.replace(name, f"v{ds.feature_names.index(name)}_")
        got = _evaluate_printed(text, {f"v{i}_": Xc[:, i] for i in range(30)})
        y = e.arrays["data_network"][:, f["index"]]
        assert f["r2_data"] == pytest.approx(1 - ((y - got) ** 2).sum() / ((y - y.mean()) ** 2).sum(), abs=1e-9)
    # degree 1 vs degree 3 on dataset rows, stated with its numbers
    assert m["r2_linear_data"] > m["r2_data"]  # this network: the linear part fits dataset rows better
    assert (f"On dataset rows the degree-1 truncation fits the network better than the full degree-3 surrogate "
            f"(R² {m['r2_linear_data']:.3f} vs {m['r2_data']:.3f}") in " ".join(e.findings)
    assert f"On dataset rows its degree-1 truncation fits better (R² {m['r2_linear_data']:.3f}" in e.summary
    assert e.verdicts()["r2_data"] == "not informative" and "surrogate R² on dataset rows (the degree-1" in e.summary
    # the ONNX model's torch view gives the randomised-weights control
    assert {c.key for c in e.controls if c.metric == "r2_heldout"} == {"mean", "degree1", "randomised_model"}
    assert e.verdicts()["r2_heldout"] == "informative"


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
    e = run(model, ds, tmp_path, formula_share=0.99)
    html = render_method_section(SpectralSurrogate, e.to_dict(), {k: f"{k}.png" for k in e.figures})
    assert "Reconstruction, not a reproduction" in html and "&lt;b&gt;size&lt;/b&gt;" in html
    assert "<b>size</b>" not in html and 'src="spectrum.png"' in html and "T2(age)" in html
    assert "Controls of the headline figures" in html and "z(age) = " in html


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


# ------------------------------------------------------------------------------------ the readable formula
def _hand_coefficients() -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], float]]:
    """c0 = 3, T1(x1): 2, T1(x2): -1, T1(x1)T1(x2): 0.3, T2(x2): 0.1 on Lambda(2, 2) in two inputs, and each
    term's variance c^2 gamma computed by hand (gamma = 1/2 per degree-positive factor)."""
    alpha = B.index_set(2, 2, 2)
    entries = {(1, 0): 2.0, (0, 1): -1.0, (1, 1): 0.3, (0, 2): 0.1}
    coef = truth_vector(alpha, {(0, 0): 3.0, **entries})
    energy = {mi: c * c * 0.5 ** sum(1 for a in mi if a) for mi, c in entries.items()}
    return alpha, coef, energy


@pytest.mark.parametrize("share,expected", [(0.5, [(1, 0)]), (0.9, [(1, 0), (0, 1)]),
                                            (0.995, [(1, 0), (0, 1), (1, 1)]), (1.0, [(1, 0), (0, 1), (1, 1), (0, 2)])])
def test_readable_formula_keeps_the_fewest_largest_terms_for_the_share(share, expected):
    from governance_plugins.spectral.readable import BoxMap, readable_formula

    alpha, coef, energy = _hand_coefficients()
    total = sum(energy.values())  # 2 + 0.5 + 0.0225 + 0.005
    f = readable_formula(coef, alpha, B.norms(alpha, "chebyshev"), BoxMap.from_box(["x1", "x2"], np.array([[-1.0, 1.0]] * 2)),
                         "chebyshev", share=share, max_terms=40)
    assert [tuple(alpha[n]) for n in f.terms] == expected  # largest variance first, nothing more than needed
    assert f.share == pytest.approx(sum(energy[mi] for mi in expected) / total, rel=1e-12)
    assert f.share >= share - 1e-12
    assert sum(energy[mi] for mi in expected[:-1]) / total < share  # one term fewer would not reach the share
    ranked = FM.ranked_terms(coef, alpha, B.norms(alpha, "chebyshev"), ["x1", "x2"], "chebyshev", top=4)
    assert [r["term"] for r in ranked] == ["T1(x1)", "T1(x2)", "T1(x1)·T1(x2)", "T2(x2)"]
    np.testing.assert_allclose([r["variance_share"] for r in ranked],
                               [energy[mi] / total for mi in [(1, 0), (0, 1), (1, 1), (0, 2)]], rtol=1e-12)


def test_readable_formula_caps_its_length_and_says_so():
    from governance_plugins.spectral.readable import BoxMap, readable_formula

    alpha, coef, energy = _hand_coefficients()
    f = readable_formula(coef, alpha, B.norms(alpha, "chebyshev"), BoxMap.from_box(["x1", "x2"], np.array([[-1.0, 1.0]] * 2)),
                         "chebyshev", share=0.995, max_terms=1)
    assert len(f.terms) == 1 and f.n_needed == 3
    assert f.share == pytest.approx(energy[(1, 0)] / sum(energy.values()), rel=1e-12)


def _evaluate_printed(text: str, values: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate a printed formula ('31 + 1.5·(x1 − 20) − 0.5·(x2 + 2)²') with plain Python arithmetic."""
    expr = text.replace("·", "*").replace("−", "-").replace("²", "**2").replace("³", "**3").replace("⁴", "**4")
    assert set(expr) <= set("0123456789.+-*() ex") | {c for name in values for c in name}, expr
    return eval(expr, {"__builtins__": {}}, dict(values))  # noqa: S307 - the test's own formula text


BOX_UNITS = [(10.0, 30.0), (-4.0, 0.0)]


def units_model():
    """f(x) = 3 + 2 x1 - 0.5 x2^2 + 0.25 x1 x2. On the box x1 in [10, 30], x2 in [-4, 0] (centres 20, -2),
    with v = x - centre: f = 31 + 1.5 v1 + 7 v2 - 0.5 v2^2 + 0.25 v1 v2 (expanded by hand)."""
    return fn_model(lambda x: 3 + 2 * x[:, 0] - 0.5 * x[:, 1] ** 2 + 0.25 * x[:, 0] * x[:, 1], 2)


def test_readable_formula_is_written_in_the_inputs_units(tmp_path):
    data = Dataset(X=np.random.default_rng(0).uniform([10, -4], [30, 0], size=(300, 2)), feature_names=["x1", "x2"])
    e = run(units_model(), data, tmp_path, box=BOX_UNITS, degree=2, formula_share=1.0)
    f = e.details["formulas"][0]
    assert f["intercept"] == pytest.approx(31.0, abs=1e-9)  # the function at the box centre (20, -2)
    got = {tuple((name, p) for name, p in m["powers"]): m["coefficient"] for m in f["monomials"]}
    assert got == pytest.approx({(("x1", 1),): 1.5, (("x2", 1),): 7.0, (("x2", 2),): -0.5,
                                 (("x1", 1), ("x2", 1)): 0.25}, abs=1e-9)
    assert f["formula"] == "31 + 1.5·(x1 − 20) + 7·(x2 + 2) + 0.25·(x1 − 20)·(x2 + 2) − 0.5·(x2 + 2)²"
    x = np.random.default_rng(1).uniform([10, -4], [30, 0], size=(500, 2))
    truth = 3 + 2 * x[:, 0] - 0.5 * x[:, 1] ** 2 + 0.25 * x[:, 0] * x[:, 1]
    np.testing.assert_allclose(_evaluate_printed(f["formula"], {"x1": x[:, 0], "x2": x[:, 1]}), truth, atol=1e-9)
    assert e.metrics["r2_formula_heldout"] == pytest.approx(1.0, abs=1e-12)
    assert e.metrics["r2_formula_data"] == pytest.approx(1.0, abs=1e-12)
    mapping = {r["coordinate"]: r for r in e.tables["box_mapping"]}
    assert mapping["x1"]["centre"] == 20 and mapping["x1"]["half_width"] == 10
    assert mapping["x1"]["mapping"] == "z(x1) = (x1 − 20) / 10" and mapping["x2"]["mapping"] == "z(x2) = (x2 + 2) / 2"


def test_readable_formula_stops_at_the_share(tmp_path):
    # In z: f = 30 + 15 T1(z1) + 14 T1(z2) + 5 T1(z1) T1(z2) - T2(z2), variances 112.5, 98, 6.25, 0.5 (sum 217.25):
    # 90 % needs the two linear terms (96.9 %), and they read 30 + 1.5 (x1 - 20) + 7 (x2 + 2) in units.
    data = Dataset(X=np.random.default_rng(0).uniform([10, -4], [30, 0], size=(300, 2)), feature_names=["x1", "x2"])
    e = run(units_model(), data, tmp_path, box=BOX_UNITS, degree=2)
    f = e.details["formulas"][0]
    assert f["n_terms"] == 2 and f["terms"] == ["T1(x1)", "T1(x2)"]
    assert f["share"] == pytest.approx(210.5 / 217.25, rel=1e-9) and f["target"] == 0.9
    assert f["formula"] == "30 + 1.5·(x1 − 20) + 7·(x2 + 2)"
    assert e.metrics["formula_terms"] == 2.0


def test_pca_loadings_are_named_in_the_text(tmp_path):
    from governance.testing.models import as_loaded, digits_dataset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    ds = digits_dataset(300)
    e = run(as_loaded(net, (1, 8, 8)), ds, tmp_path, n_components=4)
    assert e.details["reduction"]["kind"] == "pca"
    # an independent PCA of the same rows: unit loadings, sign chosen so the largest one is positive
    X = ds.X.reshape(len(ds), -1).astype(np.float64)
    _, _, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    defs = {d["coordinate"]: d["definition"] for d in e.tables["coordinate_definitions"]}
    used = {name for f in e.details["formulas"] for m in f["monomials"] for name, _ in m["powers"]}
    assert used and used <= set(defs)
    for name in used:
        j = int(name[2:]) - 1
        w = vt[j] * np.sign(vt[j][np.abs(vt[j]).argmax()])
        top = int(np.abs(w).argmax())
        px = f"px[{top // 8},{top % 8}]"
        assert defs[name].startswith(f"{name} = {w[top]:.2f}·{px}") or defs[name].startswith(f"{name} = {w[top]:.3g}·{px}")
        offset = -w @ X.mean(axis=0)
        assert defs[name].rstrip().split("; ")[0].endswith(f"{'−' if offset < 0 else '+'} {abs(offset):.3g}")
    assert any(name in e.details["formulas"][0]["formula"] for name in used)


# ------------------------------------------------------------------------------------ controls
def test_paired_bootstrap_matches_the_standard_error_of_a_mean_difference():
    from governance_plugins.spectral.controls import paired_bootstrap, resample_counts

    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 4000)
    b = a + rng.normal(0.2, 0.5, 4000)  # paired: the difference has sd 0.5, whatever the spread of a
    counts = resample_counts(len(a), np.random.default_rng(1), draws=400)
    assert np.all(counts.sum(axis=1) == len(a))
    cmp = paired_bootstrap(lambda W: W @ a / len(a), lambda W: W @ b / len(b), counts)
    assert cmp.value == pytest.approx(a.mean()) and cmp.control == pytest.approx(b.mean())
    assert cmp.sd_advantage == pytest.approx((a - b).std() / np.sqrt(len(a)), rel=0.15)
    assert cmp.sd_control == pytest.approx(b.std() / np.sqrt(len(b)), rel=0.15)


def _permuted_copy(module, seed):
    """The randomised-weights control, written out independently: every weight tensor with more than one entry
    gets its entries permuted by torch.randperm from a generator seeded with the run seed, in parameter order."""
    import copy

    clone = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            if p.numel() > 1:
                p.copy_(p.reshape(-1)[torch.randperm(p.numel(), generator=gen)].reshape(p.shape))
    return clone


def _cheb_eval(z, alpha, coef, max_degree=None):
    """sum_alpha c_alpha prod_i T_{alpha_i}(z_i) with numpy's chebval (independent of the plugin's design matrix)."""
    from numpy.polynomial.chebyshev import chebval

    out = np.zeros((len(z), coef.shape[0]))
    for n, a in enumerate(np.asarray(alpha)):
        if max_degree is not None and a.sum() > max_degree:
            continue
        term = np.ones(len(z))
        for i in np.flatnonzero(a):
            term *= chebval(z[:, i], np.eye(int(a[i]) + 1)[int(a[i])])
        out += term[:, None] * coef[:, n][None, :]
    return out


def _r2(y, yhat):
    return float(np.mean(1 - ((y - yhat) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)))


def test_fidelity_controls_hold_the_values_they_claim(tmp_path):
    from governance.host.runtimes.torch_model import TorchModel

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    model = TorchModel(net, ModelVersionInfo(uri="memory:mlp", kind="memory", name="mlp"),
                       TensorSpec("input", (None, 3), "float64"), TensorSpec("output", (None, 3), "float64"))
    X = np.random.default_rng(0).uniform(-2, 2, size=(400, 3))
    e = run(model, Dataset(X=X), tmp_path, box=[(-2.0, 2.0)] * 3, degree=3)
    keys = {(c.metric, c.key) for c in e.controls}
    for where in ("heldout", "data"):
        assert {(f"r2_{where}", k) for k in ("mean", "degree1", "randomised_model")} <= keys
        assert {(f"agreement_{where}", k) for k in ("majority", "degree1", "randomised_model")} <= keys
        assert (f"r2_formula_{where}", "random_terms") in keys
    ctl = {(c.metric, c.key): c for c in e.controls}
    A = e.arrays
    z, y = A["heldout_z"], A["heldout_network"]
    # the held-out outputs really are the network's, at the stored points (box [-2, 2]: x = 2 z)
    np.testing.assert_allclose(y, net(torch.from_numpy(2 * z)).detach().numpy(), atol=1e-12)
    assert ctl[("r2_heldout", "mean")].control_value == pytest.approx(0.0, abs=1e-12)
    assert ctl[("r2_heldout", "degree1")].control_value == pytest.approx(
        _r2(y, _cheb_eval(z, A["alpha"], A["coefficients"], max_degree=1)), abs=1e-10)
    assert ctl[("r2_heldout", "mean")].value == pytest.approx(_r2(y, _cheb_eval(z, A["alpha"], A["coefficients"])), abs=1e-10)
    majority = np.bincount(y.argmax(1), minlength=3).max() / len(y)
    assert ctl[("agreement_heldout", "majority")].control_value == pytest.approx(majority, abs=1e-12)
    # the randomised control: a surrogate of the permuted copy (it fits that copy), scored against this network
    rand = _cheb_eval(z, A["alpha"], A["randomised_coefficients"])
    y_perm = _permuted_copy(net, 0)(torch.from_numpy(2 * z)).detach().numpy()
    y_other = _permuted_copy(net, 1)(torch.from_numpy(2 * z)).detach().numpy()  # another seed: another network
    assert _r2(y_perm, rand) > 0.95 and _r2(y_other, rand) < 0.5
    assert ctl[("r2_heldout", "randomised_model")].control_value == pytest.approx(_r2(y, rand), abs=1e-10)
    assert ctl[("agreement_heldout", "randomised_model")].control_value == pytest.approx(
        float(np.mean(y.argmax(1) == rand.argmax(1))), abs=1e-12)
    for c in e.controls:
        assert c.margin >= 0.01 and "bootstrap" in c.margin_rule or c.key == "random_terms"
    assert e.verdicts()["r2_heldout"] == "informative" and ctl[("r2_heldout", "randomised_model")].control_value < 0.5
    assert "controls: best constant 0.000" in e.findings[0] and "informative" in e.findings[0]
    assert e.details["controls_not_computed"] == [] and "bootstrap" in e.details["controls_text"]


def test_forward_only_model_says_which_control_could_not_be_computed(tmp_path):
    from governance.testing.conformance import ForwardOnlyModel
    from governance.testing.models import as_loaded

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    X = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    e = run(ForwardOnlyModel(as_loaded(net, (3,))), Dataset(X=X), tmp_path)
    assert not any(c.key == "randomised_model" for c in e.controls)
    assert {c.key for c in e.controls if c.metric == "r2_data"} == {"mean", "degree1"}
    (missing,) = e.details["controls_not_computed"]
    assert missing["control"] == "randomised_model" and "forward-only" in missing["reason"]
    assert any(w.startswith("The randomised-weights control could not be computed: the model runs forward-only")
               for w in e.warnings)


# ------------------------------------------------------------------------------------ fallbacks, warned
def test_singular_normal_equations_fall_back_to_least_squares_with_a_note():
    gram = np.array([[1.0, 1.0], [1.0, 1.0]])
    solution, note = F.solve_ridge(gram, np.array([[2.0], [2.0]]), 0.0)
    np.testing.assert_allclose(solution[:, 0], [1.0, 1.0], atol=1e-12)  # the minimum-norm solution of x + y = 2
    assert note is not None and "Cholesky" in note and "rank 1 of 2" in note
    assert F.solve_ridge(gram + np.eye(2), np.ones((2, 1)), 0.0)[1] is None


def test_cholesky_fallback_through_the_method_is_warned(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, 300)
    model = fn_model(lambda x: x[:, 0] + x[:, 1] ** 2, 2)
    e = run(model, Dataset(X=np.stack([x, x], axis=1)), tmp_path, sampling="data", ridge=0.0)  # x2 = x1: collinear
    assert any("Cholesky solve failed" in w and "minimum-norm" in w for w in e.warnings)


def test_omp_selecting_nothing_is_warned_and_constant_r2_is_undefined(tmp_path):
    model = fn_model(lambda x: torch.stack([x[:, 0] - x[:, 1] ** 2, 0 * x[:, 0]], dim=1), 2)
    e = run(model, box_data(2), tmp_path, box=[(-1.0, 1.0)] * 2, coefficients="least_squares", sparsify="omp",
            degree=2, n_samples=200)
    assert any(w.startswith("OMP selected no term for output 1") for w in e.warnings)
    np.testing.assert_array_equal(e.arrays["coefficients"][1], 0.0)
    # output 1 is constant: its R² is undefined (nan), never 0 or 1, and the text says why
    assert np.isnan(e.arrays["r2_heldout"][1]) and np.isnan(e.arrays["r2_data"][1])
    assert e.metrics["r2_heldout"] == pytest.approx(1.0, abs=1e-9)  # the mean over the outputs where R² exists
    assert any("undefined for output 1: the model's output is constant" in w for w in e.warnings)
    assert F.r2_per_output(np.full((5, 1), 2.0), np.full((5, 1), 2.0))[0] != F.r2_per_output(
        np.full((5, 1), 2.0), np.full((5, 1), 2.0))[0]  # nan
    from governance.report.sections import render_method_section

    html = render_method_section(SpectralSurrogate, e.to_dict(), {})
    assert "undefined: the model&#39;s output is constant" in html or "undefined: the model's output is constant" in html


def test_constant_network_everything_undefined(tmp_path):
    model = fn_model(lambda x: 0 * x[:, 0] + 2.0, 2)
    e = run(model, box_data(2), tmp_path, box=[(-1.0, 1.0)] * 2, degree=2)
    assert np.isnan(e.metrics["r2_heldout"]) and np.isnan(e.metrics["r2_data"])
    assert "constant on the box, so every R² is undefined" in e.summary and "output 0 = 2" in e.findings[0]
    assert e.verdicts()["r2_heldout"] == "not informative"
    assert e.details["formulas"][0]["formula"] == "2" and e.details["formulas"][0]["n_terms"] == 0
