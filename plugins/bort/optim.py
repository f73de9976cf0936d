"""Bort optimizers: torch optimizers with the bounded-orthogonal correction of Zhang et al. (ICLR 2023).

For every constrained weight ``P`` (reshaped to ``W`` of shape ``m x n``, one row per output unit) Bort
descends the penalty ``R_c(W) = 1/4 ||W W^T - c I||_F^2`` whose gradient is ``Delta_c(W) = W W^T W - c W``.
Two ways to add it to a base optimizer (spec B2.4):

* *coupled* (SGD-like): ``gamma * Delta`` is added to the gradient, so it passes through momentum;
* *decoupled* (AdamW-like): ``p <- p - lr * gamma * Delta(p)`` is applied outside the preconditioner.

:class:`BortSGD` and :class:`BortAdamW` are ``torch.optim.SGD`` / ``torch.optim.AdamW`` subclasses: the
base update is torch's own code, so schedulers, ``state_dict`` layouts and param groups behave exactly as
for the base optimizer, and with ``gamma = 0`` the updates are bit-for-bit torch's. :func:`with_bort`
applies the same recipe to any other optimizer class.

``gamma`` (the strength) has no default: the reference implementation's default of 0 silently switches
Bort off. It must be passed, globally or per group; ``gamma = 0`` in one group is allowed and leaves that
group unconstrained. Parameters with fewer than two dimensions (biases, norm scales) are never
constrained.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "BortSGD",
    "BortAdamW",
    "with_bort",
    "bort_correction",
    "bort_penalty",
    "make_bort_param_groups",
    "MODES",
]

#: correction variants (spec B2.3). Only "l2-full" is the ICLR-2023 method; the other two constrain
#: row or column norms only.
MODES = ("l2-full", "l2-row", "l2-col")
_BORT_KEYS = ("gamma", "amplitude", "mode")
_GAMMA_HELP = (
    "pass gamma=<strength> explicitly. The pull per step is lr*gamma (times 1/(1-momentum) for BortSGD) and a "
    "measurable constraint needs about 1e-2: e.g. gamma=10 for BortAdamW at lr=1e-3, or gamma=0.1 for BortSGD at "
    "lr=0.05 with momentum 0.9 (measured on a digits MLP, benchmarks/bench_bort.py --gamma-sweep: BortAdamW gamma=1e-2 "
    "at lr=1e-3 leaves the hidden layers practically where AdamW leaves them, D_orth 1.95 against 1.99, while "
    "gamma=10 brings them to 0.19 for 1.7 points of accuracy). Tune it on validation accuracy "
    "together with the audit's D_orth. The reference default gamma=0 switches Bort off, so there is no default; use "
    "gamma=0 in a param group to leave that group unconstrained"
)


# ---------------------------------------------------------------------------------------------- maths
def _as_matrix(w: Tensor) -> Tensor:
    """One row per output unit: ``[out, in]`` stays, ``[C_out, C_in/g, k...]`` becomes ``[C_out, C_in/g*k...]``."""
    return w.reshape(w.shape[0], -1)


def _amplitude_value(W: Tensor, amplitude: float | str) -> float | Tensor:
    if amplitude == "ada":  # (mean row norm)^2, kept on the device (no .item() sync)
        return W.norm(dim=1).mean().square()
    return float(amplitude)


def bort_correction(weight: Tensor, amplitude: float | str = 1.0, mode: str = "l2-full") -> Tensor:
    """``Delta_c(W)``, the gradient of ``1/4 ||W W^T - c I||_F^2`` (mode ``"l2-full"``), shaped like ``weight``.

    Computed in the cheaper multiplication order (``(W W^T) W`` for wide, ``W (W^T W)`` for tall weights:
    ``2 m n min(m, n)`` flops), in float32 for half-precision weights and in the weight's dtype otherwise.
    """
    if weight.ndim < 2:
        raise ValueError(f"Bort constrains weights with at least 2 dimensions, got shape {tuple(weight.shape)}")
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    W = _as_matrix(weight.detach()).to(dtype)
    m, n = W.shape
    c = _amplitude_value(W, amplitude)
    numeric = not isinstance(c, Tensor)
    if mode == "l2-full":
        if numeric:
            D = torch.addmm(W, W @ W.T, W, beta=-c) if m <= n else torch.addmm(W, W, W.T @ W, beta=-c)
        else:
            D = (W @ W.T) @ W if m <= n else W @ (W.T @ W)
            D = D - c * W
    elif mode == "l2-row":
        D = (W.square().sum(dim=1, keepdim=True) - c) * W
    elif mode == "l2-col":
        D = W * (W.square().sum(dim=0, keepdim=True) - c)
    else:
        raise ValueError(f"unknown Bort mode {mode!r}; choose one of {', '.join(MODES)}")
    return D.reshape(weight.shape)


def bort_penalty(weight: Tensor, amplitude: float | str = 1.0) -> Tensor:
    """``R_c(W) = 1/4 ||G - c I||_F^2`` with ``G`` the ``k x k`` Gram matrix, ``k = min(m, n)``.

    Differentiable; its gradient equals :func:`bort_correction` (both Gram forms have the same gradient).
    For ``"ada"`` the amplitude is treated as a constant, as in the optimizer.
    """
    W = _as_matrix(weight)
    m, n = W.shape
    G = W @ W.T if m <= n else W.T @ W
    c = _amplitude_value(W.detach(), amplitude)
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return 0.25 * (G - c * eye).square().sum()


def _all_finite(params: list[Tensor]) -> Tensor:
    """Per-parameter "all entries finite" flags from one fused max-abs reduction where torch offers it (max |p|
    cannot overflow, so it is finite exactly when every entry is); the caller syncs once on the result."""
    if hasattr(torch, "_foreach_norm") and len({(p.device, p.dtype) for p in params}) == 1:
        return torch.isfinite(torch.stack(torch._foreach_norm(params, float("inf"))))
    return torch.stack([torch.isfinite(p).all().to(params[0].device) for p in params])


def _is_tall(p: Tensor) -> bool:
    return p.ndim >= 2 and p.shape[0] > p[0].numel()


# ---------------------------------------------------------------------------------------------- mixin
def _unhooked(fn: Callable) -> Callable:
    """The step function without torch's profiling/hook wrapper (it runs once, around our own step)."""
    return fn.__wrapped__ if getattr(fn, "hooked", False) and hasattr(fn, "__wrapped__") else fn


class _BortMixin:
    """Adds the Bort correction to a torch optimizer. Subclasses set ``_bort_coupling``."""

    _bort_coupling: Literal["coupled", "decoupled"] = "coupled"
    param_groups: list[dict[str, Any]]
    state: Any
    defaults: dict[str, Any]

    def _bort_init(self, gamma: float | None, amplitude: float | str, mode: str, check_finite: bool) -> None:
        self._bort_defaults = {"gamma": gamma, "amplitude": amplitude, "mode": mode}
        self._bort_check_finite = check_finite
        self._bort_checked: set[int] = set()

    def _bort_after_init(self) -> None:
        if self.defaults.get("differentiable"):
            raise ValueError(f"{type(self).__name__} does not support differentiable=True")
        self.defaults.update(self._bort_defaults)
        if all(g["gamma"] == 0 for g in self.param_groups):
            warnings.warn(
                f"{type(self).__name__}: gamma is 0 in every parameter group, so Bort is switched off and this "
                f"optimizer behaves exactly like its base. {_GAMMA_HELP}",
                UserWarning,
                stacklevel=3,
            )

    # -------------------------------------------------------------------------------- groups and state
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state["_bort_check_finite"] = getattr(self, "_bort_check_finite", True)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self._bort_defaults = {k: self.defaults.get(k) for k in _BORT_KEYS}
        self._bort_check_finite = state.get("_bort_check_finite", True)
        self._bort_checked = set()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key, value in getattr(self, "_bort_defaults", {}).items():
            param_group.setdefault(key, value)
        gamma = param_group.get("gamma")
        if gamma is None:
            raise TypeError(f"{type(self).__name__} needs the Bort strength gamma: {_GAMMA_HELP}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
            raise TypeError(f"gamma must be a finite number, got {gamma!r}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0 (0 switches the correction off for that group), got {gamma}")
        param_group["gamma"] = float(gamma)
        amp = param_group.get("amplitude")
        if amp != "ada":
            if isinstance(amp, bool) or not isinstance(amp, (int, float)) or not (math.isfinite(amp) and amp > 0):
                raise ValueError(f"amplitude must be a positive number or 'ada', got {amp!r}")
            param_group["amplitude"] = float(amp)
        if param_group.get("mode") not in MODES:
            raise ValueError(f"unknown Bort mode {param_group.get('mode')!r}; choose one of {', '.join(MODES)}")
        if param_group.get("fused", getattr(self, "defaults", {}).get("fused")):
            raise ValueError(
                f"{type(self).__name__} does not support fused=True: the fused kernels expect (possibly scaled) "
                "raw gradients, which the Bort correction would corrupt; use the default implementation")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if amp == "ada" and gamma > 0:
            tall = [tuple(p.shape) for p in params if isinstance(p, Tensor) and _is_tall(p)]
            if tall:
                raise ValueError(
                    f"amplitude='ada' has no fixed point for tall weights (more output units than inputs), "
                    f"which decay to 0 under it: shapes {tall}. Use a numeric amplitude for them, or build the "
                    "groups with make_bort_param_groups(..., amplitude='ada'), which leaves tall weights "
                    "unconstrained")
        param_group["params"] = params
        super().add_param_group(param_group)  # type: ignore[misc]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint of this optimizer or of its base (SGD/AdamW): Bort settings missing from the
        checkpoint keep their current values, so plain-optimizer checkpoints resume under Bort."""
        current = [{k: g[k] for k in _BORT_KEYS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)  # type: ignore[misc]
        for group, keep in zip(self.param_groups, current):
            for key, value in keep.items():
                group.setdefault(key, value)
        self._bort_checked = set()

    # -------------------------------------------------------------------------------- step
    def _constrained(self) -> list[tuple[int, int, dict[str, Any], Tensor]]:
        out = []
        for gi, group in enumerate(self.param_groups):
            if group["gamma"] == 0:
                continue
            for pi, p in enumerate(group["params"]):
                if p.grad is not None and p.ndim >= 2:
                    if p.grad.is_sparse:
                        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                    out.append((gi, pi, group, p))
        return out

    def _param_label(self, gi: int, pi: int, p: Tensor) -> str:
        names = self.param_groups[gi].get("param_names")
        if names and pi < len(names):
            return f"'{names[pi]}' {tuple(p.shape)}"
        return f"param_groups[{gi}]['params'][{pi}] {tuple(p.shape)}"

    def _first_step_checks(self, items: list[tuple[int, int, dict[str, Any], Tensor]]) -> None:
        """Spec O-B9 pre-check (divergence) and the weight-decay collapse condition of B2.5."""
        groups_seen: set[int] = set()
        for gi, pi, group, p in items:
            if id(p) in self._bort_checked:
                continue
            self._bort_checked.add(id(p))
            lr, gamma = float(group["lr"]), group["gamma"]
            W = _as_matrix(p.detach()).double()
            G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
            s2max = float(torch.linalg.eigvalsh(G)[-1])
            c = float(_amplitude_value(W, group["amplitude"]))
            if lr * gamma > 0:
                bound = c + 2.0 / (lr * gamma)
                if s2max >= bound:
                    exact = "" if not group.get("momentum") else " (indicative only with momentum)"
                    warnings.warn(
                        f"Bort: {self._param_label(gi, pi, p)} has sigma_max^2 = {s2max:.4g} >= c + 2/(lr*gamma) = "
                        f"{bound:.4g}{exact}; the correction will diverge. Lower lr*gamma, warm gamma up from 0, "
                        "or rescale the weights first.",
                        UserWarning,
                        stacklevel=4,
                    )
            if gi not in groups_seen and group["amplitude"] != "ada":
                groups_seen.add(gi)
                lam = float(group.get("weight_decay") or 0.0)
                limit = gamma * c if self._bort_coupling == "coupled" else gamma * c * (1 - lr * lam)
                if lam > 0 and lam >= limit:
                    warnings.warn(
                        f"Bort: in param group {gi} weight_decay={lam:g} >= {limit:.4g} (the Bort pull gamma*c"
                        f"{'' if self._bort_coupling == 'coupled' else '*(1-lr*weight_decay)'}); without a task "
                        "gradient the constrained weights collapse to 0. Lower weight_decay or raise gamma.",
                        UserWarning,
                        stacklevel=4,
                    )

    def _decoupled_pre(self, items: list[tuple[int, int, dict[str, Any], Tensor]], restore: dict[int, Any]) -> None:
        """Decoupled form: ``p <- p - lr*gamma*Delta(p)`` before the base step. Group settings changed for the
        base step go into ``restore`` (group index -> original values)."""
        for _gi, _pi, group, p in items:
            delta = bort_correction(p, group["amplitude"], group["mode"])
            p.sub_(delta.to(p.dtype), alpha=float(group["lr"]) * group["gamma"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # noqa: D401 - torch API
        """One optimisation step: the base update plus the Bort correction of every constrained weight."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        items = self._constrained()
        if any(id(p) not in self._bort_checked for *_x, p in items):
            self._first_step_checks(items)
        swapped: list[tuple[Tensor, Tensor]] = []
        overrides: dict[int, Any] = {}
        try:
            if self._bort_coupling == "coupled":
                for _gi, _pi, group, p in items:
                    delta = bort_correction(p, group["amplitude"], group["mode"]).to(p.grad.dtype)
                    sign = -1.0 if group.get("maximize") else 1.0  # the penalty is always descended
                    original = p.grad
                    # g + gamma*Delta, written into Delta's fresh buffer: the caller's gradient stays untouched
                    p.grad = delta.mul_(sign * group["gamma"]).add_(original)
                    swapped.append((p, original))
            else:
                self._decoupled_pre(items, overrides)
            base_step = self._bort_base_step()
            base_step(self)
        finally:
            for p, original in swapped:
                p.grad = original
            for gi, saved in overrides.items():
                self.param_groups[gi].update(saved)
        if self._bort_check_finite and items:
            finite = _all_finite([p for *_x, p in items])
            if not bool(finite.all()):
                bad = [self._param_label(gi, pi, p) for (gi, pi, _g, p), ok in zip(items, finite.tolist()) if not ok]
                raise FloatingPointError(
                    f"Bort: non-finite values in {', '.join(bad)} after the step. The correction diverged "
                    "(sigma^2 > c + 2/(lr*gamma)) or the task gradient exploded: lower lr*gamma or rescale the "
                    "weights before training.")
        return loss

    def _bort_base_step(self) -> Callable:
        cls = type(self)
        cached = cls.__dict__.get("_bort_base_step_fn")
        if cached is not None:
            return cached
        for klass in cls.__mro__:
            if klass is _BortMixin or issubclass(klass, _BortMixin):
                continue
            if "step" in klass.__dict__:
                fn = _unhooked(klass.__dict__["step"])
                cls._bort_base_step_fn = fn  # type: ignore[attr-defined]
                return fn
        raise TypeError(f"{type(self).__name__} has no base optimizer step")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- SGD
class BortSGD(_BortMixin, torch.optim.SGD):
    """SGD with the coupled Bort correction (the paper's "Bort-S"): ``d = g + gamma*Delta_c(p) + lambda*p``,
    then torch's momentum/Nesterov update.

    ``gamma`` is required (keyword). Its effective strength is ``gamma/(1 - momentum)`` because the
    correction passes through the momentum buffer. Keep ``lr*gamma*c < 1`` for convergence.
    State-dict layout is torch SGD's (``momentum_buffer``).
    """

    _bort_coupling = "coupled"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        gamma: float | None = None,
        amplitude: float | str = 1.0,
        mode: str = "l2-full",
        maximize: bool = False,
        foreach: bool | None = None,
        check_finite: bool = True,
    ) -> None:
        self._bort_init(gamma, amplitude, mode, check_finite)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, foreach=foreach)
        self._bort_after_init()


# ---------------------------------------------------------------------------------------------- AdamW
class BortAdamW(_BortMixin, torch.optim.AdamW):
    """AdamW with the decoupled Bort correction (the paper's "Bort-A"), in the reference order:
    ``p <- p(1 - lr*lambda)``; ``p <- p - lr*gamma*Delta_c(p)``; then torch's Adam update.

    ``gamma`` is required (keyword). Note torch's default ``weight_decay=1e-2`` moves the fixed point to
    ``sigma^2 = (c - lambda/(gamma(1-lr*lambda)))/(1-lr*lambda)^2`` and collapses the weights when
    ``lambda >= gamma*c*(1-lr*lambda)``. State-dict layout is torch AdamW's.
    """

    _bort_coupling = "decoupled"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        gamma: float | None = None,
        amplitude: float | str = 1.0,
        mode: str = "l2-full",
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        check_finite: bool = True,
    ) -> None:
        self._bort_init(gamma, amplitude, mode, check_finite)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable)
        self._bort_after_init()

    def _decoupled_pre(self, items: list[tuple[int, int, dict[str, Any], Tensor]], restore: dict[int, Any]) -> None:
        """Weight decay first (torch's own operation), then the Bort step on the decayed weight; the base step
        then runs with weight_decay 0 for those groups (restored by ``step`` afterwards)."""
        for gi in sorted({gi for gi, *_ in items}):
            group = self.param_groups[gi]
            lam = group["weight_decay"]
            if lam != 0:
                restore[gi] = {"weight_decay": lam}
                group["weight_decay"] = 0.0
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - group["lr"] * lam)
        super()._decoupled_pre(items, restore)


# ---------------------------------------------------------------------------------------------- recipe
def with_bort(base: type[Optimizer], coupling: Literal["coupled", "decoupled"]) -> type[Optimizer]:
    """Wrap any ``torch.optim.Optimizer`` class with Bort (spec B2.4, "Bort-X").

    ``coupling="coupled"`` for optimizers whose weight decay is added to the gradient (SGD, RMSprop,
    Adagrad): ``gamma*Delta`` joins the gradient before the base update. ``coupling="decoupled"`` for
    AdamW/LAMB/Lion-style optimizers: ``p <- p - lr*gamma*Delta(p)`` is applied before the base step (so,
    unlike :class:`BortAdamW`, on the weight before the base optimizer's own decay). The returned class
    takes the base's arguments plus keyword-only ``gamma`` (required), ``amplitude``, ``mode`` and
    ``check_finite``. Gamma values do not transfer between the two couplings.
    """
    if coupling not in ("coupled", "decoupled"):
        raise ValueError(f"coupling must be 'coupled' or 'decoupled', got {coupling!r}")
    if not (isinstance(base, type) and issubclass(base, Optimizer)):
        raise TypeError(f"with_bort needs a torch.optim.Optimizer subclass, got {base!r}")

    def __init__(self, params, *args, gamma: float | None = None, amplitude: float | str = 1.0,
                 mode: str = "l2-full", check_finite: bool = True, **kwargs) -> None:
        self._bort_init(gamma, amplitude, mode, check_finite)
        base.__init__(self, params, *args, **kwargs)
        self._bort_after_init()

    return type(f"Bort{base.__name__}", (_BortMixin, base),
                {"__init__": __init__, "_bort_coupling": coupling, "__module__": __name__,
                 "__doc__": f"{base.__name__} with the {coupling} Bort correction (see with_bort)."})


# ---------------------------------------------------------------------------------------------- groups
def make_bort_param_groups(
    model: torch.nn.Module,
    *,
    gamma: float | None = None,
    amplitude: float | str = 1.0,
    exclude: Iterable[str] = (),
    exclude_classifier: bool | None = None,
) -> list[dict[str, Any]]:
    """Two param groups (spec B2.6): the weights of Linear/Conv1d/2d/3d layers with ``gamma``, and every
    other trainable parameter (biases, norm layers, embeddings, transposed convolutions, attention
    in-projections) with ``gamma=0``. Works on ``torch.export`` graphs too (layers found from the graph).

    ``exclude``: module names (or prefixes) to leave unconstrained. ``exclude_classifier`` (default: True
    for a numeric amplitude, False for ``"ada"``) leaves the last Linear layer unconstrained, because
    unit-norm rows cap the logit scale. With ``amplitude="ada"`` tall weights (more outputs than inputs)
    are left unconstrained too, since "ada" has no fixed point for them (spec B2.5).
    """
    from governance_plugins.bort.layers import roles_from_torch

    if gamma is None:
        raise TypeError(f"make_bort_param_groups needs gamma: {_GAMMA_HELP}")
    if exclude_classifier is None:
        exclude_classifier = amplitude != "ada"
    excluded = tuple(exclude)
    roles = roles_from_torch(model)
    layer_weights = [n for n, r in roles.items()
                     if r.kind in ("linear", "conv") and (n == "weight" or n.endswith(".weight"))]
    if exclude_classifier:
        linears = [n for n in layer_weights if roles[n].kind == "linear"]
        if linears:
            excluded += (linears[-1][: -len(".weight")] if linears[-1] != "weight" else "",)
    named = dict(model.named_parameters())
    chosen: set[int] = set()
    for pname in layer_weights:
        w = named.get(pname)
        if w is None or not w.requires_grad or w.ndim < 2:
            continue
        module = pname[: -len(".weight")] if pname != "weight" else ""
        if any(module == e or module.startswith(e + ".") for e in excluded):
            continue
        if amplitude == "ada" and _is_tall(w):
            continue
        chosen.add(id(w))
    constrained = [p for p in model.parameters() if id(p) in chosen]
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    groups: list[dict[str, Any]] = []
    if constrained:
        groups.append({"params": constrained, "gamma": float(gamma), "amplitude": amplitude})
    if others:
        groups.append({"params": others, "gamma": 0.0})
    if not constrained:
        warnings.warn("make_bort_param_groups: no Linear/Conv weight is constrained (all excluded or none found)",
                      UserWarning, stacklevel=2)
    return groups
