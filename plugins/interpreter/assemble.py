"""Turning a post-hoc FLINT run into its Explanation: metrics, controls, summary and findings (every figure
beside its control, "not informative" said where it does not beat it), warnings, tables, arrays, details."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from governance import Explanation, MethodContext
from governance_plugins.interpreter import controls as K
from governance_plugins.interpreter import metrics as M


@dataclass
class PosthocResult:
    """Everything a post-hoc run produced, handed to :func:`build_explanation` in one piece."""

    plan: Any  # posthoc.Plan
    main: Any  # posthoc.Trained
    controls: list[K.ControlRun]
    vis: dict[str, Any]
    timings: dict[str, float]
    mlflow_model: dict[str, Any]
    warnings: list[str]
    digest: str


def _label(c: int, names: list[str] | None) -> str:
    return str(names[c]) if names and c < len(names) else str(c)


def build_explanation(method: Any, ctx: MethodContext, res: PosthocResult) -> Explanation:
    main_fig = K.figures_of(res.main.ev, res.plan.labels_hold, ctx.config.purity_k)
    expl = Explanation(method=method.name, metrics=_metrics(ctx, res, main_fig), arrays=_arrays(res),
                       figures=res.vis["figures"], tables=_tables(ctx, res), details=_details(ctx, res, main_fig),
                       warnings=list(res.warnings))
    K.record(expl, main_fig, res.controls)
    expl.summary, expl.findings = _summary_and_findings(ctx, res, main_fig, expl)
    expl.warnings += _warnings(ctx, res, main_fig)
    return expl


def _metrics(ctx: MethodContext, res: PosthocResult, fig: K.Figures) -> dict[str, float]:
    ev, plan, cfg = res.main.ev, res.plan, ctx.config
    metrics: dict[str, float] = {k: float(v) for k, v in ev.metrics.items()}
    stats = dict(ev.conciseness)
    stats.setdefault(K.HEADLINE_TAU, fig.cns)
    for tau, c in sorted(stats.items()):
        metrics[f"cns_g_tau_{tau:g}"] = float(c.mean)
        metrics[f"no_relevant_share_tau_{tau:g}"] = float(c.share_none)
        metrics[f"no_relevant_count_tau_{tau:g}"] = float(c.n_none)
    metrics["fidelity_kappa"] = float(fig.agreement.kappa)
    metrics["attribute_purity"] = float(fig.purity.mean)
    metrics["n_attributes"] = float(plan.spec.n_attributes)
    metrics["n_disagreements"] = float(len(res.vis["disagree"]))
    metrics["n_heldout"] = float(len(plan.hold_idx))
    metrics["n_relevant_pairs"] = float(len(M.relevant_pairs(res.vis["R"], cfg.relevance_threshold)))
    metrics["cache_seconds"] = float(res.timings["cache_seconds"])
    eps = res.main.epoch_seconds
    metrics["train_seconds_per_epoch"] = float(np.mean(eps)) if eps else float("nan")
    metrics["predictor_forward_calls"] = float(res.main.forward_calls)
    if plan.labels_hold is not None:
        metrics["accuracy_predictor"] = float((ev.f_pred == plan.labels_hold).mean())
        metrics["accuracy_interpreter"] = float((ev.g_pred == plan.labels_hold).mean())
    if res.vis["am"] is not None:
        metrics["am_outside_fraction"] = float(np.mean(res.vis["am"]["outside_fraction"]))
    return metrics


def _verdict_words(expl: Explanation, metric: str) -> str:
    """'informative against …' / 'not informative against …', one clause per control of ``metric``."""
    parts = [f"{c.verdict} against the {_control_name(c)} ({c.control_value:.3g}, margin {c.margin:.2g})"
             for c in expl.controls if c.metric == metric]
    return "; ".join(parts) if parts else "no control was computed"


def _control_name(c: Any) -> str:
    return c.label.split(" vs ", 1)[-1] if c.label else c.key


def _failed(expl: Explanation, metric: str) -> list[str]:
    return [_control_name(c) for c in expl.controls if c.metric == metric and not c.informative]


def _summary_and_findings(ctx: MethodContext, res: PosthocResult, fig: K.Figures,
                          expl: Explanation) -> tuple[str, list[str]]:
    plan, names = res.plan, ctx.data.class_names
    J, n_hold, verdicts = plan.spec.n_attributes, len(plan.hold_idx), expl.verdicts()
    fid, cns, pur = fig.fidelity, fig.cns, fig.purity
    v = lambda m: verdicts.get(m, "no control")  # noqa: E731
    summary = (f"A FLINT interpreter with {J} attributes read from {', '.join(plan.spec.layers)} was trained on the "
               f"frozen model and reproduces its decisions on {fid:.1%} of {n_hold} held-out inputs (Cohen's κ "
               f"{fig.agreement.kappa:.2f} beyond chance). Against its controls: fidelity {v('fidelity')}, κ "
               f"{v('fidelity_kappa')}, CNS_g(2) = {cns.mean:.2f} attributes per decision {v('cns_g_tau_2')}, "
               f"attribute purity {pur.mean:.2f} {v('attribute_purity')}.")
    findings = [
        f"Fidelity: the interpreter agrees with the model on {fid:.1%} of held-out inputs "
        f"({len(res.vis['disagree'])} disagreements); {_verdict_words(expl, 'fidelity')}.",
        f"Fidelity beyond chance: κ = {fig.agreement.kappa:.3f} (agreement expected from the class frequencies alone: "
        f"{fig.agreement.expected:.1%}); {_verdict_words(expl, 'fidelity_kappa')}.",
        (f"Conciseness: CNS_g(2) = {cns.mean:.2f} of {J} attributes have relevance above 0.5, over the "
         f"{cns.n_explained} held-out inputs that have at least one; {cns.n_none} ({cns.share_none:.1%}) have none "
         f"(their decision rests on negative contributions or the bias) and are not counted as 0; "
         f"{_verdict_words(expl, 'cns_g_tau_2')}."),
        (f"Attribute purity: on average {pur.mean:.0%} of an attribute's {pur.k} most activating held-out inputs "
         f"(searched over all classes) share one {_purity_basis(plan)}, over {len(pur.attributes)} live attributes; "
         f"{_verdict_words(expl, 'attribute_purity')}."),
    ]
    what = {"fidelity": "that the interpreter imitates this model's decisions rather than guessing",
            "fidelity_kappa": "agreement beyond what the class frequencies give",
            "cns_g_tau_2": "that the model's decisions rest on few learned attributes",
            "attribute_purity": "that the attributes pick out class-specific inputs because of what the model learned"}
    for metric, claim in what.items():
        if failed := _failed(expl, metric):
            findings.append(f"{K.LABELS[metric]} is not informative: it does not beat the control of the "
                            f"{' nor that of the '.join(failed)} by the margin, so the figure does not show {claim}.")
    findings += _randomised_finding(res, fig)
    by_class: dict[int, list[tuple[int, float]]] = {}
    for c, j, r in M.relevant_pairs(res.vis["R"], ctx.config.relevance_threshold):
        by_class.setdefault(c, []).append((j, r))
    for c in sorted(by_class, key=lambda c: -max(r for _, r in by_class[c]))[:5]:
        tops = ", ".join(f"φ{j} ({r:.2f})" for j, r in sorted(by_class[c], key=lambda t: -t[1])[:3])
        findings.append(f"Class {_label(c, names)} is explained mainly by {tops}.")
    findings += [f"Control '{run.label}' was not computed: {run.skipped}." for run in res.controls if run.skipped]
    return summary, findings


def _randomised_finding(res: PosthocResult, fig: K.Figures) -> list[str]:
    run = next((r for r in res.controls if r.key == "randomised_model" and r.draws), None)
    if run is None:
        return []
    d, ctrl = run.details, run.draws[0]
    return [f"The model with randomised weights predicts its most common class for {d['majority_class_share']:.0%} "
            f"of held-out inputs and its interpreter agrees with it on {d['fidelity']:.0%}: raw fidelity is high "
            f"for a model that learned nothing, so it is compared with that control only as κ "
            f"({fig.agreement.kappa:.2f} here, {ctrl.agreement.kappa:.2f} there)."]


def _purity_basis(plan: Any) -> str:
    return "true label" if plan.labels_hold is not None else "model class (the data has no labels)"


def _warnings(ctx: MethodContext, res: PosthocResult, fig: K.Figures) -> list[str]:
    plan, ev, vis = res.plan, res.main.ev, res.vis
    out = list(plan.notes)
    dead = M.dead_attributes(ev.phi)
    J = plan.spec.n_attributes
    if len(dead):
        out.append(f"{len(dead)} of {J} attributes are never active on held-out data (dead attributes: "
                   f"{', '.join(map(str, dead[:12]))}{'…' if len(dead) > 12 else ''}).")
    if fig.fidelity < 0.9:
        out.append(f"fidelity is only {fig.fidelity:.1%}: the interpretations describe a model that often decides "
                   "differently from the audited one; train longer (epochs) or with a larger lr.")
    if not np.isfinite(fig.cns.mean):
        out.append("no held-out input has an attribute with relevance above 0.5, so CNS_g(2) is undefined.")
    if vis["pairs_note"]:
        out.append(vis["pairs_note"])
    if vis["am_off"]:
        out.append(vis["am_off"])
    if plan.spec.output_transform != "logits":
        out.append(f"the model's outputs were read as {plan.spec.output_transform}.")
    am, s = vis["am"], vis["am_settings"]
    if am is not None and not s.clamp and float(np.mean(am["outside_fraction"])) > 0.05:
        out.append(f"{float(np.mean(am['outside_fraction'])):.0%} of activation-maximisation pixels lie outside the "
                   f"data range [{s.lo:g}, {s.hi:g}] (shown clipped); set am_clamp to keep them inside.")
    return out


def _tables(ctx: MethodContext, res: PosthocResult) -> dict[str, list[dict[str, Any]]]:
    plan, ev, vis, names = res.plan, res.main.ev, res.vis, ctx.data.class_names
    hold = plan.hold_idx
    top = M.top_attributes(ev.relevances, 3)
    pair_rows = []
    for k, (c, j, r) in enumerate(vis["pairs"]):
        rows = [i for i in vis["mas"][k] if i >= 0]
        pair_rows.append({"class": _label(c, names), "class_index": c, "attribute": j, "relevance": round(r, 4),
                          "max_activating_samples": [int(hold[i]) for i in rows],
                          "model_classes": ", ".join(_label(int(ev.f_pred[i]), names) for i in rows),
                          "share_of_class": round(float(np.mean([ev.f_pred[i] == c for i in rows])), 4) if rows else None})
    local = [{"sample": int(hold[i]), "predictor": _label(ev.f_pred[i], names),
              "interpreter": _label(ev.g_pred[i], names), "agree": bool(ev.f_pred[i] == ev.g_pred[i]),
              "top_attributes": ", ".join(f"φ{j} ({ev.relevances[i, j]:.2f})" for j in top[i])}
             for i in vis["local_rows"]]
    disagreements = [{"sample": int(hold[i]), "predictor": _label(ev.f_pred[i], names),
                      "interpreter": _label(ev.g_pred[i], names), "top_attributes": ", ".join(f"φ{j}" for j in top[i])}
                     for i in vis["disagree"][:20]]
    cns = [{"tau": t, "threshold": round(1 / t, 4), "cns_g": round(c.mean, 4) if np.isfinite(c.mean) else None,
            "no_relevant": c.n_none, "no_relevant_share": round(c.share_none, 4)} for t, c in ev.conciseness.items()]
    history = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in res.main.history]
    controls = [{"control": run.label, "key": run.key, "draws": len(run.draws), "seeds": run.seeds,
                 "skipped": run.skipped} for run in res.controls]
    return {"pairs": pair_rows, "local": local, "disagreements": disagreements, "cns": cns, "history": history,
            "control_runs": controls}


def _arrays(res: PosthocResult) -> dict[str, np.ndarray]:
    plan, ev, vis = res.plan, res.main.ev, res.vis
    hold, mas = plan.hold_idx, vis["mas"]
    arrays: dict[str, np.ndarray] = {
        "global_relevance": vis["R"].astype(np.float32),
        "local_relevances": ev.relevances.astype(np.float32),
        "attributes": ev.phi.astype(np.float32),
        "W": res.main.interp.W.cpu().numpy().astype(np.float32),
        "heldout_indices": hold.astype(np.int64),
        "predictor_class": ev.f_pred.astype(np.int64),
        "interpreter_class": ev.g_pred.astype(np.int64),
        "interpreter_logits": ev.g_logits.astype(np.float32),
        "disagreements": hold[vis["disagree"]].astype(np.int64),
        "cns_taus": np.asarray(list(ev.conciseness), dtype=np.float32),
        "cns_values": np.asarray([c.mean for c in ev.conciseness.values()], dtype=np.float32),
        "cns_no_relevant": np.asarray([c.n_none for c in ev.conciseness.values()], dtype=np.int64),
        "pairs": np.asarray([(c, j) for c, j, _ in vis["pairs"]], dtype=np.int64).reshape(-1, 2),
        "mas_indices": np.where(mas >= 0, hold[np.clip(mas, 0, None)], -1).astype(np.int64),
    }
    if vis["am"] is not None:
        arrays["am_images"] = vis["am"]["images"].astype(np.float32)
        arrays["am_phi_before"] = vis["am"]["phi_before"].astype(np.float32)
        arrays["am_phi_after"] = vis["am"]["phi_after"].astype(np.float32)
    return arrays


def _details(ctx: MethodContext, res: PosthocResult, fig: K.Figures) -> dict[str, Any]:
    plan, cfg, vis, names = res.plan, ctx.config, res.vis, ctx.data.class_names
    spec = plan.spec
    return {
        "mode": "post-hoc", "layers": spec.layers, "layer_shapes": spec.layer_shapes, "layer_choice": plan.why_layers,
        "n_attributes": spec.n_attributes, "n_classes": spec.n_classes, "class_names": names,
        "n_train": int(plan.n_train), "n_heldout": int(len(plan.hold_idx)),
        "relevance_variant": "paper: r_j = α_j / max_i |α_i|, α_j = φ_j · W[j, ŷ] (bias ignored), ŷ = interpreter's class",
        "conciseness": "mean over the held-out inputs with at least one attribute above 1/τ; inputs with none are "
                       "counted apart (no_relevant_*), not as 0",
        "purity": {"k": fig.purity.k, "basis": _purity_basis(plan), "attributes": fig.purity.attributes.tolist(),
                   "per_attribute": [round(float(v), 4) for v in fig.purity.per_attribute]},
        "relevance_threshold": cfg.relevance_threshold, "reconstruction": spec.reconstruction,
        "decoder_output": spec.decoder_output, "output_transform": spec.output_transform,
        "schedule": plan.fit.schedule.to_dict(), "predictor_sha256": res.digest, "predictor_unchanged": True,
        "predictor_forward_calls": res.main.forward_calls,
        "activations": "streamed (the model runs on every mini-batch)" if plan.streaming else "cached in memory",
        "cache_mib": round(plan.cache_mib, 3), "timings": {k: round(v, 4) for k, v in res.timings.items()},
        "epoch_seconds": [round(s, 4) for s in res.main.epoch_seconds], "mlflow_model": res.mlflow_model,
        "controls": {run.key: {"seeds": run.seeds, "skipped": run.skipped, **run.details} for run in res.controls},
        "am_settings": vis["am_settings"].to_dict() if vis["am_settings"] is not None else None,
        "am_off": vis["am_off"],
        "am_pairs": [{"class": _label(c, names), "attribute": j} for c, j, _ in vis["am_pairs"]]
        if vis["am"] is not None else [],
        "am_skipped": [{"class": _label(c, names), "attribute": j,
                        "reason": "attribute not active at κ·x for any maximum-activating sample"}
                       for c, j, _ in vis["am_skipped"]],
        "dead_attributes": [int(j) for j in M.dead_attributes(res.main.ev.phi)],
    }
