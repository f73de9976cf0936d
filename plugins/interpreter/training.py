"""Training loops (A2.6): post-hoc on cached activations of a frozen predictor, and joint (by design).

Both use one Adam optimiser and the epoch-gated loss weights of :class:`LossSchedule`. Callers seed torch
(``torch.random.fork_rng`` + ``manual_seed``) so that shuffling, dropout and initialisation are reproducible.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter.activations import ActivationCache, ActivationSource
from governance_plugins.interpreter.losses import LossSchedule, interpreter_loss
from governance_plugins.interpreter.nets import FlintInterpreter


#: below this many activation floats per optimiser step, one intra-op thread is faster: torch's thread pool
#: costs more than it saves on tiny tensors (measured 3.6 ms/step on 1 thread against 25-79 ms on 2 busy
#: cores for the digits-CNN interpreter).
SMALL_STEP_FLOATS = 1_000_000


@contextmanager
def single_thread_if_small(floats_per_step: int) -> Iterator[None]:
    """Run the block on one intra-op thread when a step touches fewer than ``SMALL_STEP_FLOATS`` floats."""
    if floats_per_step >= SMALL_STEP_FLOATS or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class FitOptions:
    """How an interpreter is trained: the loss weights and gates, the optimiser and the epochs (A2.3, A2.6).

    ``min_steps_per_epoch`` repeats passes over a small dataset within an epoch until that many optimiser steps;
    ``seed`` seeds the mini-batch order (callers seed the initialisation)."""

    schedule: LossSchedule = field(default_factory=LossSchedule)
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    min_steps_per_epoch: int = 0
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed))


@dataclass
class Evaluation:
    """The interpreter on held-out samples: its outputs, the interpretations and the metrics."""

    g_logits: np.ndarray
    f_logits: np.ndarray
    phi: np.ndarray
    relevances: np.ndarray  # paper variant, (n, J)
    g_pred: np.ndarray
    f_pred: np.ndarray
    reconstruction_error: float
    metrics: dict[str, float] = field(default_factory=dict)
    conciseness: dict[float, M.Conciseness] = field(default_factory=dict)

    @property
    def cns(self) -> dict[float, float]:
        """``CNS_g(τ)`` per τ (over the samples with at least one relevant attribute)."""
        return {t: c.mean for t, c in self.conciseness.items()}


@torch.no_grad()
def evaluate(interp: FlintInterpreter, acts: Sequence[torch.Tensor], f_logits: torch.Tensor, x: torch.Tensor,
             *, taus: Sequence[float] = M.DEFAULT_TAUS, batch_size: int = 1024) -> Evaluation:
    """Fidelity, conciseness, reconstruction error and relevances on held-out data (interpreter in eval mode)."""
    source = ActivationCache(list(acts), f_logits, [], 0, f_logits)
    return evaluate_source(interp, source, x, taus=taus, batch_size=batch_size)


@torch.no_grad()
def evaluate_source(interp: FlintInterpreter, source: ActivationSource, x: torch.Tensor, *,
                    taus: Sequence[float] = M.DEFAULT_TAUS, batch_size: int = 1024) -> Evaluation:
    """:func:`evaluate` on every row of an activation source (cached or streamed), in batches."""
    was_training = interp.training
    interp.eval()
    g_parts, phi_parts, f_parts, err, n = [], [], [], 0.0, len(source)
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size))
        acts, f_batch = source.batch(idx)
        g, phi = interp([a.float() for a in acts])
        diff = interp.decode(phi) - x[s : s + len(idx)]
        err += float((diff.abs() if interp.spec.reconstruction == "l1" else diff**2).mean()) * len(phi)
        g_parts.append(g)
        phi_parts.append(phi)
        f_parts.append(f_batch)
    interp.train(was_training)
    g = torch.cat(g_parts).cpu().numpy().astype(np.float64)
    phi = torch.cat(phi_parts).cpu().numpy().astype(np.float64)
    f = torch.cat(f_parts).detach().cpu().numpy().astype(np.float64)
    g_pred = g.argmax(1)
    r = M.relevances(M.contributions(phi, interp.W.cpu().numpy(), g_pred), "paper")
    mets = {"fidelity": M.fidelity(g, f, 1), "reconstruction_error": err / max(n, 1),
            "dead_attribute_fraction": len(M.dead_attributes(phi)) / phi.shape[1],
            "mean_attribute": float(np.abs(phi).mean())}
    if g.shape[1] > 5:
        mets["fidelity_top5"] = M.fidelity(g, f, 5)
    return Evaluation(g, f, phi, r, g_pred, f.argmax(1), err / max(n, 1), mets, M.conciseness_curve(r, taus))


def _batches(n: int, batch_size: int, generator: torch.Generator, min_steps: int = 0) -> list[torch.Tensor]:
    """Mini-batch indices for one epoch: one shuffled pass over the data, or as many passes as it takes to
    reach ``min_steps`` optimiser steps (small datasets; see ``FlintConfig.min_steps_per_epoch``)."""
    per_pass = -(-n // batch_size)
    passes = max(1, -(-min_steps // per_pass)) if min_steps else 1
    out: list[torch.Tensor] = []
    for _ in range(passes):
        perm = torch.randperm(n, generator=generator)
        out += [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    return out


def _epoch_record(epoch: int, w: dict[str, float], sums: dict[str, float], n_batches: int) -> dict[str, Any]:
    return {"epoch": epoch, **{f"w_{k}": v for k, v in w.items()}, **{k: v / n_batches for k, v in sums.items()}}


def fit_posthoc(interp: FlintInterpreter, source: ActivationSource, x: torch.Tensor, options: FitOptions, *,
                holdout: tuple[ActivationSource, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """Train (Ψ, h, d) against the frozen predictor's activations and class logits (``source``, cached or
    streamed) on inputs ``x`` (same rows), to imitate the predictor: no labels.

    ``holdout`` = (source, x) evaluated after each epoch. Returns one record per epoch (weights in force, mean
    loss terms, held-out fidelity and CNS_g)."""
    opt = torch.optim.Adam(interp.parameters(), lr=options.lr)
    generator = options.generator()
    history: list[dict[str, Any]] = []
    for epoch in range(1, options.epochs + 1):
        w = options.schedule.at(epoch)
        interp.train()
        sums: dict[str, float] = {}
        batches = _batches(len(source), options.batch_size, generator, options.min_steps_per_epoch)
        for idx in batches:
            acts, f_logits = source.batch(idx)
            g, phi = interp(acts)
            x_hat = interp.decode(phi) if w["gamma"] > 0 else None
            loss, terms = interpreter_loss(w, g_logits=g, f_logits=f_logits, phi=phi, x_hat=x_hat,
                                           x=x[idx], reconstruction=interp.spec.reconstruction)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        record = _epoch_record(epoch, w, sums, len(batches))
        if holdout is not None:
            ev = evaluate_source(interp, holdout[0], holdout[1])
            record.update({"fidelity": ev.metrics["fidelity"], "cns_g_2": ev.cns.get(2.0),
                           "dead_attribute_fraction": ev.metrics["dead_attribute_fraction"]})
        history.append(record)
        if options.on_epoch is not None:
            options.on_epoch(epoch, record)
    interp.eval()
    return history


class LayerTaps:
    """Forward hooks on named submodules of a trainable ``nn.Module`` (joint mode), keeping gradients."""

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        mods = dict(module.named_modules())
        if missing := [l for l in layers if l not in mods]:
            from governance.errors import MethodError

            raise MethodError(f"layer(s) {', '.join(missing)} do not exist in the predictor",
                              hint=f"available layers: {', '.join(n for n in mods if n)}")
        self.module, self.layers, self.acts = module, list(layers), {}
        self._mods = [mods[l] for l in layers]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.acts = {}
        handles = [m.register_forward_hook(lambda _m, _i, o, name=name: self.acts.__setitem__(name, o))
                   for m, name in zip(self._mods, self.layers)]
        try:
            out = self.module(x)
        finally:
            for h in handles:
                h.remove()
        return out, [self.acts[l] for l in self.layers]


def fit_joint(predictor: nn.Module, taps: LayerTaps, interp: FlintInterpreter, x: torch.Tensor, y: torch.Tensor,
              options: FitOptions, *, evaluate_fn: Callable[[], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Train predictor and interpreter together: ``L_pred + β·L_of + γ·L_if + δ·L_cd + λ_spa·L_sp``.

    ``L_of`` uses the predictor's logits as a detached target, so it reaches the predictor only through Ψ
    and the tapped layers (oracle O-F5). The predictor is in training mode, as in the reference loop."""
    params = list(predictor.parameters()) + list(interp.parameters())
    opt = torch.optim.Adam(params, lr=options.lr)
    generator = options.generator()
    history: list[dict[str, Any]] = []
    for epoch in range(1, options.epochs + 1):
        w = options.schedule.at(epoch)
        predictor.train()
        interp.train()
        sums: dict[str, float] = {}
        batches = _batches(len(x), options.batch_size, generator, options.min_steps_per_epoch)
        for idx in batches:
            xb = x[idx]
            f_logits, acts = taps(xb)
            g, phi = interp(acts)
            x_hat = interp.decode(phi) if w["gamma"] > 0 else None
            l_pred = F.cross_entropy(f_logits, y[idx])
            rest, terms = interpreter_loss(w, g_logits=g, f_logits=f_logits, phi=phi, x_hat=x_hat, x=xb,
                                           reconstruction=interp.spec.reconstruction)
            loss = l_pred + rest
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            terms["L_pred"] = float(l_pred.detach())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        predictor.eval()
        interp.eval()
        record = _epoch_record(epoch, w, sums, len(batches))
        if evaluate_fn is not None:
            record.update(evaluate_fn())
        history.append(record)
        if options.on_epoch is not None:
            options.on_epoch(epoch, record)
    return history
