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


def test_state_dict_round_trip_resumes_exactly():
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
    b = make()
    b.load_state_dict(a.state_dict())
    opt_b = BortAdamW(make_bort_param_groups(b, gamma=7.0, exclude_classifier=False), lr=0.5)
    opt_b.load_state_dict(state)
    assert opt_b.param_groups[0]["gamma"] == 2.0 and opt_b.param_groups[0]["lr"] == 1e-2
    train(a, opt_a, batches[5:])
    train(b, opt_b, batches[5:])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # the layout is torch AdamW's: checkpoints move between the two
    per_param = next(iter(state["state"].values()))
    assert set(per_param) == {"step", "exp_avg", "exp_avg_sq"}
    plain = torch.optim.AdamW([{"params": g["params"]} for g in opt_a.param_groups], lr=1e-2)
    plain.load_state_dict(state)
    resumed = BortAdamW(a.parameters(), lr=1e-2, gamma=3.0)
    resumed.load_state_dict(torch.optim.AdamW(a.parameters(), lr=1e-2).state_dict())
    assert resumed.param_groups[0]["gamma"] == 3.0  # a plain checkpoint keeps the Bort settings


def test_optimizer_survives_pickling():
    import copy
    import pickle

    lin = nn.Linear(4, 6)
    opt = BortAdamW(lin.parameters(), lr=0.1, gamma=0.5, check_finite=False)
    zero_loss_steps(opt, list(lin.parameters()), 2)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.param_groups[0]["gamma"] == 0.5 and clone._bort_check_finite is False
        clone.add_param_group({"params": [nn.Parameter(torch.randn(3, 3))]})  # inherits gamma 0.5
        assert clone.param_groups[1]["gamma"] == 0.5
        for p in clone.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        clone.step()


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
    t_layers, t_audits, t_src, _ = BortAudit._audit_model(as_loaded(module, shape), cfg)
    o_layers, o_audits, o_src, _ = BortAudit._audit_model(as_onnx_loaded(module, shape, tmp_path), cfg)
    assert t_src == "torch module types" and o_src == "ONNX graph operators"
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
def test_transpose_inverse_is_exact_for_bounded_orthogonal_layers():
    from governance_plugins.bort.reconstruction import Step, invert_step

    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    # wide: orthogonal rows of unequal norms; x in the row space is recovered exactly
    wide = nn.Linear(12, 5).double()
    wide.weight.data = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)) @ Q[:5]
    x = torch.randn(7, 5, dtype=torch.float64) @ Q[:5]
    assert torch.allclose(invert_step(Step("w", wide, x, wide(x)), wide(x)), x, atol=1e-12)
    # tall scaled isometry (W^T W = 4 I): every input is recovered
    tall = nn.Linear(5, 12, bias=False).double()
    tall.weight.data = 2.0 * Q[:, :5]
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(invert_step(Step("t", tall, x, tall(x)), tall(x)), x, atol=1e-12)
    # non-overlapping conv whose 4 filters are an orthonormal basis of 2x2 patches: exact inverse
    conv = nn.Conv2d(1, 4, 2, stride=2).double()
    Q4, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    conv.weight.data = Q4.reshape(4, 1, 2, 2)
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(invert_step(Step("c", conv, x, conv(x)), conv(x)), x, atol=1e-12)
    # eval-mode batch norm is inverted exactly
    bn = nn.BatchNorm2d(3).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(invert_step(Step("bn", bn, x, bn(x)), bn(x)), x, atol=1e-12)


def test_overlapping_conv_reconstruction_averages_patches():
    """3x3 'same' conv whose 9 filters are the standard basis: every patch is copied, the overlap-average is x."""
    from governance_plugins.bort.reconstruction import Step, invert_step

    conv = nn.Conv2d(1, 9, 3, padding=1, bias=False).double()
    conv.weight.data = torch.eye(9, dtype=torch.float64).reshape(9, 1, 3, 3)
    x = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    xh = invert_step(Step("c", conv, x, conv(x)), conv(x))
    # border pixels average in zero padding they never saw; interior pixels are exact
    assert torch.allclose(xh[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1], atol=1e-12)


def test_chain_detection_and_traceback_shapes():
    from governance.testing.resnet import resnet18_shaped
    from governance_plugins.bort.reconstruction import chain_problem, record_steps, traceback

    cnn = small_cnn()
    x = torch.rand(4, 1, 8, 8)
    steps, out = record_steps(cnn, x)
    assert chain_problem(steps, x, out) is None
    assert traceback(steps, len(steps) - 2, steps[-2].out).shape == x.shape
    res = resnet18_shaped(num_classes=10, width=8)
    xr = torch.rand(2, 3, 32, 32)
    steps, out = record_steps(res, xr)
    assert "residual" in chain_problem(steps, xr, out)


def test_deletion_insertion_auc_normalisation():
    from governance_plugins.bort.reconstruction import deletion_insertion

    X = np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32)
    const = lambda b: np.tile([[2.0, 0.0]], (len(b), 1))  # noqa: E731 - a model that ignores its input
    res = deletion_insertion(const, X, X[:, 0], step=3, score="logit")
    assert np.allclose(res["deletion_auc"], 1.0) and np.allclose(res["insertion_auc"], 1.0)
    pixel0 = lambda b: np.stack([b[:, 0, 0, 0] + 1.0, np.zeros(len(b))], 1)  # noqa: E731 - reads pixel (0, 0)
    sal = np.zeros((3, 4, 4))
    sal[:, 0, 0] = 1.0
    res = deletion_insertion(pixel0, X, sal, step=1, score="logit")
    assert res["deletion_curve"][1] < 1.0  # deleting the salient pixel first drops the score at once
    assert res["fractions"][0] == 0.0 and res["fractions"][-1] == 1.0


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


def test_method_explains_a_bort_model_against_its_baseline(digits_pair, tmp_path):
    from governance.contract.method import MethodContext
    from governance.report.sections import render_method_section
    from governance.testing.models import as_loaded
    from governance_plugins.bort.method import BortAudit

    base, bort, ds = digits_pair
    model = as_loaded(bort, (1, 8, 8), name="digits-bort")
    model.info.tags["governance.bort.optimizer"] = "BortAdamW"  # as `governance retrain` tags it
    peer = as_loaded(base, (1, 8, 8), name="digits-sgd")
    assert BortAudit.can_explain(model=model, data=ds) is None
    cfg = BortAudit.parse_config({"n_samples": 32})
    ctx = MethodContext(model=model, data=ds, config=cfg, seed=0, workdir=tmp_path, peers=[peer])
    exp = BortAudit().explain(ctx)
    assert exp.ok and exp.summary
    assert [r["layer"] for r in exp.tables["layers"]] == ["0.weight", "3.weight", "6.weight"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in exp.metrics.values())
    assert exp.metrics["d_orth_hidden_mean"] < 0.1 < exp.metrics["peer_d_orth_mean"]
    assert exp.metrics["d_orth_mean_delta"] < 0
    assert {r["peer"] for r in exp.tables["comparison"]} == {"memory:digits-sgd"}
    recon = exp.details["reconstruction"]
    assert recon["ran"] and recon["trigger"].startswith("tagged Bort-trained")
    assert {r["model"] for r in exp.tables["traceback"]} == {"memory:digits-bort", "memory:digits-sgd"}
    assert exp.arrays["saliency"].shape == (6, 8, 8) and exp.arrays["reconstruction"].shape == (6, 1, 8, 8)
    assert 0 <= exp.metrics["deletion_auc"] and exp.metrics["insertion_auc"] > 0
    assert set(exp.figures) == {"deviation", "spectra", "traceback", "saliency"}
    assert all(p.exists() and p.stat().st_size > 5000 for p in exp.figures.values())
    html = render_method_section(BortAudit, exp.to_dict(), {k: "data:," for k in exp.figures})
    for text in ("What this does", "Per-layer audit", "Comparison with other versions", "Limitations",
                 "Trace-back from each hidden layer"):
        assert text in html
    assert "n/a" not in html.split("Per-layer audit")[0].split("Key numbers")[1]


def test_method_on_onnx_and_untagged_models_skips_reconstruction_with_a_reason(digits_pair, tmp_path):
    from governance.contract.method import MethodContext
    from governance.report.sections import render_method_section
    from governance.testing.models import as_loaded, as_onnx_loaded
    from governance_plugins.bort.method import BortAudit

    base, _bort, ds = digits_pair
    cfg = BortAudit.parse_config({"init_reference": False})
    onnx_model = as_onnx_loaded(base, (1, 8, 8), tmp_path)
    exp = BortAudit().explain(MethodContext(model=onnx_model, data=ds, config=cfg, seed=0, workdir=tmp_path / "a"))
    assert not exp.details["reconstruction"]["ran"] and "ONNX Runtime" in exp.details["reconstruction"]["reason"]
    assert any("BatchNorm" in w for w in exp.warnings)
    exp2 = BortAudit().explain(MethodContext(model=as_loaded(base, (1, 8, 8)), data=ds, config=cfg, seed=0,
                                             workdir=tmp_path / "b"))
    assert not exp2.details["reconstruction"]["ran"] and "not near bounded-orthogonal" in exp2.details["reconstruction"]["reason"]
    assert "Not run:" in render_method_section(BortAudit, exp2.to_dict(), {})
    with pytest.raises(Exception, match="ONNX Runtime"):
        BortAudit().explain(MethodContext(model=onnx_model, data=ds, seed=0, workdir=tmp_path / "c",
                                          config=BortAudit.parse_config({"reconstruction": "always"})))


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
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("bort-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_retrain_cli_registers_a_bort_version_with_its_audit(mlflow_store, tmp_path, digits_pair):
    import mlflow
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from governance.cli import cli
    from governance_plugins.bort.retrain import audit_module

    base, _bort, ds = digits_pair
    np.savez(tmp_path / "digits.npz", X=ds.X, y=ds.y)
    mlflow.set_experiment("bort-tests")
    with mlflow.start_run():
        mlflow.pytorch.log_model(base, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                 serialization_format="pickle", registered_model_name="digits")
    runner = CliRunner()
    args = ["retrain", "models:/digits/1", "--data", str(tmp_path / "digits.npz"), "--epochs", "6",
            "--experiment", "bort-tests", "--tracking-uri", mlflow_store]
    missing = runner.invoke(cli, args)
    assert missing.exit_code == 2 and "--strength is required" in missing.output
    result = runner.invoke(cli, args + ["--strength", "60"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "registered models:/digits/2" in result.output and "mean D_orth" in result.output

    client = MlflowClient(mlflow_store)
    mv = client.get_model_version("digits", "2")
    assert mv.tags["governance.bort.optimizer"] == "BortAdamW" and mv.tags["governance.bort.gamma"] == "60"
    assert mv.tags["governance.bort.parent"] == "models:/digits/1"
    assert float(mv.tags["governance.bort.d_orth_mean"]) < float(mv.tags["governance.bort.d_orth_mean_parent"])
    assert float(mv.tags["governance.bort.val_accuracy"]) > 0.8
    assert {f.path for f in client.list_artifacts(mv.run_id, "bort_audit")} == {
        "bort_audit/bort_audit.json", "bort_audit/bort_deviation.png"}
    run = client.get_run(mv.run_id)
    assert run.data.metrics["d_orth_constrained_mean"] < 0.1 < run.data.metrics["d_orth_constrained_mean_parent"]
    assert run.data.params["optimizer"] == "BortAdamW" and run.data.params["format"] == "pickle"
    reloaded = mlflow.pytorch.load_model("models:/digits/2")
    rows = {r["name"]: r for r in audit_module(reloaded)[0]}
    assert rows["0.weight"]["d_orth"] < 0.1

    # a torch.export (pt2) version fine-tunes too, and stays pt2
    with mlflow.start_run():
        mlflow.pytorch.log_model(base, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                 registered_model_name="digits-pt2")
    result = runner.invoke(cli, ["retrain", "models:/digits-pt2/latest", "--data", str(tmp_path / "digits.npz"),
                                 "--optimizer", "bort-sgd", "--strength", "0.1", "--lr", "0.05", "--epochs", "2",
                                 "--experiment", "bort-tests", "--tracking-uri", mlflow_store])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "torch.export graph" in result.output
    mv = client.get_model_version("digits-pt2", "2")
    assert client.get_run(mv.run_id).data.params["format"] == "pt2"
    assert mv.tags["governance.bort.optimizer"] == "BortSGD"


def test_retrain_refuses_bad_inputs(tmp_path):
    from governance.contract.errors import ConfigError, DataError
    from governance_plugins.bort.retrain import load_npz, retrain

    np.savez(tmp_path / "bad.npz", X=np.zeros((8, 3), np.float32))
    with pytest.raises(DataError, match="'X' and 'y'"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "ok.npz", X=np.zeros((8, 3), np.float32), y=np.zeros(8, np.int64))
    with pytest.raises(ConfigError, match="--strength is required"):
        retrain("models:/m/1", tmp_path / "ok.npz", optimizer="bort")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        retrain("models:/m/1", tmp_path / "ok.npz", optimizer="lamb", strength=1.0)


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
