"""Bort plugin: the spec's oracles (methods-flint-bort.md B5, O-B1..O-B10), the optimizer API contract, the weight
audit (torch and ONNX), the reconstruction rules, the method end to end and ``governance retrain``."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from governance_plugins.bort.audit import audit_matrix
from governance_plugins.bort.optim import (
    BortAdamW,
    BortSGD,
    bort_correction,
    bort_penalty,
    make_bort_param_groups,
    with_bort,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CI machine has 2 shared cores: one torch thread avoids oversubscription."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gram_dev(w: torch.Tensor) -> float:
    """‖G − I‖_F with G the k×k Gram matrix (W Wᵀ if m <= n else Wᵀ W)."""
    W = w.detach().reshape(w.shape[0], -1).double()
    G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
    return float((G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)).norm())


def zero_loss_steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], n: int) -> None:
    """n steps with the task gradient switched off (loss = 0·sum, so g = 0 exactly)."""
    for _ in range(n):
        opt.zero_grad()
        sum(0 * p.sum() for p in params).backward()
        opt.step()


def oracle_layers(seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Linear(6, 2, bias=False), nn.Linear(2, 6, bias=False), nn.Conv2d(16, 32, 3, bias=False)]


# ============================================================================================ oracles
@pytest.mark.parametrize("index", [0, 1, 2], ids=["linear-2x6", "linear-6x2", "conv-32x144"])
def test_OB1_converges_to_bounded_orthogonal_without_task_gradient(index):
    layer = oracle_layers()[index]
    opt = BortSGD(layer.parameters(), lr=0.1, gamma=1.0, amplitude=1.0)
    zero_loss_steps(opt, [layer.weight], 200)
    assert gram_dev(layer.weight) <= 1e-4


def test_OB2_singular_values_follow_the_scalar_recursion():
    gen = torch.Generator().manual_seed(3)
    W0 = torch.randn(16, 64, generator=gen, dtype=torch.float64) / 8.0  # N(0, 1/64): sigma in [0.5, 1.5]
    U, S, Vh = torch.linalg.svd(W0, full_matrices=False)
    w = nn.Parameter(W0.clone())
    opt = BortSGD([w], lr=0.1, gamma=1.0)  # eta*gamma = 0.1, c = 1
    zero_loss_steps(opt, [w], 30)
    phi = S.clone()
    for _ in range(30):
        phi = phi - 0.1 * phi * (phi ** 2 - 1)
    expected = U @ torch.diag(phi) @ Vh
    assert float((w.detach() - expected).abs().max()) <= 1e-12
    got = torch.sort(torch.linalg.svdvals(w.detach())).values
    assert float((got - torch.sort(phi.abs()).values).abs().max()) <= 1e-12


@pytest.mark.parametrize("shape,scale,c", [((16, 64), 1.0, 1.0), ((64, 16), 1.0, 1.0), ((32, 8, 3, 3), 0.3, 1.0),
                                            ((12, 20), 1.0, 2.5), ((64, 576), 10.0, 1.0)])
def test_OB3_correction_is_the_gradient_of_the_penalty(shape, scale, c):
    gen = torch.Generator().manual_seed(1)
    W = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    (grad,) = torch.autograd.grad(bort_penalty(W, c), W)
    delta = bort_correction(W.detach(), c)
    assert delta.dtype == torch.float64 and delta.shape == W.shape
    assert float((delta - grad).abs().max()) <= 1e-12 * float(delta.abs().max())
    if scale <= 1.0:
        assert float((delta - grad).abs().max()) <= 1e-10


def test_OB3_both_gram_forms_have_the_same_gradient():
    W = torch.randn(7, 11, dtype=torch.float64, requires_grad=True)
    wide = 0.25 * (W @ W.T - torch.eye(7, dtype=W.dtype)).square().sum()
    tall = 0.25 * (W.T @ W - torch.eye(11, dtype=W.dtype)).square().sum()
    g1, g2 = torch.autograd.grad(wide, W)[0], torch.autograd.grad(tall, W)[0]
    assert torch.allclose(g1, g2, rtol=0, atol=1e-12)


def test_OB4_weight_decay_fixed_points_match_the_closed_forms():
    eta, lam, gamma, c = 0.1, 0.1, 1.0, 1.0
    closed_a = (c - lam / (gamma * (1 - eta * lam))) / (1 - eta * lam) ** 2
    assert closed_a == pytest.approx(0.917243, abs=5e-7)
    for cls, expected, tol in ((BortSGD, c - lam / gamma, 1e-6), (BortAdamW, 0.917243, 1e-5)):
        for layer in oracle_layers()[::2]:  # the 2x6 linear and the 32x144 conv
            opt = cls(layer.parameters(), lr=eta, gamma=gamma, weight_decay=lam)
            zero_loss_steps(opt, [layer.weight], 2000)
            s2 = torch.linalg.svdvals(layer.weight.detach().reshape(layer.weight.shape[0], -1).double()) ** 2
            assert float((s2 - expected).abs().max()) <= tol, (cls.__name__, s2)


def test_OB4_default_adamw_weight_decay_moves_the_fixed_point():
    layer = oracle_layers()[0]
    opt = BortAdamW(layer.parameters(), lr=0.1, gamma=1.0)  # torch's default weight_decay 1e-2
    zero_loss_steps(opt, [layer.weight], 2000)
    s2 = torch.linalg.svdvals(layer.weight.detach().double()) ** 2
    assert float((s2 - 0.991973).abs().max()) <= 1e-5


def test_OB5_momentum_still_converges():
    torch.manual_seed(0)
    layer = nn.Linear(64, 16, bias=False)
    opt = BortSGD(layer.parameters(), lr=0.1, momentum=0.9, gamma=1.0)
    zero_loss_steps(opt, [layer.weight], 200)
    assert gram_dev(layer.weight) <= 1e-3
    zero_loss_steps(opt, [layer.weight], 800)
    assert gram_dev(layer.weight) <= 1e-5


def test_OB6_adaptive_amplitude_gives_orthogonal_rows_of_equal_norm():
    torch.manual_seed(0)
    layer = nn.Linear(64, 16, bias=False)
    opt = BortSGD(layer.parameters(), lr=0.1, gamma=1.0, amplitude="ada")
    zero_loss_steps(opt, [layer.weight], 3000)
    W = layer.weight.detach().double()
    G = W @ W.T
    diag = torch.diagonal(G)
    off = G - torch.diag(diag)
    assert float(off.abs().max()) <= 1e-6 * float(diag.mean())
    assert float(diag.std() / diag.mean()) <= 1e-6


def test_OB6_ada_refuses_tall_weights():
    with pytest.raises(ValueError, match="tall"):
        BortSGD(nn.Linear(4, 16).parameters(), lr=0.1, gamma=1.0, amplitude="ada")


def _replay(opt_factory, n_steps: int = 200, seed: int = 0, device: str = "cpu"):
    """Run an optimizer on fixed parameters with a fixed gradient sequence; return the final tensors."""
    gen = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(8, 12, generator=gen).to(device))
    b = nn.Parameter(torch.randn(8, generator=gen).to(device))
    grads = [(torch.randn(8, 12, generator=gen).to(device), torch.randn(8, generator=gen).to(device))
             for _ in range(n_steps)]
    opt = opt_factory([w, b])
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    return w.detach().clone(), b.detach().clone(), opt


SGD_SETTINGS = [dict(lr=0.05), dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
                dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.5, dampening=0.1, maximize=True)]
ADAMW_SETTINGS = [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, amsgrad=True), dict(lr=1e-2, betas=(0.8, 0.99), maximize=True)]


@pytest.mark.parametrize("kw", SGD_SETTINGS)
def test_OB7_gamma_zero_is_torch_sgd_bit_for_bit(kw):
    ref = _replay(lambda p: torch.optim.SGD(p, foreach=False, **kw))
    with pytest.warns(UserWarning, match="switched off"):
        got = _replay(lambda p: BortSGD(p, gamma=0.0, **kw))
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize("kw", ADAMW_SETTINGS)
def test_OB7_gamma_zero_is_torch_adamw_bit_for_bit(kw):
    ref = _replay(lambda p: torch.optim.AdamW(p, foreach=False, **kw))
    with pytest.warns(UserWarning, match="switched off"):
        got = _replay(lambda p: BortAdamW(p, gamma=0.0, **kw))
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_OB8_untouched_groups_and_1d_parameters_evolve_as_the_base(kind):
    """The bias (1-D, in the constrained group) and a gamma=0 group behave exactly like the base optimizer."""
    base = (lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, weight_decay=1e-2, foreach=False)) if kind == "sgd" \
        else (lambda g: torch.optim.AdamW(g, lr=1e-2, weight_decay=0.1, foreach=False))
    bort = (lambda g: BortSGD(g, lr=0.05, momentum=0.9, weight_decay=1e-2, gamma=1.0)) if kind == "sgd" \
        else (lambda g: BortAdamW(g, lr=1e-2, weight_decay=0.1, gamma=1.0))
    gen = torch.Generator().manual_seed(4)
    init = [torch.randn(8, 12, generator=gen) * 0.3, torch.randn(8, generator=gen), torch.randn(5, 8, generator=gen)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(100)]
    runs = []
    for factory, groups_of in ((base, lambda ps: [{"params": ps[:2]}, {"params": ps[2:]}]),
                               (bort, lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "gamma": 0.0}])):
        ps = [nn.Parameter(t.clone()) for t in init]
        opt = factory(groups_of(ps))
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        runs.append([p.detach() for p in ps])
    (w0, b0, v0), (w1, b1, v1) = runs
    assert torch.equal(b0, b1), "the 1-D bias must not be constrained"
    assert torch.equal(v0, v1), "the gamma=0 group must be untouched"
    assert not torch.equal(w0, w1), "the constrained weight must differ"


def test_OB9_stability_guard_warns_then_raises():
    torch.manual_seed(0)
    layer = nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        U, S, Vh = torch.linalg.svd(layer.weight, full_matrices=False)
        layer.weight.copy_(U @ torch.diag(S / S.max() * 5.0) @ Vh)  # sigma_max = 5 > sqrt(21)
    opt = BortSGD(layer.parameters(), lr=0.1, gamma=1.0)
    with pytest.warns(UserWarning, match=r"sigma_max\^2 = 25"):
        zero_loss_steps(opt, [layer.weight], 1)
    with pytest.raises(FloatingPointError, match="non-finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zero_loss_steps(opt, [layer.weight], 9)


@pytest.mark.parametrize("s", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_OB10_audit_of_a_scaled_orthogonal_matrix(s, shape):
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((max(shape), max(shape))))
    W = s * Q[: shape[0], : shape[1]]  # a scaled partial isometry (rows or columns orthonormal)
    a = audit_matrix(W, amplitude=1.0)
    assert a.d_orth == pytest.approx(0.0, abs=1e-12)
    assert a.kappa == pytest.approx(1.0, abs=1e-9)
    assert a.d_abs == pytest.approx(abs(s ** 2 - 1.0), abs=1e-12)
    assert (a.d_abs < 1e-9) == (s == 1.0)  # scale-free distance 0 either way, absolute only at s^2 = c


def test_OB10_audit_of_diag_1_2():
    a = audit_matrix(np.diag([1.0, 2.0]))
    assert a.kappa == pytest.approx(2.0, abs=1e-12)
    assert a.d_orth == pytest.approx(0.6, abs=1e-12)
    assert a.row_norm_max == pytest.approx(2.0) and a.row_norm_min == pytest.approx(1.0)
    assert not a.within_bounds  # row 2 has ‖w‖² = 4 > 1.1·c


def test_audit_rank_deficient_and_amplitude():
    a = audit_matrix(np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    assert math.isinf(a.kappa)
    b = audit_matrix(np.sqrt(2.0) * np.eye(3), amplitude=2.0)
    assert b.d_abs == pytest.approx(0.0, abs=1e-12) and b.within_bounds


def test_boundedness_is_two_sided_on_the_gram_diagonal():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    wide, tall = Q[:4], Q[:, :4]  # orthonormal rows / orthonormal columns
    for s2, inside in ((1.0, True), (1.08, True), (0.95, True), (0.85, False), (1.2, False), (1 / 3, False)):
        assert audit_matrix(np.sqrt(s2) * wide).within_bounds is inside, s2
        assert audit_matrix(np.sqrt(s2) * tall).within_bounds is inside, s2  # columns carry the bound when tall
    a = audit_matrix(np.sqrt(0.85) * tall)
    assert a.norm_sq_min == pytest.approx(0.85) and a.norm_dev_max == pytest.approx(0.15)
    torch.manual_seed(0)
    untrained = nn.Linear(64, 16).weight.detach().numpy()  # torch init: squared row norms about 1/3
    assert audit_matrix(untrained).row_norm_max ** 2 <= 1.1  # the old one-sided test passed it
    assert not audit_matrix(untrained).within_bounds


def test_band_positions_follow_the_rule():
    """The band is the 99.9 % prediction interval of one more draw (Student's t), at least 10 % of the mean."""
    from scipy.stats import t

    from governance_plugins.bort.reference import Band

    draws = [0.9, 1.1] * 5  # mean 1
    sd = float(np.std(draws, ddof=1))
    margin = t.ppf(0.9995, 9) * math.sqrt(1 + 1 / 10) * sd  # 0.5286
    band = Band.of(draws)
    assert band.mean == pytest.approx(1.0) and band.sd == pytest.approx(sd) and band.margin == pytest.approx(margin)
    lo, hi = 1 - margin, 1 + margin
    assert [band.position(v) for v in (lo - 1e-3, lo + 1e-3, hi - 1e-3, hi + 1e-3)] == \
        ["closer", "within", "within", "further"]
    assert band.position(hi + 1e-3, better="higher") == "closer"
    tight = Band.of([2.0, 2.0, 2.0])  # no spread: the floor, 10 % of the mean
    assert tight.margin == pytest.approx(0.2) and tight.position(1.79) == "closer" and tight.position(1.81) == "within"
    assert Band.of([0.5, 0.52, 0.48]).margin > 3 * 0.02 * 10  # three draws: a wide band, not a falsely tight one


def _independent_d_orth(W: np.ndarray) -> float:
    """D_orth from singular values (numpy's svd), written from spec B6.1."""
    s2 = np.linalg.svd(W, compute_uv=False) ** 2
    return float(np.sqrt(np.mean((s2 / s2.mean() - 1.0) ** 2)))


@pytest.mark.parametrize("widths", [(1024, 32, 10), (64, 32, 16, 10)], ids=["1024-32-10", "64-32-16-10"])
def test_random_reference_matches_an_independent_estimate(widths):
    """The reference is the D_orth of torch-initialised weights of the same shapes: compared with 40 fresh
    nn.Linear initialisations audited by SVD in the test. The two shapes' references differ by a factor of 4, so no
    single absolute threshold can stand in for them."""
    from governance_plugins.bort.audit import Split
    from governance_plugins.bort.layers import LayerWeight
    from governance_plugins.bort.reference import RandomReference

    shapes = [(o, i) for i, o in zip(widths[:-1], widths[1:])]
    layers = [LayerWeight(f"{k}.weight", "linear", s, np.zeros(s)) for k, s in enumerate(shapes)]
    split = Split(constrained=tuple(range(len(shapes) - 1)), classifier=len(shapes) - 1)
    ref = RandomReference.build(layers, split, seed=3, draws=5, amplitude=1.0, row_tolerance=0.1)
    hidden = shapes[:-1]
    draws = []
    for seed in range(40):
        torch.manual_seed(100 + seed)
        mats = [nn.Linear(n, m).weight.detach().double().numpy() for m, n in hidden]
        draws.append(np.average([_independent_d_orth(W) for W in mats], weights=[W.size for W in mats]))
    band = ref.band("d_orth_constrained_mean")
    assert abs(band.mean - np.mean(draws)) <= 3 * np.std(draws) / math.sqrt(5) + 1e-3
    assert band.sd == pytest.approx(np.std(draws), rel=0.8)
    expected = {(1024, 32, 10): 0.177, (64, 32, 16, 10): 0.70}[widths]
    assert np.mean(draws) == pytest.approx(expected, abs=0.02)


# ============================================================================================ API
@pytest.mark.parametrize("factory", [
    lambda p: BortSGD(p, lr=0.1),
    lambda p: BortAdamW(p, lr=0.1),
    lambda p: with_bort(torch.optim.RMSprop, "coupled")(p, lr=0.1),
    lambda p: BortSGD([{"params": p, "lr": 0.1}]),
])
def test_strength_has_no_default(factory):
    with pytest.raises(TypeError, match=r"gamma.*default 0|default gamma=0"):
        factory(list(nn.Linear(3, 3).parameters()))


def test_strength_missing_in_one_group_is_an_error_but_explicit_zero_is_allowed():
    lin, other = nn.Linear(4, 4), nn.Linear(4, 4)
    with pytest.raises(TypeError, match="gamma"):
        BortSGD([{"params": lin.parameters(), "gamma": 0.1}, {"params": other.parameters()}], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "switched off" warning: one group is constrained
        opt = BortSGD([{"params": lin.parameters(), "gamma": 0.1}, {"params": other.parameters(), "gamma": 0}], lr=0.1)
    assert [g["gamma"] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(ValueError, match=">= 0"):
        BortAdamW(lin.parameters(), gamma=-1.0)
    with pytest.raises(ValueError, match="mode"):
        BortAdamW(lin.parameters(), gamma=1.0, mode="l1-fullrow")
    with pytest.raises(TypeError, match="gamma"):
        make_bort_param_groups(lin)


def test_biases_and_1d_parameters_are_excluded_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = BortSGD(model.parameters(), lr=0.1, gamma=1.0)  # one group: everything, gamma 1
    zero_loss_steps(opt, list(model.parameters()), 5)
    after = model.state_dict()
    for name in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["0.weight"], after["0.weight"])


def test_make_bort_param_groups_follows_the_authors_selection():
    from governance.testing.models import digits_cnn

    model = digits_cnn()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = make_bort_param_groups(model, gamma=0.5)
    assert [names[id(p)] for p in groups[0]["params"]] == ["0.weight", "4.weight"]  # classifier 7 excluded
    assert groups[0]["gamma"] == 0.5 and groups[1]["gamma"] == 0.0
    assert {names[id(p)] for p in groups[1]["params"]} == {"0.bias", "1.weight", "1.bias", "4.bias", "7.weight", "7.bias"}
    with_cls = make_bort_param_groups(model, gamma=0.5, exclude_classifier=False, exclude=["0"])
    assert [names[id(p)] for p in with_cls[0]["params"]] == ["4.weight", "7.weight"]
    tall = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 32), nn.Linear(32, 8))
    ada = make_bort_param_groups(tall, gamma=1.0, amplitude="ada")  # tall weights (16x4, 32x16) left free
    assert [tuple(p.shape) for p in ada[0]["params"]] == [(8, 32)]
    BortSGD(ada, lr=0.1)


def _delta(W: torch.Tensor) -> torch.Tensor:
    """Bort's correction written from spec B2.2, independently of the plugin: W W^T W - c W with c = 1."""
    M = W.reshape(W.shape[0], -1)
    return (M @ M.T @ M - M).reshape(W.shape)


def _reference_bort_adamw_step(params, constrained, state, lr, gamma, wd, betas=(0.9, 0.999), eps=1e-8):
    """One BortAdamW step written from spec B2.4 (decay, then the Bort step on the decayed weight, then Adam)."""
    out = []
    for p in params:
        st = state.get(p)
        x = p.detach().clone() * (1 - lr * wd)
        if any(p is c for c in constrained):
            x = x - lr * gamma * _delta(x)
        if st is not None:
            t = float(st["step"]) + 1
            m = betas[0] * st["exp_avg"] + (1 - betas[0]) * p.grad
            v = betas[1] * st["exp_avg_sq"] + (1 - betas[1]) * p.grad * p.grad
            x = x - lr / (1 - betas[0] ** t) * m / (v.sqrt() / math.sqrt(1 - betas[1] ** t) + eps)
        out.append(x)
    return out


def test_state_dict_round_trip_resumes_exactly_with_the_correction_on():
    def make(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(10)]

    def train(model, opt, data):
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    a = make()
    opt_a = BortAdamW(make_bort_param_groups(a, gamma=2.0, exclude_classifier=False), lr=1e-2)
    train(a, opt_a, batches[:5])
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)  # a real checkpoint: no tensors shared with opt_a
    buffer.seek(0)
    state = torch.load(buffer)
    b, plain_model = make(), make()
    b.load_state_dict(a.state_dict())
    plain_model.load_state_dict(a.state_dict())
    opt_b = BortAdamW(make_bort_param_groups(b, gamma=7.0, exclude_classifier=False), lr=0.5)
    opt_b.load_state_dict(state)
    assert opt_b.param_groups[0]["gamma"] == 2.0 and opt_b.param_groups[0]["lr"] == 1e-2
    # the first step after loading is a Bort step, value for value (spec B2.4 written out in the test)
    x, y = batches[5]
    opt_b.zero_grad()
    nn.functional.cross_entropy(b(x), y).backward()
    params = list(b.parameters())
    constrained = [p for p in opt_b.param_groups[0]["params"] if p.ndim >= 2]
    expected = _reference_bort_adamw_step(params, constrained, opt_b.state, lr=1e-2, gamma=2.0, wd=1e-2)
    opt_b.step()
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    train(a, opt_a, batches[5:6])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    train(a, opt_a, batches[6:])
    train(b, opt_b, batches[6:])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # ... and not what plain AdamW makes of the same checkpoint
    plain = torch.optim.AdamW([{"params": [plain_model[0].weight, plain_model[2].weight]},
                               {"params": [plain_model[0].bias, plain_model[2].bias]}], lr=1e-2)
    plain.load_state_dict(state)
    train(plain_model, plain, batches[5:])
    assert float((plain_model[0].weight - b[0].weight).detach().abs().max()) > 1e-3
    assert gram_dev(b[0].weight) < gram_dev(plain_model[0].weight)
    # the layout is torch AdamW's: checkpoints move between the two
    per_param = next(iter(state["state"].values()))
    assert set(per_param) == {"step", "exp_avg", "exp_avg_sq"}
    resumed = BortAdamW(a.parameters(), lr=1e-2, gamma=3.0)
    resumed.load_state_dict(torch.optim.AdamW(a.parameters(), lr=1e-2).state_dict())
    assert resumed.param_groups[0]["gamma"] == 3.0  # a plain checkpoint keeps the Bort settings


def test_optimizer_survives_pickling_with_the_correction_on():
    import copy
    import pickle

    lin = nn.Linear(4, 6)
    opt = BortAdamW(lin.parameters(), lr=0.1, gamma=0.5, check_finite=False)
    zero_loss_steps(opt, list(lin.parameters()), 2)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.param_groups[0]["gamma"] == 0.5 and clone._bort_check_finite is False
        w, b = clone.param_groups[0]["params"]
        before_w, before_b = w.detach().clone(), b.detach().clone()
        for p in (w, b):
            p.grad = torch.zeros_like(p)
        clone.step()  # zero gradient, empty Adam moments: the step is decay + the Bort correction only
        decayed = before_w * (1 - 0.1 * 1e-2)
        torch.testing.assert_close(w.detach(), decayed - 0.1 * 0.5 * _delta(decayed), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(b.detach(), before_b * (1 - 0.1 * 1e-2), rtol=0, atol=1e-7)
        assert float((w.detach() - decayed).abs().max()) > 1e-3  # the correction moved the weight
        clone.add_param_group({"params": [nn.Parameter(torch.randn(3, 3))]})  # inherits gamma 0.5
        assert clone.param_groups[1]["gamma"] == 0.5


def test_sgd_state_dict_has_torch_layout():
    lin = nn.Linear(4, 4)
    opt = BortSGD(lin.parameters(), lr=0.1, momentum=0.9, gamma=0.1)
    zero_loss_steps(opt, list(lin.parameters()), 2)
    assert all(set(s) == {"momentum_buffer"} for s in opt.state_dict()["state"].values())
    torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9).load_state_dict(opt.state_dict())


def test_schedulers_drive_the_bort_step():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 10) * 0.3)
    opt = BortAdamW([w], lr=0.1, gamma=1.0, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler stepped before optimizer" warning
        for expected_lr in (0.1, 0.05, 0.025):
            assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr)
            before = w.detach().clone()
            w.grad = torch.zeros_like(w)
            opt.step()
            assert torch.allclose(w.detach(), before - expected_lr * bort_correction(before), atol=1e-7)
            sched.step()
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(BortSGD([w], lr=0.1, momentum=0.9, gamma=0.1), max_lr=0.1,
                                                    total_steps=5)
    for _ in range(5):
        w.grad = torch.zeros_like(w)
        one_cycle.optimizer.step()
        one_cycle.step()


def test_with_bort_recipe_matches_the_dedicated_classes():
    coupled = with_bort(torch.optim.SGD, "coupled")
    decoupled = with_bort(torch.optim.Adam, "decoupled")
    assert issubclass(coupled, torch.optim.SGD) and coupled.__name__ == "BortSGD"
    for ref_f, got_f in (
        (lambda p: BortSGD(p, lr=0.05, momentum=0.9, gamma=0.3), lambda p: coupled(p, lr=0.05, momentum=0.9, gamma=0.3)),
        (lambda p: BortAdamW(p, lr=1e-2, weight_decay=0.0, gamma=0.3), lambda p: decoupled(p, lr=1e-2, gamma=0.3)),
    ):
        ref, got = _replay(ref_f, 50), _replay(got_f, 50)
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    with pytest.raises(ValueError, match="coupling"):
        with_bort(torch.optim.SGD, "both")
    with pytest.raises(ValueError, match="fused"):
        decoupled(nn.Linear(3, 3).parameters(), gamma=1.0, fused=True)


def test_coupled_form_leaves_the_gradient_untouched():
    w = nn.Parameter(torch.randn(4, 8) / 4)
    g = torch.randn(4, 8)
    w.grad = g.clone()
    BortSGD([w], lr=0.1, gamma=1.0).step()
    assert torch.equal(w.grad, g)


def test_importing_the_plugin_does_not_import_torch():
    code = ("import sys, governance_plugins.bort as b; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'numpy' not in sys.modules, 'numpy imported'; b.BortSGD; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ============================================================================================ audit on models
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 12, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4 * 4, 10)).eval()


def mlp() -> nn.Module:
    from governance.testing.models import tabular_mlp

    torch.manual_seed(0)
    return tabular_mlp().eval()


@pytest.mark.parametrize("build,shape", [(mlp, (30,)), (small_cnn, (1, 8, 8))], ids=["mlp", "cnn"])
def test_onnx_and_torch_audits_agree(build, shape, tmp_path):
    from governance.testing.models import as_loaded, as_onnx_loaded
    from governance_plugins.bort.method import BortAudit

    module = build()
    cfg = BortAudit.parse_config({})
    t, o = BortAudit._audit_model(as_loaded(module, shape), cfg), BortAudit._audit_model(
        as_onnx_loaded(module, shape, tmp_path), cfg)
    t_audits, o_audits = t.audits, o.audits
    assert t.roles_from == "torch module types" and o.roles_from == "ONNX graph operators"
    assert t.split == o.split and t.split.classifier == len(t_audits) - 1
    assert [a.name for a in t_audits] == [a.name for a in o_audits]
    for a, b in zip(t_audits, o_audits):
        assert (a.m, a.n) == (b.m, b.n)
        for key in ("d_orth", "d_abs", "kappa", "row_norm_max", "row_norm_min"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-6), (a.name, key)


def test_onnx_matmul_weights_are_transposed_to_rows_per_unit(tmp_path):
    """An ONNX MatMul stores [in, out]: the audit must see [out, in] (row norms are per output unit)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from governance.host.runtimes.onnx_model import OnnxModel
    from governance_plugins.bort.layers import model_roles, extract_layers

    W = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32).T  # stored [in=3, out=2]... transposed: [3, 2]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
                              [numpy_helper.from_array(W, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = OnnxModel.from_path(path)
    roles, _ = model_roles(model)
    (layer,), _ = extract_layers(model.parameters(), roles)
    assert layer.matrix.shape == (2, 3)
    assert audit_matrix(layer.matrix).row_norm_max == pytest.approx(3.0)


def test_layer_roles_of_a_torch_export_graph():
    from governance.testing.models import digits_cnn
    from governance_plugins.bort.layers import roles_from_torch

    gm = torch.export.export(digits_cnn().eval(), (torch.zeros(2, 1, 8, 8),)).module()
    roles = roles_from_torch(gm)
    assert {k: r.kind for k, r in roles.items()} == {"0.weight": "conv", "4.weight": "conv", "7.weight": "linear"}
    groups = make_bort_param_groups(gm, gamma=1.0)
    assert len(groups[0]["params"]) == 2  # both convolutions; the classifier 7 is excluded


# ============================================================================================ reconstruction
def _step(name: str, module: nn.Module, x: torch.Tensor):
    from governance_plugins.bort.tracing import Step, op_from_module

    return Step(name, op_from_module(module), x, module(x))


def test_transpose_inverse_is_exact_for_bounded_orthogonal_layers():
    from governance_plugins.bort.tracing import invert_step

    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    # wide: orthogonal rows of unequal norms; x in the row space is recovered exactly
    wide = nn.Linear(12, 5).double()
    wide.weight.data = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)) @ Q[:5]
    x = torch.randn(7, 5, dtype=torch.float64) @ Q[:5]
    assert torch.allclose(invert_step(_step("w", wide, x), wide(x)), x, atol=1e-12)
    # tall scaled isometry (W^T W = 4 I): every input is recovered
    tall = nn.Linear(5, 12, bias=False).double()
    tall.weight.data = 2.0 * Q[:, :5]
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(invert_step(_step("t", tall, x), tall(x)), x, atol=1e-12)
    # non-overlapping conv whose 4 filters are an orthonormal basis of 2x2 patches: exact inverse
    conv = nn.Conv2d(1, 4, 2, stride=2).double()
    Q4, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    conv.weight.data = Q4.reshape(4, 1, 2, 2)
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(invert_step(_step("c", conv, x), conv(x)), x, atol=1e-12)
    # eval-mode batch norm is inverted exactly
    bn = nn.BatchNorm2d(3).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(invert_step(_step("bn", bn, x), bn(x)), x, atol=1e-12)


def test_overlapping_conv_reconstruction_averages_patches():
    """3x3 'same' conv whose 9 filters are the standard basis: every patch is copied, the overlap-average is x."""
    from governance_plugins.bort.tracing import invert_step

    conv = nn.Conv2d(1, 9, 3, padding=1, bias=False).double()
    conv.weight.data = torch.eye(9, dtype=torch.float64).reshape(9, 1, 3, 3)
    x = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    xh = invert_step(_step("c", conv, x), conv(x))
    # border pixels average in zero padding they never saw; interior pixels are exact
    assert torch.allclose(xh[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1], atol=1e-12)


def _export(module: nn.Module, sample_shape: tuple[int, ...]):
    """A torch.export graph with a dynamic batch, as MLflow's pt2 format stores it."""
    ex = torch.zeros(2, *sample_shape)
    return torch.export.export(module, (ex,), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()


def test_chain_detection_and_traceback_shapes():
    from governance.testing.resnet import resnet18_shaped
    from governance_plugins.bort.tracing import record, traceback

    cnn = small_cnn()
    x = torch.rand(4, 1, 8, 8)
    for module in (cnn, _export(cnn, (1, 8, 8))):
        rec = record(module, x)
        assert rec.problem is None
        assert traceback(rec.steps, len(rec.steps) - 2, rec.steps[-2].out).shape == x.shape
    res = resnet18_shaped(num_classes=10, width=8).eval()
    xr = torch.rand(2, 3, 32, 32)
    assert "residual" in record(res, xr).problem
    assert "residual" in record(_export(res, (3, 32, 32)), xr).problem


def _reference_traceback(model: nn.Sequential, x: torch.Tensor) -> tuple[float, float]:
    """Spec B3.1 for Linear-ReLU-Linear-ReLU-Linear, written out: (mean relative error of the input traced back
    from the first ReLU, from the second ReLU)."""
    def inverse(lin: nn.Linear, z: torch.Tensor) -> torch.Tensor:
        W, b = lin.weight.detach(), lin.bias.detach()
        m, n = W.shape
        if m <= n:  # wide: W^T diag(1/|w_i|^2) (z - b)
            return ((z - b) / W.square().sum(1)) @ W
        return (z - b) @ W / (W.square().sum() / n)  # tall: W^T (z - b) / s

    h1 = torch.relu(model[0](x))
    h2 = torch.relu(model[2](h1))
    rel = lambda xh: float(((x - xh).norm(dim=1) / x.norm(dim=1)).mean().detach())  # noqa: E731
    return rel(inverse(model[0], h1)), rel(inverse(model[0], inverse(model[2], h2)))


def test_traceback_matches_an_independent_reference():
    """A tall first layer (24x20) and a wide second one (8x24): both inverse rules, through nn.Module hooks and
    through a torch.export graph."""
    from governance_plugins.bort.reconstruction import trace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 24), nn.ReLU(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(32, 20, dtype=torch.float64)
    first, second = _reference_traceback(model, x)
    assert 0.3 < first < second < 1.5  # a real, non-trivial reconstruction error
    for module in (model, _export(model, (20,))):
        tr = trace(module, x, None)
        assert tr.chain and tr.saliency_layer == "3"
        assert tr.rel_error == pytest.approx(second, rel=1e-9)
        assert [r["tap"] for r in tr.tap_rows] == ["1", "3"]
        assert [r["rel_error"] for r in tr.tap_rows] == pytest.approx([first, second], rel=1e-9)
    # an exact case: orthonormal tall layers without activations reconstruct the input to rounding error
    Q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    iso = nn.Sequential(nn.Linear(10, 30, bias=False), nn.Linear(30, 4, bias=False)).double()
    iso[0].weight.data = 3.0 * Q[:, :10]
    assert trace(iso, x[:, :10], "0").rel_error < 1e-12


def test_export_graph_traceback_equals_the_module_traceback():
    """Batch norm, pooling, flatten: the pt2 graph (aten operators) traces back exactly like the nn.Module."""
    from governance.testing.models import digits_cnn
    from governance_plugins.bort.tracing import record, traceback

    torch.manual_seed(0)
    cnn = digits_cnn().eval()
    with torch.no_grad():
        cnn[1].running_mean.uniform_(-0.5, 0.5)
        cnn[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(5, 1, 8, 8)
    a, b = record(cnn, x), record(_export(cnn, (1, 8, 8)), x)
    assert [s.op.kind for s in b.steps] == ["conv", "norm", "activation", "pool", "conv", "activation", "reshape",
                                            "linear"]
    assert [s.name for s in a.steps] == [s.name for s in b.steps]
    with torch.no_grad():
        for tap in range(len(a.steps) - 1):
            got, want = traceback(b.steps, tap, b.steps[tap].out), traceback(a.steps, tap, a.steps[tap].out)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _reference_deletion_insertion(forward, X: np.ndarray, saliency: np.ndarray, seed: int, steps: int = 20):
    """Deletion/insertion of whole pixels to a zero baseline, predicted-class softmax, trapezoid AUC (RISE),
    written out per image; ties in the ranking are broken by the documented random draw of the given seed. Step k
    moves floor(k * P / steps) pixels and the x-axis is the share actually moved (issue 15's step rule)."""
    n, P = len(X), saliency[0].size
    tiebreak = np.random.default_rng(seed).random((n, P))
    order = np.lexsort((tiebreak, -saliency.reshape(n, P)), axis=1)
    counts = np.array([k * P // steps for k in range(steps + 1)])
    pred = forward(X).argmax(1)
    aucs = []
    for i in range(n):
        curves = {"deletion": [], "insertion": []}
        for k in counts:
            mask = np.zeros(P, bool)
            mask[order[i, :k]] = True
            mask = mask.reshape(X.shape[2:])
            deleted = np.where(mask, 0.0, X[i]).astype(X.dtype)
            inserted = np.where(mask, X[i], 0.0).astype(X.dtype)
            logits = forward(np.stack([deleted, inserted]))
            p = np.exp(logits - logits.max(1, keepdims=True))
            p = p[:, pred[i]] / p.sum(1)
            curves["deletion"].append(p[0])
            curves["insertion"].append(p[1])
        x = counts / P
        aucs.append([np.trapezoid(curves["deletion"], x), np.trapezoid(curves["insertion"], x)])
    return np.mean(aucs, axis=0)


# ============================================================================================ method
def _bort_trained(base: nn.Module, X: torch.Tensor, y: torch.Tensor, gamma: float = 60.0, epochs: int = 6) -> nn.Module:
    import copy

    model = copy.deepcopy(base).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = BortAdamW(make_bort_param_groups(model, gamma=gamma), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = perm[i: i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_pair():
    """(baseline CNN, Bort-fine-tuned copy, dataset): small, trained in about a second."""
    from governance.testing.models import digits_dataset, train

    ds = digits_dataset(600)
    torch.manual_seed(0)
    base = train(small_cnn().train(), ds, epochs=6, lr=3e-3)
    bort = _bort_trained(base, torch.from_numpy(ds.X), torch.from_numpy(ds.y))
    return base, bort, ds


def test_bort_training_makes_the_constrained_layers_bounded_orthogonal(digits_pair):
    from governance_plugins.bort.retrain import audit_module

    base, bort, ds = digits_pair
    rows_base = {r["name"]: r for r in audit_module(base)[0]}
    rows_bort = {r["name"]: r for r in audit_module(bort)[0]}
    for name in ("0.weight", "3.weight"):  # the two convolutions (the classifier 6 is left free)
        assert rows_bort[name]["d_orth"] < 0.1 < rows_base[name]["d_orth"]
        assert rows_bort[name]["d_abs"] < 0.1
    X, y = torch.from_numpy(ds.X), torch.from_numpy(ds.y)
    with torch.no_grad():
        acc = [(m(X).argmax(1) == y).float().mean().item() for m in (base, bort)]
    assert acc[1] > acc[0] - 0.05  # the constraint costs little accuracy here


def _explain(model, ds, tmp_path, config=None, peers=(), seed=0):
    from governance.contract.method import MethodContext
    from governance_plugins.bort.method import BortAudit

    ctx = MethodContext(model=model, data=ds, config=BortAudit.parse_config(config or {}), seed=seed,
                        workdir=tmp_path, peers=list(peers))
    return BortAudit().explain(ctx)


def _weighted_d_orth(module: nn.Module, names: list[str]) -> float:
    mats = [dict(module.named_parameters())[n].detach().double().reshape(
        dict(module.named_parameters())[n].shape[0], -1).numpy() for n in names]
    return float(np.average([_independent_d_orth(W) for W in mats], weights=[W.size for W in mats]))


def test_method_explains_a_bort_model_against_its_baseline(digits_pair, tmp_path):
    from governance.report.sections import render_method_section
    from governance.testing.models import as_loaded
    from governance_plugins.bort.method import BortAudit

    base, bort, ds = digits_pair
    model = as_loaded(bort, (1, 8, 8), name="digits-bort")
    model.info.tags.update({"governance.bort.optimizer": "BortAdamW", "governance.bort.gamma": "60"})
    peer = as_loaded(base, (1, 8, 8), name="digits-sgd")
    assert BortAudit.can_explain(model=model, data=ds) is None
    exp = _explain(model, ds, tmp_path, {"n_samples": 32, "deletion_samples": 6}, [peer])
    assert exp.ok and exp.summary
    m = exp.metrics
    assert [r["layer"] for r in exp.tables["layers"]] == ["0.weight", "3.weight", "6.weight"]
    assert [r["role"] for r in exp.tables["layers"]] == ["constrained", "constrained", "classifier (free)"]
    # headline figures: the constrained layers and the free classifier apart, each equal to an SVD in the test
    assert m["d_orth_constrained_mean"] == pytest.approx(_weighted_d_orth(bort, ["0.weight", "3.weight"]), rel=1e-9)
    assert m["d_orth_classifier"] == pytest.approx(_weighted_d_orth(bort, ["6.weight"]), rel=1e-9)
    assert m["peer_d_orth_constrained_mean"] == pytest.approx(_weighted_d_orth(base, ["0.weight", "3.weight"]),
                                                              rel=1e-9)
    verdicts = exp.verdicts()
    assert verdicts["d_orth_constrained_mean"] == "informative" and exp.details["verdict"] == "closer"
    assert exp.details["near_bounded_orthogonal"] and m["fraction_within_bounds_constrained"] == 1.0
    assert verdicts["d_orth_classifier"] == "not informative"  # the free classifier is not constrained
    assert any(f.startswith("Classifier '6.weight'") and "left free" in f for f in exp.findings)
    # the reconstruction evidence: the trace-back beside random weights, the saliency scored like every method
    recon = exp.details["reconstruction"]
    assert recon["ran"] and recon["trigger"].startswith("tagged Bort-trained")
    assert {r["model"] for r in exp.tables["traceback"]} == {"memory:digits-bort", "memory:digits-sgd"}
    forward = lambda b: bort(torch.from_numpy(np.ascontiguousarray(b))).detach().double().numpy()  # noqa: E731
    X = exp.arrays["inputs_shown"]
    want_del, want_ins = _reference_deletion_insertion(forward, X, exp.arrays["saliency"], recon["tiebreak_seed"])
    assert m["deletion_auc"] == pytest.approx(want_del, abs=1e-6)
    assert m["insertion_auc"] == pytest.approx(want_ins, abs=1e-6)
    controls = {(c.metric, c.key): c for c in exp.controls}
    assert {("traced_rel_error", "random_weights"), ("deletion_auc", "random_order"),
            ("deletion_auc", "random_weights"), ("insertion_auc", "random_order")} <= set(controls)
    assert controls[("traced_rel_error", "random_weights")].control_value > m["traced_rel_error"]
    assert controls[("deletion_auc", "random_order")].draws == 10
    # what Bort bought and what it cost, against the baseline version
    acc = [float((torch.argmax(mm(torch.from_numpy(ds.X)), 1).numpy() == ds.y).mean()) for mm in (bort, base)]
    bought = [f for f in exp.findings if f.startswith("What Bort bought, what it cost")]
    assert len(bought) == 1 and "memory:digits-bort, trained with BortAdamW, gamma 60" in bought[0]
    assert f"D_orth {m['d_orth_constrained_mean']:.3g} against {m['peer_d_orth_constrained_mean']:.3g}" in bought[0]
    assert f"Accuracy {acc[0]:.3f} against {acc[1]:.3f} on the run's 600 labelled samples" in bought[0]
    assert m["accuracy_delta"] == pytest.approx(acc[0] - acc[1], abs=1e-12)
    assert set(exp.figures) == {"deviation", "spectra", "traceback", "saliency"}
    assert all(p.exists() and p.stat().st_size > 5000 for p in exp.figures.values())
    html = render_method_section(BortAudit, exp.to_dict(), {k: "data:," for k in exp.figures})
    for text in ("What this does", "Per-layer audit", "Each figure beside its control", "What Bort bought",
                 "Comparison with other versions", "Limitations", "Trace-back from each hidden layer"):
        assert text in html
    assert "n/a" not in html.split("Per-layer audit")[0].split("Key numbers")[1]


UNTRAINED = {"mlp-1024-32-10": (lambda: nn.Sequential(nn.Linear(1024, 32), nn.ReLU(), nn.Linear(32, 10)), (1024,)),
             "mlp-64-32-16-10": (lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                                                       nn.Linear(16, 10)), (64,)),
             "cnn": (lambda: nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                           nn.Linear(12 * 4 * 4, 10)), (1, 8, 8))}


@pytest.mark.parametrize("arch", list(UNTRAINED))
def test_untrained_models_are_not_called_bounded_orthogonal(arch, tmp_path):
    """Untrained models of three shapes (random-reference D_orth 0.18, 0.70 and 0.45), three seeds each: within the
    band of their random reference, never "closer", "near" or "further"; the reconstruction is not triggered, and
    when forced its error does not beat random weights either."""
    from governance.contract.dataset import Dataset
    from governance.testing.models import as_loaded

    build, shape = UNTRAINED[arch]
    X = np.random.default_rng(0).random((64, *shape)).astype(np.float32)
    ds = Dataset(X=X, y=np.zeros(64, np.int64), modality="image" if len(shape) == 3 else "tabular")
    for seed in range(3):
        torch.manual_seed(seed)
        exp = _explain(as_loaded(build().eval(), shape), ds, tmp_path / f"s{seed}", seed=seed + 50)
        assert exp.details["verdict"] == "within" and not exp.details["near_bounded_orthogonal"], seed
        assert exp.verdicts()["d_orth_constrained_mean"] == "not informative"
        assert {r["position"] for r in exp.tables["layers"]} == {"within"}, exp.tables["layers"]
        assert not exp.details["reconstruction"]["ran"]
        assert "not near bounded-orthogonal" in exp.details["reconstruction"]["reason"]
        assert "not informative" in exp.summary and "within the tolerance band" in exp.summary
    forced = _explain(as_loaded(build().eval(), shape), ds, tmp_path / "forced", {"reconstruction": "always"})
    assert forced.verdicts()["traced_rel_error"] == "not informative"


def test_bought_and_cost_words():
    """The finding calls a difference inside two paired standard errors what it is, and a real cost a cost."""
    from governance_plugins.bort.compare import VersionFigures, bought_and_cost, paired_se

    rng = np.random.default_rng(0)
    base_correct = (rng.random(400) < 0.95).astype(float)
    slightly = base_correct.copy()
    slightly[np.flatnonzero(base_correct)[:2]] = 0  # 2 of 400 flipped: -0.5 points
    much = base_correct.copy()
    much[np.flatnonzero(base_correct)[:40]] = 0  # 40 of 400 flipped: -10 points
    summary = {"d_orth_constrained_mean": 0.02, "d_abs_constrained_mean": 0.03}
    tags = {"governance.bort.optimizer": "BortSGD", "governance.bort.gamma": "0.1"}
    base = VersionFigures("v1", {}, {"d_orth_constrained_mean": 0.8, "d_abs_constrained_mean": 2.0}, base_correct)
    se = paired_se(much, base_correct)
    assert se == pytest.approx(np.std(much - base_correct, ddof=1) / 20.0)
    text = bought_and_cost(VersionFigures("v2", tags, summary, much), base, 0.5)
    assert text.startswith("What Bort bought, what it cost (v2, trained with BortSGD, gamma 0.1, against v1)")
    assert "40x closer to bounded-orthogonal (D_orth 0.02 against 0.8; random weights 0.5" in text
    assert "(-10.0 points;" in text and text.rstrip().endswith("a cost.")
    text = bought_and_cost(VersionFigures("v2", tags, summary, slightly), base, 0.5)
    assert "(-0.5 points;" in text and "no difference these samples can show" in text
    text = bought_and_cost(VersionFigures("v2", {}, summary, much), base, 0.5)
    assert text.startswith("v2 against v1") and "not attributed to Bort" in text


def test_method_on_onnx_and_untagged_models_skips_reconstruction_with_a_reason(digits_pair, tmp_path):
    from governance.report.sections import render_method_section
    from governance.testing.models import as_loaded, as_onnx_loaded
    from governance_plugins.bort.method import BortAudit

    base, _bort, ds = digits_pair
    onnx_model = as_onnx_loaded(base, (1, 8, 8), tmp_path)
    exp = _explain(onnx_model, ds, tmp_path / "a")
    assert not exp.details["reconstruction"]["ran"] and "ONNX Runtime" in exp.details["reconstruction"]["reason"]
    assert any("BatchNorm" in w for w in exp.warnings)
    exp2 = _explain(as_loaded(base, (1, 8, 8)), ds, tmp_path / "b")
    assert not exp2.details["reconstruction"]["ran"]
    assert "not near bounded-orthogonal" in exp2.details["reconstruction"]["reason"]
    assert exp2.details["verdict"] == "further"  # plain training moved the layers away from orthogonal
    assert "Not run:" in render_method_section(BortAudit, exp2.to_dict(), {})
    with pytest.raises(Exception, match="ONNX Runtime"):
        _explain(onnx_model, ds, tmp_path / "c", {"reconstruction": "always"})


def test_method_config_and_requirements():
    from governance.contract.errors import ConfigError
    from governance.contract.method import Requirement
    from governance_plugins.bort import BortAudit, register_methods

    found = []
    register_methods(register=found.append)
    assert found == [BortAudit] and BortAudit.name == "bort"
    assert BortAudit.requires == frozenset({Requirement.PARAMETERS, Requirement.PEERS})  # compares versions
    with pytest.raises(ConfigError, match="amplitude"):
        BortAudit.parse_config({"amplitude": 0})
    with pytest.raises(ConfigError, match="valid keys"):
        BortAudit.parse_config({"gamma": 1})
    with pytest.raises(ConfigError, match="reference_draws"):
        BortAudit.parse_config({"reference_draws": 1})


# ============================================================================================ governance retrain
@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A private SQLite MLflow store whose artifacts live under tmp_path; global MLflow state restored after."""
    import mlflow

    for var, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                     ("MPLCONFIGDIR", "mpl")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("bort-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _stored_files(uri: str, dst) -> set[str]:
    """Names of the files a registered version stores."""
    from pathlib import Path

    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    return {p.name for p in local.rglob("*") if p.is_file()}


def test_retrain_cli_registers_a_bort_version_in_pt2_with_its_audit(mlflow_store, tmp_path, digits_pair):
    import mlflow
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from governance.cli import cli
    from governance_plugins.bort.retrain import audit_module

    base, _bort, ds = digits_pair
    np.savez(tmp_path / "digits.npz", X=ds.X, y=ds.y)
    mlflow.set_experiment("bort-tests")
    with mlflow.start_run():  # the parent in MLflow's default pt2 format
        mlflow.pytorch.log_model(base, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                 registered_model_name="digits")
    runner = CliRunner()
    args = ["retrain", "models:/digits/1", "--data", str(tmp_path / "digits.npz"), "--epochs", "6",
            "--experiment", "bort-tests", "--tracking-uri", mlflow_store]
    missing = runner.invoke(cli, args)
    assert missing.exit_code == 2 and "--strength is required" in missing.output and "--strength 10" in missing.output
    result = runner.invoke(cli, args + ["--strength", "60"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "registered models:/digits/2" in result.output and "pt2 format" in result.output
    assert "What Bort bought: D_orth of the 2 constrained layers" in result.output and "What it cost" in result.output

    client = MlflowClient(mlflow_store)
    mv = client.get_model_version("digits", "2")
    assert mv.tags["governance.bort.optimizer"] == "BortAdamW" and mv.tags["governance.bort.gamma"] == "60"
    assert mv.tags["governance.bort.parent"] == "models:/digits/1" and mv.tags["governance.bort.format"] == "pt2"
    assert mv.tags["governance.bort.include_classifier"] == "false"
    assert float(mv.tags["governance.bort.d_orth_mean"]) < float(mv.tags["governance.bort.d_orth_mean_parent"])
    assert float(mv.tags["governance.bort.val_accuracy"]) > 0.8
    assert {f.path for f in client.list_artifacts(mv.run_id, "bort_audit")} == {
        "bort_audit/bort_audit.json", "bort_audit/bort_deviation.png"}
    run = client.get_run(mv.run_id)
    assert run.data.metrics["d_orth_constrained_mean"] < 0.1 < run.data.metrics["d_orth_constrained_mean_parent"]
    assert run.data.metrics["d_orth_constrained_random"] > 0.3
    assert run.data.params["optimizer"] == "BortAdamW" and run.data.params["format"] == "pt2"
    files = _stored_files("models:/digits/2", tmp_path / "dl")
    assert "model.pt2" in files and "model.pth" not in files and "pickle_module_info.txt" not in files
    reloaded = mlflow.pytorch.load_model("models:/digits/2")
    assert isinstance(reloaded, torch.fx.GraphModule)
    rows = {r["name"]: r for r in audit_module(reloaded)[0]}
    assert rows["0.weight"]["d_orth"] < 0.1


def _governance(args: list[str], capsys) -> tuple[int, str]:
    """Run the console entry point as a user would: (exit code, stdout + stderr)."""
    from governance.cli import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_retrain_refuses_an_untrusted_pickle_parent_without_running_it(mlflow_store, tmp_path, digits_pair, capsys):
    import os

    import mlflow
    from mlflow import MlflowClient


    base, _bort, ds = digits_pair
    np.savez(tmp_path / "digits.npz", X=ds.X, y=ds.y)
    mlflow.set_experiment("bort-tests")
    logged = {}
    for name in ("tampered", "legacy"):
        with mlflow.start_run():
            logged[name] = mlflow.pytorch.log_model(base, name="model", input_example=ds.X[:2],
                                                    pip_requirements=["torch"], serialization_format="pickle",
                                                    registered_model_name=name)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    client = MlflowClient(mlflow_store)
    stored = [p for p in (tmp_path / "artifacts").rglob("model.pth")]
    (victim,) = [p for p in stored if logged["tampered"].model_id in str(p)]
    torch.save(Payload(), victim)  # what a hostile registrant could upload
    runs_before = len(client.search_runs([client.get_experiment_by_name("bort-tests").experiment_id]))
    common = ["--data", str(tmp_path / "digits.npz"), "--optimizer", "bort-sgd", "--strength", "0.1", "--lr", "0.05",
              "--epochs", "1", "--experiment", "bort-tests", "--tracking-uri", mlflow_store]
    code, out = _governance(["retrain", "models:/tampered/1", *common], capsys)
    assert code == 4, out
    assert "stored as a pickle" in out and "--trust-pickle" in out and "Traceback" not in out
    assert not marker.exists()
    assert len(client.search_runs([client.get_experiment_by_name("bort-tests").experiment_id])) == runs_before
    assert len(client.search_model_versions("name='tampered'")) == 1
    code, out = _governance(["retrain", "models:/legacy/1", *common, "--trust-pickle"], capsys)
    assert code == 0, out
    mv = client.get_model_version("legacy", "2")
    assert client.get_run(mv.run_id).data.params["parent_format"] == "pickle"
    files = _stored_files("models:/legacy/2", tmp_path / "dl-legacy")
    assert "model.pt2" in files and "model.pth" not in files  # a trusted pickle parent still yields pt2
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        code, out = _governance(["retrain", "models:/legacy/1", *common, "--trust-pickle"], capsys)
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert code == 4 and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in out


def test_retrain_cli_options_are_the_options_dataclass(tmp_path):
    """One place for a new option: every CLI option is a RetrainOptions field, with the same default."""
    import dataclasses

    from governance_plugins.bort.cli import retrain_cmd
    from governance_plugins.bort.retrain import RetrainOptions

    (tmp_path / "d.npz").write_bytes(b"")
    ctx = retrain_cmd.make_context("retrain", ["models:/m/1", "--data", str(tmp_path / "d.npz")])
    parsed = {k: v for k, v in ctx.params.items() if k not in ("model_uri", "data")}
    parsed.pop("tracking_uri")  # read from MLFLOW_TRACKING_URI when set
    expected = dataclasses.asdict(RetrainOptions())
    expected.pop("tracking_uri")
    assert parsed == expected


def test_retrain_refuses_bad_inputs(tmp_path):
    from governance.contract.errors import ConfigError, DataError
    from governance_plugins.bort.retrain import load_npz, retrain

    np.savez(tmp_path / "bad.npz", X=np.zeros((8, 3), np.float32))
    with pytest.raises(DataError, match="'X' and 'y'"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "complex.npz", X=np.zeros((8, 3), np.complex64), y=np.zeros(8, np.int64))
    with pytest.raises(DataError, match="real numbers"):
        load_npz(tmp_path / "complex.npz")
    np.savez(tmp_path / "ok.npz", X=np.zeros((8, 3), np.float32), y=np.zeros(8, np.int64))
    with pytest.raises(ConfigError, match="--strength is required"):
        retrain("models:/m/1", tmp_path / "ok.npz", optimizer="bort")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        retrain("models:/m/1", tmp_path / "ok.npz", optimizer="lamb", strength=1.0)
    with pytest.raises(TypeError, match="unknown options"):
        retrain("models:/m/1", tmp_path / "ok.npz", optimiser="bort")


def test_nothing_in_bort_recommends_pickle():
    """The plugin writes and recommends pt2 only: no pickle serialization anywhere in its code or docs."""
    from pathlib import Path

    import governance_plugins.bort as pkg

    root = Path(pkg.__file__).parent
    for path in list(root.glob("*.py")) + list(root.glob("*.md")) + list(root.glob("*.j2")):
        text = path.read_text()
        assert "serialization_format='pickle'" not in text and 'serialization_format="pickle"' not in text, path
    assert 'serialization_format="pt2"' in (root / "training.py").read_text()


# ============================================================================================ GPU
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("foreach", [None, False])
def test_gpu_bort_matches_the_oracles_on_cuda(foreach):
    torch.manual_seed(0)
    layer = nn.Conv2d(16, 32, 3, bias=False).cuda()
    opt = BortAdamW(layer.parameters(), lr=0.1, gamma=1.0, weight_decay=0.1, foreach=foreach)
    zero_loss_steps(opt, [layer.weight], 2000)
    s2 = torch.linalg.svdvals(layer.weight.detach().reshape(32, -1).double()) ** 2
    assert float((s2 - 0.917243).abs().max()) <= 1e-5
    ref = _replay(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=foreach), device="cuda")
    with pytest.warns(UserWarning, match="switched off"):
        got = _replay(lambda p: BortSGD(p, lr=0.05, momentum=0.9, gamma=0.0, foreach=foreach), device="cuda")
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    ref = _replay(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=foreach), device="cuda")
    with pytest.warns(UserWarning, match="switched off"):
        got = _replay(lambda p: BortAdamW(p, lr=1e-2, weight_decay=0.1, gamma=0.0, foreach=foreach), device="cuda")
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.gpu
@cuda
def test_gpu_ada_and_bf16_weights():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(16, 64, device="cuda") / 8)
    opt = BortSGD([w], lr=0.1, gamma=1.0, amplitude="ada")
    zero_loss_steps(opt, [w], 3000)
    G = (w.detach().double() @ w.detach().double().T)
    assert float((G - torch.diag(torch.diagonal(G))).abs().max()) <= 1e-6 * float(torch.diagonal(G).mean())
    wb = nn.Parameter((torch.randn(16, 64, device="cuda") / 8).bfloat16())
    opt = BortSGD([wb], lr=0.1, gamma=1.0)
    zero_loss_steps(opt, [wb], 300)
    assert gram_dev(wb.float()) < 0.1  # bf16 storage limits the precision, the float32 correction still converges


@pytest.mark.gpu
@cuda
def test_gpu_method_matches_the_cpu_figures(digits_pair, tmp_path):
    """The audit and the reconstruction evidence of a model living on the GPU give the CPU's figures."""
    import copy

    from governance.host.runtimes.torch_model import TorchModel

    _base, bort, ds = digits_pair
    figures = []
    for device in ("cpu", "cuda"):
        model = TorchModel.from_module(copy.deepcopy(bort), (1, 8, 8), name="digits-bort", device=device)
        model.info.tags["governance.bort.optimizer"] = "BortAdamW"
        figures.append(_explain(model, ds, tmp_path / device, {"n_samples": 32}).metrics)
    cpu, gpu = figures
    assert set(cpu) == set(gpu)
    for key in ("d_orth_constrained_mean", "d_orth_classifier", "traced_rel_error", "layer_rel_error_mean"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4, abs=1e-5), key
    assert gpu["deletion_auc"] == pytest.approx(cpu["deletion_auc"], abs=0.02)
