"""The reconstruction part of the ``bort`` method: gather the B3 evidence for the model and its peers, measure the
controls for the model, and put metrics, controls, tables, arrays and findings on the explanation."""

from __future__ import annotations

from typing import Any

import numpy as np

from governance import Explanation
from governance.errors import MethodError
from governance_plugins.bort.reconstruction import ControlEvidence, Evidence, EvidenceSettings

#: (metric, better, control group, control key, words) of the evidence figures that get a control
EVIDENCE_CONTROLS = (
    ("traced_rel_error", "lower", "random_weights", "random_weights",
     "the same trace-back through the model with random weights (same architecture, untrained)"),
    ("layer_rel_error_mean", "lower", "random_weights", "random_weights",
     "the same one-layer reconstructions with random weights (same architecture, untrained)"),
    ("deletion_auc", "lower", "random_order", "random_order", "pixels deleted in random order"),
    ("deletion_auc", "lower", "random_weights", "random_weights",
     "the saliency traced back through random weights (same architecture), scored on this model"),
    ("insertion_auc", "higher", "random_order", "random_order", "pixels inserted in random order"),
    ("insertion_auc", "higher", "random_weights", "random_weights",
     "the saliency traced back through random weights (same architecture), scored on this model"),
)


def _targets(ctx: Any, recon: dict[str, Any]) -> list[tuple[str, Any]]:
    from governance_plugins.bort.method import plain_module

    model = ctx.model
    targets = [(model.info.display_name, plain_module(model)[0])]
    for peer in ctx.peers:
        module, why = plain_module(peer)
        if module is None or tuple(peer.input_spec.sample_shape) != tuple(model.input_spec.sample_shape):
            recon.setdefault("peers_skipped", []).append(
                {"label": peer.info.display_name, "reason": why or "different input shape"})
            continue
        targets.append((peer.info.display_name, module))
    return targets


def run_evidence(exp: Explanation, ctx: Any, cfg: Any, X: np.ndarray, recon: dict[str, Any]) -> list[Evidence]:
    """Evidence for the model and its peers, controls for the model; returns the evidences (the model first)."""
    from governance_plugins.bort.reconstruction import control_evidence, gather_evidence
    from governance_plugins.bort.reference import draw_seeds

    image = ctx.data.modality == "image" and X.ndim == 4
    baseline = np.asarray(ctx.data.baseline, dtype=X.dtype)
    settings = EvidenceSettings(layer=cfg.saliency_layer, deletion_steps=cfg.deletion_steps,
                                deletion_samples=cfg.deletion_samples)
    seed = int(ctx.rng.integers(2**31))
    evidences = []
    targets = _targets(ctx, recon)
    for i, (label, module) in enumerate(targets):
        try:
            evidences.append(gather_evidence(module, X, label=label, image=image, settings=settings,
                                             baseline=baseline, seed=seed))
        except KeyError as exc:
            raise MethodError(f"saliency_layer {exc} is not an operation of the traced chain of {label}",
                              hint="leave saliency_layer unset, or name a layer from the model's layer list") from None
        ctx.progress(0.5 + 0.25 * (i + 1) / len(targets), f"reconstruction: {label}")
    main = evidences[0]
    controls = control_evidence(targets[0][1], X, main, seeds=draw_seeds(seed, cfg.control_draws),
                                settings=settings, baseline=baseline, random_orders=cfg.random_orders)
    ctx.progress(0.85, "reconstruction controls")
    recon.update({"ran": True, "n_samples": int(len(X)), "image": image, "deletion_steps": cfg.deletion_steps,
                  "deletion_samples": main.deletion_samples, "saliency_layer": main.trace.saliency_layer,
                  "control_draws": cfg.control_draws, "random_orders": cfg.random_orders, "tiebreak_seed": seed,
                  "models": [{"label": ev.label, "chain": ev.trace.chain, "reason": ev.trace.chain_reason,
                              "saliency_layer": ev.trace.saliency_layer, **ev.metrics} for ev in evidences]})
    if not main.trace.chain:
        recon["traceback_unavailable"] = main.trace.chain_reason
    for skipped in recon.get("peers_skipped", []):
        exp.warnings.append(f"Peer {skipped['label']} has no reconstruction evidence: {skipped['reason']}.")
    _record(exp, main, controls, recon)
    _tables(exp, evidences, X)
    exp.findings += _findings(exp, evidences)
    return evidences


def _record(exp: Explanation, main: Evidence, controls: ControlEvidence, recon: dict[str, Any]) -> None:
    from governance_plugins.bort.reference import EVIDENCE_CONFIDENCE, Band

    exp.metrics.update(main.metrics)
    means: dict[str, float] = {}
    for metric, better, group, key, words in EVIDENCE_CONTROLS:
        draws = getattr(controls, group).get(metric)
        if metric not in main.metrics or not draws:
            continue
        band = Band.of(draws, confidence=EVIDENCE_CONFIDENCE, sides=1)
        means.setdefault(metric if group == "random_weights" else f"{metric}_random_order", band.mean)
        exp.add_control(metric, band.mean, key=key, control=f"{words}, {band.draws} draws", better=better,
                        margin=band.margin, margin_rule=band.rule,
                        control_spread=band.sd, draws=band.draws)
    recon["control_means"] = means


def _tables(exp: Explanation, evidences: list[Evidence], X: np.ndarray) -> None:
    exp.tables["reconstruction_layers"] = [{"model": ev.label, **r} for ev in evidences for r in ev.trace.layer_rows]
    taps = [{"model": ev.label, **r} for ev in evidences for r in ev.trace.tap_rows]
    if taps:
        exp.tables["traceback"] = taps
    main = evidences[0]
    if main.saliency is not None:
        exp.arrays.update({"saliency": main.saliency, "reconstruction": main.reconstruction,
                           "inputs_shown": np.asarray(X[: len(main.saliency)])})
    if main.scores is not None:
        exp.arrays.update({"deletion_curve": main.scores.deletion.mean(0),
                           "insertion_curve": main.scores.insertion.mean(0), "fractions": main.scores.fractions,
                           "deletion_auc_per_image": main.scores.deletion_auc,
                           "insertion_auc_per_image": main.scores.insertion_auc})


def _control_words(exp: Explanation, metric: str) -> str:
    cs = [c for c in exp.controls if c.metric == metric]
    parts = [f"{c.key.replace('_', ' ')} {c.control_value:.3g}" for c in cs]
    verdict = exp.verdicts().get(metric, "no control")
    return f"{'; '.join(parts)}: {verdict}" if parts else verdict


def _findings(exp: Explanation, evidences: list[Evidence]) -> list[str]:
    main, out = evidences[0], []
    if main.trace.chain:
        others = [f"{ev.label}: {ev.trace.rel_error:.3g}" for ev in evidences[1:] if ev.trace.chain]
        out.append(f"Reconstruction from '{main.trace.saliency_layer}' by transposed weights: relative error "
                   f"{main.trace.rel_error:.3g}, cosine {main.trace.cosine:.3g} (control: "
                   f"{_control_words(exp, 'traced_rel_error')})" + (f"; peers: {'; '.join(others)}." if others else "."))
    elif main.trace.chain_reason:
        out.append(f"No whole-network trace-back: {main.trace.chain_reason}. One-layer reconstruction errors are "
                   f"reported instead (mean {main.trace.layer_rel_error_mean:.3g}; control: "
                   f"{_control_words(exp, 'layer_rel_error_mean')}).")
    if main.scores is not None:
        out.append(f"Backtracking saliency on {main.deletion_samples} images: deletion AUC "
                   f"{main.scores.mean_deletion_auc:.3g} (lower is better; {_control_words(exp, 'deletion_auc')}), "
                   f"insertion AUC {main.scores.mean_insertion_auc:.3g} (higher is better; "
                   f"{_control_words(exp, 'insertion_auc')}).")
    return out
