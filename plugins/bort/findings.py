"""What the audit says in words: headline figures beside their random reference (recorded as controls), the peer
comparison with its "what Bort bought, what it cost" finding, and the summary. Every verdict is relative to the
random reference's tolerance band (``reference.py``), so an untrained model is never called bounded-orthogonal
and another seed of the same random architecture is never "further"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from governance import Explanation

#: (metric, better, label) of the audit's headline figures; each gets the random reference as its control
HEADLINES = (
    ("d_orth_constrained_mean", "lower", "D_orth, layers Bort constrains"),
    ("d_abs_constrained_mean", "lower", "D_abs, layers Bort constrains"),
    ("fraction_within_bounds_constrained", "higher", "share of constrained layers within the two-sided norm bound"),
    ("d_orth_classifier", "lower", "D_orth, classifier (last linear layer)"),
    ("d_orth_mean", "lower", "D_orth, all layers"),
)
POSITION_WORDS = {
    "closer": "closer to bounded-orthogonal than random weights",
    "within": "within the tolerance band of random weights: no closer to bounded-orthogonal than an untrained "
              "model of these shapes",
    "further": "further from bounded-orthogonal than random weights of these shapes",
}


def control_words(draws: int) -> str:
    return f"random weights of the same shapes (torch's default initialisation), {draws} seeds"


def _group_words(audit: Any) -> str:
    n, k = len(audit.audits), len(audit.split.constrained)
    if audit.split.classifier is None or audit.split.classifier in audit.split.constrained:
        if n == 1:
            return "the only layer"
        return f"all {n} layers" if k == n else f"{k} of {n} layers"
    if k == 1:
        return "the layer Bort constrains by default (every Linear/Conv weight but the last linear layer)"
    return f"the {k} layers Bort constrains by default (every Linear/Conv weight but the last linear layer)"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def audit_headline(exp: Explanation, audit: Any, ref: Any, cfg: Any) -> str | None:
    """Headline metrics with their controls and verdict findings; returns why the model counts as near
    bounded-orthogonal (the reconstruction trigger), or None."""
    summary = audit.summary
    exp.metrics.update(summary)
    bands = {}
    for metric, better, label in HEADLINES:
        if metric not in summary:
            continue
        bands[metric] = band = ref.band(metric)
        exp.add_control(metric, band.mean, key="random_init", control=control_words(band.draws), better=better,
                        margin=band.margin, margin_rule=band.rule, control_spread=band.sd, draws=band.draws,
                        label=label)
    key = "d_orth_constrained_mean" if "d_orth_constrained_mean" in summary else "d_orth_mean"
    value, band = summary[key], bands[key]
    exp.findings.append(f"{_sentence(_group_words(audit))}: weighted mean D_orth {value:.3g} against "
                        f"{band.mean:.3g} ± {band.margin:.3g} for {control_words(band.draws)}: "
                        f"{POSITION_WORDS[band.position(value)]}.")
    exp.findings += _classifier_findings(audit, summary, bands) + _bound_findings(audit, summary, ref, cfg)
    exp.findings += _layer_findings(audit)
    exp.details["verdict"] = band.position(value)
    if band.position(value) == "closer" and value <= cfg.near_fraction * band.mean:
        exp.details["near_bounded_orthogonal"] = True
        return (f"near bounded-orthogonal (D_orth {value:.3g} is below the random reference's band and at most "
                f"{cfg.near_fraction:.0%} of its mean {band.mean:.3g})")
    exp.details["near_bounded_orthogonal"] = False
    return None


def _classifier_findings(audit: Any, summary: dict[str, float], bands: dict[str, Any]) -> list[str]:
    i = audit.split.classifier
    if i is None or "d_orth_classifier" not in bands:
        return []
    c, band = audit.audits[i], bands["d_orth_classifier"]
    free = i not in audit.split.constrained
    role = "left free by Bort by default" if free else "counted as constrained"
    return [f"Classifier '{c.name}' ({c.m}×{c.n}, {role}): D_orth {c.d_orth:.3g} against {band.mean:.3g} ± "
            f"{band.margin:.3g} for random weights: {POSITION_WORDS[band.position(c.d_orth)]}; D_abs {c.d_abs:.3g}."]


def _bound_findings(audit: Any, summary: dict[str, float], ref: Any, cfg: Any) -> list[str]:
    con = [audit.audits[i] for i in audit.split.constrained]
    if not con:
        return []
    inside = sum(a.within_bounds for a in con)
    lo, hi = (1 - cfg.row_tolerance) * cfg.amplitude, (1 + cfg.row_tolerance) * cfg.amplitude
    rand = ref.band("fraction_within_bounds_constrained").mean
    text = (f"Boundedness (two-sided): {inside} of {len(con)} constrained layers have every squared row norm (column "
            f"norm for tall weights) within [{lo:.3g}, {hi:.3g}] (c = {cfg.amplitude:g}); random weights of the "
            f"same shapes: {rand:.0%} of the layers.")
    worst = max(con, key=lambda a: a.norm_dev_max)
    if not worst.within_bounds:
        text += (f" Furthest: '{worst.name}', squared norms {worst.norm_sq_min:.3g}–{worst.norm_sq_max:.3g}.")
    return [text]


def _layer_findings(audit: Any) -> list[str]:
    from governance_plugins.bort.audit import worst_layer

    out = []
    worst = worst_layer(audit.audits)
    if worst is not None:
        out.append(f"Least orthogonal layer: '{worst.name}' ({worst.m}×{worst.n}) with D_orth = {worst.d_orth:.3g} "
                   f"and condition number {worst.kappa:.3g}.")
    rank_def = [a.name for a in audit.audits if not math.isfinite(a.kappa)]
    if rank_def:
        out.append(f"Rank-deficient (infinite condition number): {', '.join(rank_def[:5])}.")
    return out


# ---------------------------------------------------------------------------------------------- peers
@dataclass
class Peer:
    """One compared version: its figures and layer-by-layer rows, or why it could not be audited."""

    label: str
    figures: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    matched_by: str = "none"
    error: str | None = None


def _shared_labelled(ctx: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    from governance_plugins.bort.compare import ACCURACY_CAP

    if ctx.data.y is None:
        return None, None
    sub = ctx.data.subset(min(len(ctx.data), ACCURACY_CAP), np.random.default_rng(ctx.seed))
    return sub.X, sub.y


def _correct(model: Any, X: np.ndarray | None, y: np.ndarray | None, warnings: list[str]) -> np.ndarray | None:
    from governance_plugins.bort.compare import correctness

    if X is None:
        return None
    try:
        return correctness(model, model.check_input(X), y)
    except Exception as exc:  # data that does not fit a version: its accuracy is not compared, and we say why
        warnings.append(f"Accuracy of {model.info.display_name} not measured: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0]}")
        return None


def peer_comparison(exp: Explanation, ctx: Any, audit: Any, audit_fn: Callable[[Any], Any]) -> tuple[Any, list[Peer]]:
    """Audit every peer like this model and compare layer by layer; returns (our figures, the peers)."""
    from governance_plugins.bort.audit import comparison_rows
    from governance_plugins.bort.compare import VersionFigures

    X, y = _shared_labelled(ctx)
    ours = VersionFigures(ctx.model.info.display_name, dict(ctx.model.info.tags or {}), audit.summary,
                          _correct(ctx.model, X, y, exp.warnings) if ctx.peers else None)
    peers: list[Peer] = []
    for model in ctx.peers:
        peer = Peer(model.info.display_name)
        try:
            theirs = audit_fn(model)
        except Exception as exc:  # a peer that cannot be audited is reported, not fatal
            peer.error = f"{type(exc).__name__}: {exc}"
            exp.warnings.append(f"Peer {peer.label} could not be audited ({peer.error}), so it is not compared.")
            peers.append(peer)
            continue
        peer.rows, peer.matched_by = comparison_rows(audit.audits, theirs.audits, peer.label)
        peer.figures = VersionFigures(peer.label, dict(model.info.tags or {}), theirs.summary,
                                      _correct(model, X, y, exp.warnings))
        peers.append(peer)
        if not peer.rows:
            exp.warnings.append(f"Peer {peer.label}: no layer matched by name or by shape order, so its layers are "
                                "not compared one by one.")
    rows = [r for p in peers for r in p.rows]
    if rows:
        exp.tables["comparison"] = rows
    exp.details["peers"] = [{"label": p.label, "error": p.error} if p.error else
                            {"label": p.label, "matched_by": p.matched_by, "n_matched": len(p.rows),
                             "bort": p.figures.bort, "d_orth_mean": p.figures.summary.get("d_orth_mean"),
                             "d_orth_constrained_mean": p.figures.summary.get("d_orth_constrained_mean"),
                             "accuracy": p.figures.accuracy} for p in peers]
    if ours.correct is not None:
        exp.metrics["accuracy"] = ours.accuracy
        exp.details["accuracy_samples"] = int(len(ours.correct))
    return ours, peers


def bought_findings(exp: Explanation, ours: Any, peers: list[Peer], evidences: list, ref: Any) -> None:
    """The "what Bort bought, what it cost" finding and table for every compared version."""
    from governance_plugins.bort.compare import bought_and_cost, comparison_table, order

    by_label = {ev.label: ev.metrics for ev in evidences}
    ours.evidence = by_label.get(ours.label, {})
    random_d_orth = ref.band("d_orth_constrained_mean").mean if ref.summaries() and \
        "d_orth_constrained_mean" in ref.summaries()[0] else None
    table: list[dict[str, Any]] = []
    for i, peer in enumerate(p for p in peers if p.figures is not None):
        peer.figures.evidence = by_label.get(peer.label, {})
        bort, base = order(ours, peer.figures)
        exp.findings.append(bought_and_cost(bort, base, random_d_orth))
        table += comparison_table(ours, peer.figures)
        if i == 0:
            _peer_metrics(exp, ours, peer.figures)
    if table:
        exp.tables["bought"] = table


def _peer_metrics(exp: Explanation, ours: Any, theirs: Any) -> None:
    for key in ("d_orth_mean", "d_orth_constrained_mean"):
        if key in theirs.summary and key in ours.summary:
            exp.metrics[f"peer_{key}"] = theirs.summary[key]
            exp.metrics[f"{key}_delta"] = ours.summary[key] - theirs.summary[key]
    if ours.correct is not None and theirs.correct is not None:
        exp.metrics["peer_accuracy"] = theirs.accuracy
        exp.metrics["accuracy_delta"] = ours.accuracy - theirs.accuracy


# ---------------------------------------------------------------------------------------------- summary
def _verdict_of(exp: Explanation, metric: str) -> str:
    return exp.verdicts().get(metric, "")


def summary_text(exp: Explanation, audit: Any) -> str:
    """The method's one-paragraph summary, with the controls' verdicts in words."""
    m = exp.metrics
    controls = {c.metric: c for c in exp.controls}
    key = "d_orth_constrained_mean" if "d_orth_constrained_mean" in m else "d_orth_mean"
    c = controls[key]
    verb = "has" if len(audit.split.constrained) == 1 else "have"
    text = (f"{len(audit.audits)} weight layers audited. {_sentence(_group_words(audit))} {verb} weighted mean "
            f"D_orth = {m[key]:.3g} (0 = orthogonal rows up to scale) against {c.control_value:.3g} ± {c.margin:.3g} "
            f"for random weights of the same shapes: {POSITION_WORDS[exp.details['verdict']]}")
    text += "." if c.informative else " (not informative as evidence of bounded orthogonality)."
    if "d_orth_classifier" in controls:
        cc = controls["d_orth_classifier"]
        text += (f" The classifier has D_orth {cc.value:.3g} against {cc.control_value:.3g}"
                 f"{'' if cc.informative else ' (not informative)'}.")
    if "traced_rel_error" in controls:
        ct = controls["traced_rel_error"]
        layer = exp.details["reconstruction"].get("saliency_layer")
        text += (f" Tracing '{layer}' back to the input reconstructs it with relative error {ct.value:.3g} against "
                 f"{ct.control_value:.3g} through random weights of the same architecture"
                 f"{'' if ct.informative else ' (not informative)'}.")
    for metric in ("deletion_auc", "insertion_auc"):
        if metric in exp.verdicts():
            text += f" Backtracking saliency {metric.replace('_auc', '')} AUC {m[metric]:.3g}: {_verdict_of(exp, metric)}."
    return text
