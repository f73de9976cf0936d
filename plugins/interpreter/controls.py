"""Controls for FLINT's headline figures: the same figures where there is nothing to find.

* ``untrained``: the interpreter before training (its own initial weights and further initialisations), on the
  same held-out activations of the audited model. Cheap: no training.
* ``randomised_model``: a copy of the model whose weight tensors have their entries permuted (same values, no
  learned structure; the audited model is never touched), interpreted by the same pipeline, seed and epochs.
* ``permuted_targets`` (optional): an interpreter trained on the audited model's activations with the model's
  outputs shuffled across the training samples, measured against the model's real decisions.

Headline figures: fidelity (higher is better), its chance-corrected form Cohen's κ, CNS_g(2) over the samples with
a relevant attribute (lower is better) and the class-independent attribute purity (higher is better). Raw
fidelity is not compared with the randomised model: a model with randomised weights often predicts one class for
almost every input, and any interpreter then "agrees" with it; κ, which discounts agreement expected from the
class frequencies, is compared with every control instead. A figure counts as informative against a
control only if it beats it by a margin: two standard errors of the difference (held-out sampling), two standard
deviations of the control over its draws, and a floor, whichever is largest.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from governance.quality import spread_margin
from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter.nets import FlintInterpreter
from governance_plugins.interpreter.training import Evaluation, evaluate_source

HEADLINE_TAU = 2.0
#: below these differences two figures are not told apart, whatever the statistics say
FLOORS = {"fidelity": 0.02, "fidelity_kappa": 0.02, "cns_g_tau_2": 0.1, "attribute_purity": 0.02}
BETTER = {"fidelity": "higher", "fidelity_kappa": "higher", "cns_g_tau_2": "lower", "attribute_purity": "higher"}
LABELS = {"fidelity": "Fidelity", "fidelity_kappa": "Fidelity beyond chance (Cohen's κ)", "cns_g_tau_2": "CNS_g(2)",
          "attribute_purity": "Attribute purity"}
#: the headline figures each control is compared on
COMPARED = {"untrained": ("fidelity", "fidelity_kappa", "cns_g_tau_2", "attribute_purity"),
            "randomised_model": ("fidelity_kappa", "cns_g_tau_2", "attribute_purity"),
            "permuted_targets": ("fidelity", "fidelity_kappa", "cns_g_tau_2", "attribute_purity")}


@dataclass(frozen=True)
class Figures:
    """The headline figures of one interpreter on held-out data, with their standard errors."""

    agreement: M.Agreement
    cns: M.Conciseness
    purity: M.Purity

    @property
    def fidelity(self) -> float:
        return self.agreement.observed

    def value(self, metric: str) -> float:
        return {"fidelity": self.fidelity, "fidelity_kappa": self.agreement.kappa, "cns_g_tau_2": self.cns.mean,
                "attribute_purity": self.purity.mean}[metric]

    def standard_error(self, metric: str) -> float:
        if metric == "fidelity":
            p, n = self.fidelity, self.agreement.n
            return math.sqrt(p * (1 - p) / n) if n else float("nan")
        if metric == "fidelity_kappa":
            return self.agreement.kappa_standard_error
        return self.cns.standard_error if metric == "cns_g_tau_2" else self.purity.standard_error


def figures_of(ev: Evaluation, labels: np.ndarray | None, k: int) -> Figures:
    """Fidelity, CNS_g(2) and purity (by true label when known, else by the model's class)."""
    lab = labels if labels is not None else ev.f_pred
    return Figures(M.agreement(ev.g_pred, ev.f_pred, ev.g_logits.shape[1]),
                   M.conciseness_stats(ev.relevances, HEADLINE_TAU), M.top_k_purity(ev.phi, lab, k))


@dataclass
class ControlRun:
    """One control: what it is, and its figures over one or more draws."""

    key: str
    control: str
    label: str
    draws: list[Figures] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    skipped: str | None = None  # why the control could not be computed
    details: dict[str, Any] = field(default_factory=dict)


def run_controls(ctx: Any, plan: Any, source: Any, main: Any) -> list[ControlRun]:
    """Every configured control for the interpreter ``main`` trained on ``source`` (see the module docstring)."""
    cfg = ctx.config
    runs: list[ControlRun] = []
    if "untrained" in cfg.controls:
        runs.append(untrained(plan, source, cfg.control_draws, cfg.purity_k))
    if "randomised_model" in cfg.controls:
        ctx.progress(0.68, "control: interpreter of the model with randomised weights")
        runs.append(randomised_model(ctx.model, plan, cfg.purity_k, seed=int(ctx.seed)))
    if "permuted_targets" in cfg.controls:
        ctx.progress(0.76, "control: interpreter trained on permuted targets")
        runs.append(permuted_targets(plan, source, cfg.purity_k, seed=int(ctx.seed)))
    return runs


def untrained(plan: Any, source: Any, draws: int, k: int) -> ControlRun:
    """The interpreter at initialisation: draw 0 is the trained interpreter's own initial weights (the run's
    seed), the others are further seeds. Evaluated on the same held-out activations."""
    hold, x = source.rows(plan.n_train, len(plan.X)), plan.x[plan.n_train:]
    run = ControlRun("untrained", "the same interpreter before training (random initial weights), on the same "
                     "held-out activations", "untrained interpreter")
    for d in range(draws):
        seed = plan.fit.seed + d
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            interp = FlintInterpreter(plan.spec).to(plan.device)
        run.draws.append(figures_of(evaluate_source(interp, hold, x, taus=plan.taus), plan.labels_hold, k))
        run.seeds.append(seed)
    return run


def randomised_copy(model: Any, seed: int) -> Any | None:
    """A shallow copy of the LoadedModel whose torch view is a deep copy with every weight tensor's entries
    permuted (seeded). None when the model's torch view cannot be swapped for a copy."""
    module = model.torch_module()
    attr = next((k for k, v in vars(model).items() if v is module), None) if module is not None else None
    if attr is None:
        return None
    clone_module = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in clone_module.parameters():
            if p.is_floating_point() and p.numel() > 1:
                flat = p.detach().reshape(-1).clone()
                p.copy_(flat[torch.randperm(flat.numel(), generator=gen).to(flat.device)].view_as(p))
    clone = copy.copy(model)
    setattr(clone, attr, clone_module)
    return clone if clone.torch_module() is clone_module else None


def _changes_outputs(model: Any, clone: Any, x: np.ndarray, layers: Sequence[str]) -> bool:
    """True when the copy really computes something else (guards against a copy that still runs the original)."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(model.device)
    with torch.no_grad():
        a, _ = model.forward_with_activations(xt, list(layers))
        b, _ = clone.forward_with_activations(xt, list(layers))
    return not torch.equal(a, b)


def randomised_model(model: Any, plan: Any, k: int, *, seed: int) -> ControlRun:
    from governance_plugins.interpreter.posthoc import read_activations, train

    run = ControlRun("randomised_model", "an interpreter trained the same way (same samples, seed and epochs) on a "
                     "copy of the model with its weights randomised (each weight tensor's entries permuted)",
                     "model with randomised weights")
    clone = randomised_copy(model, seed)
    if clone is None or not _changes_outputs(model, clone, plan.X[:8], plan.spec.layers):
        run.skipped = ("the model's torch view could not be copied with randomised weights" if clone is None else
                       "randomising the copy's weights did not change its outputs")
        return run
    src, _, _ = read_activations(clone, plan, lambda *_: None, transform=plan.spec.output_transform)
    trained = train(plan, src)
    run.draws.append(figures_of(trained.ev, plan.labels_hold, k))
    run.seeds.append(seed)
    share = float(np.bincount(trained.ev.f_pred).max() / len(trained.ev.f_pred))
    run.details = {"train_seconds": round(trained.seconds, 3), "forward_calls": trained.forward_calls,
                   "fidelity": round(trained.ev.metrics["fidelity"], 4), "majority_class_share": round(share, 4)}
    return run


def permuted_targets(plan: Any, source: Any, k: int, *, seed: int) -> ControlRun:
    from governance_plugins.interpreter.activations import ActivationCache
    from governance_plugins.interpreter.posthoc import train

    run = ControlRun("permuted_targets", "an interpreter trained on the model's activations with the model's "
                     "outputs shuffled across the training samples, measured against the model's real decisions",
                     "interpreter trained on permuted targets")
    if not isinstance(source, ActivationCache):
        run.skipped = "needs the activation cache (the activations are streamed in this run)"
        return run
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(plan.n_train))
    logits = source.class_logits.clone()
    logits[: plan.n_train] = source.class_logits[: plan.n_train][perm.to(logits.device)]
    targets = ActivationCache(source.acts, source.outputs, source.layers, 0, logits)
    trained = train(plan, source, targets=targets)
    run.draws.append(figures_of(trained.ev, plan.labels_hold, k))
    run.seeds.append(seed)
    return run


def control_margin(metric: str, main: Figures, draws: Sequence[Figures]) -> tuple[float, float | None, float, str]:
    """(control value, its spread over draws, margin, rule) for ``metric``."""
    floor = FLOORS[metric]
    values = [d.value(metric) for d in draws]
    mean, m_draws, _ = spread_margin(values, k=2.0, floor=floor)
    ses = [d.standard_error(metric) for d in draws]
    ses = [s for s in ses if math.isfinite(s)]
    se_main = main.standard_error(metric)
    se_diff = math.sqrt((se_main if math.isfinite(se_main) else 0.0) ** 2 + (float(np.mean(ses)) if ses else 0.0) ** 2)
    finite = [v for v in values if math.isfinite(v)]
    spread = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    margin = max(m_draws, 2.0 * se_diff)
    rule = (f"largest of 2 x standard error of the difference ({2 * se_diff:.3g})"
            + (f", 2 x sd over {len(finite)} draws ({2 * spread:.3g})" if spread is not None else "")
            + f" and the floor {floor:g}")
    return mean, spread, margin, rule


def record(expl: Any, main: Figures, runs: Sequence[ControlRun]) -> None:
    """Add every control's comparison to the explanation (``add_control``; the host logs and reports them)."""
    for run in runs:
        if run.skipped or not run.draws:
            continue
        for metric in COMPARED[run.key]:
            if metric not in expl.metrics:
                continue
            value, spread, margin, rule = control_margin(metric, main, run.draws)
            note = None
            if metric == "cns_g_tau_2":
                shares = [d.cns.share_none for d in run.draws]
                note = (f"samples with no attribute above 0.5: {main.cns.share_none:.1%} here, "
                        f"{float(np.mean(shares)):.1%} for the control (left out of both means)")
            expl.add_control(metric, value, key=run.key, control=run.control, better=BETTER[metric], margin=margin,
                             margin_rule=rule, control_spread=spread, draws=len(run.draws),
                             label=f"{LABELS[metric]} vs {run.label}", note=note)
