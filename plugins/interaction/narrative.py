"""What the method says about its results: warnings (every inexact solve, time limit, fallback and non-unique
optimum), the controls beside the headline figures, the findings and the summary sentence. Every sentence is
built from the numbers it states, and a figure that does not beat its control is called "not informative"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from governance import Explanation
from governance.quality import spread_margin


def solver_warnings(records: list[Any]) -> list[str]:
    out = []
    joints = [r.ext.joint for r in records]
    sols = joints + [t for r in records for t in r.ext.traditional]
    inexact = [j for j in joints if not j.exact]
    if inexact:
        gaps = [j.gap for j in inexact if j.gap is not None]
        text = (f"The joint problem was solved by '{inexact[0].solver}', which is not exact here: no certified "
                f"optimum in {len(inexact)} of {len(joints)} sample(s); mean loss {np.mean([j.loss for j in inexact]):.4g} vs "
                f"{np.mean([j.loss_gamma0 for j in inexact]):.4g} at the 50/50 split")
        if gaps:
            text += (f", up to {100 * float(np.max(gaps)):.1f} % above the certified lower bound (the best of the "
                     "solver's own dual certificate and max_i L4*_i + α·Σ_i L4*_i); the patterns are those of an "
                     "approximate solution")
        out.append(text + ".")
    stuck = [j for j in inexact if j.loss_gamma0 > 0 and j.improvement < 0.05]
    if stuck:
        out.append(f"In {len(stuck)} of {len(joints)} samples the inexact solver lowered the loss by less than 5 % "
                   "from the trivial 50/50 AND/OR split (γ = 0): the split stayed near 50/50 and the "
                   "interactions are not sparse (spec §2.9.4); the exact solver='lp' avoids this.")
    out += sorted({f"Solver note ({s.solver}): {s.message}" for s in sols
                   if any(word in s.message for word in ("LP failed", "time limit", "not reached"))})
    return out


@dataclass
class ControlData:
    """Control measurements for the headline figures (see :mod:`.controls`)."""

    sharing: dict[str, list[float]] | None  # permuted-peer draws of shared_fraction, s_and, s_or
    trivial_salient: list[float]  # per sample: salient patterns of the trivial split
    trivial_error: list[float]  # per sample: its salient-only matching error against v


def add_controls(exp: Explanation, data: ControlData) -> None:
    """Record each headline figure beside its control (governance.contract.evidence)."""
    if data.sharing is not None:
        for metric, label in (("shared_fraction", "shared fraction"), ("s_and", "s AND"), ("s_or", "s OR")):
            draws = [x for x in data.sharing[metric] if np.isfinite(x)]
            mean, margin, rule = _mean_margin(draws, floor=0.05)
            if metric in exp.metrics and np.isfinite(exp.metrics[metric]):
                exp.add_control(metric, mean, key="permuted_peer", better="higher", margin=margin,
                                margin_rule=rule, draws=len(draws), label=label,
                                control_spread=float(np.std(draws, ddof=1)) if len(draws) > 1 else None,
                                control="the same joint extraction with every peer's input variables randomly "
                                "relabelled (each peer keeps its own interaction structure, the correspondence "
                                "of variables is gone)")
    trivial = float(np.mean(data.trivial_salient))
    exp.add_control("salient_count", trivial, key="trivial_split", better="lower",
                    margin=max(1.0, 0.1 * trivial), margin_rule="max(1 pattern, 10 % of the control)",
                    label="salient patterns per sample", draws=len(data.trivial_salient),
                    control="the salient patterns of the trivial 50/50 AND/OR split (γ = 0, no error term)")
    error = float(np.mean(data.trivial_error))
    exp.add_control("salient_matching_error_mean", error, key="trivial_split", better="lower",
                    margin=0.1 * error, margin_rule="10 % of the control", draws=len(data.trivial_error),
                    label="salient-only matching error vs v",
                    control="the salient-only matching error of the trivial 50/50 split's own salient patterns")


def _mean_margin(draws: list[float], floor: float) -> tuple[float, float, str]:
    """Control mean and margin: 2 standard errors of the control mean over its draws, at least ``floor``."""
    mean, margin, _ = spread_margin(draws, k=2.0 / np.sqrt(max(len(draws), 1)), floor=floor)
    return mean, margin, (f"max(2 x standard error of the control mean over {len(draws)} draw(s) "
                          f"= {2 * np.std(draws, ddof=1) / np.sqrt(len(draws)) if len(draws) > 1 else 0:.3g}, "
                          f"floor {floor:g})")


def control_findings(exp: Explanation) -> list[str]:
    out = []
    for c in exp.controls:
        verdict = "informative" if c.informative else "NOT informative"
        out.append(f"{c.label or c.metric}: {c.value:.3g} vs {c.control_value:.3g} for the control "
                   f"({c.key.replace('_', ' ')}; margin {c.margin:.3g}): {verdict}.")
    return out


def pattern_findings(details: dict[str, Any], labels: list[str]) -> list[str]:
    def fmt(p: dict[str, Any]) -> str:
        return f"{p['pattern']} (" + " / ".join(f"{s:+.2f}" for s in p["strengths"]) + ")"

    if len(labels) == 1:
        return [f"Strong interaction: {fmt(p)}" for p in details["top_patterns"][:3]]
    out = []
    for key, text in (("shared", "Shared by all models (same sign)"), ("gained", f"Gained by {labels[0]}"),
                      ("lost", f"Lost by {labels[0]} (present in a peer)"),
                      ("sign_flipped", f"Sign flipped in {labels[0]} against every peer that has it")):
        items = details.get(key) or []
        if items:
            out.append(f"{text}: " + "; ".join(f"{fmt(p)} in {p['samples']} sample(s)" for p in items[:3]))
    return out


def solved_text(records: list[Any]) -> str:
    """How good the answer is, in words that hold: exact, certified within a gap, or approximate."""
    sols = [r.ext.joint for r in records] + [t for r in records for t in r.ext.traditional]
    if all(s.exact and s.solver == "lp" for s in sols):
        return "exact LP optimum"
    if all(s.exact for s in sols):
        worst = max((s.gap or 0.0) for s in sols)
        return f"optimum certified within a relative gap of {worst:.1e}"
    return "approximate solution (see the warnings)"


def summary_text(exp: Explanation, labels: list[str], solved: str, error_ratio: float) -> str:
    mt, verdicts = exp.metrics, exp.verdicts()
    tag = lambda key: "" if key not in verdicts else f" [{verdicts[key]}]"  # noqa: E731
    faithful = (f"the salient patterns alone rebuild v within {mt['salient_matching_error_mean']:.3g} on average "
                f"(max {mt['salient_matching_error_max']:.3g}; v spans ±{mt['output_range']:.3g})"
                f"{tag('salient_matching_error_mean')}, all patterns within {mt['matching_error_max']:.3g}"
                + (" (error term off)" if error_ratio == 0 else f" (the error term, ≤ {error_ratio:g}·|v(N)-v(∅)|)"))
    head = (f"{len(labels)} model(s), {int(mt['n_samples'])} sample(s), n = {int(mt['n_variables'])} variables; "
            f"{mt['salient_count']:.1f} salient patterns per sample{tag('salient_count')}; {faithful}; {solved}.")
    if len(labels) == 1:
        return head + " No peer models, so nothing was compared."
    return (f"{head} {labels[0]} shares {100 * mt['shared_fraction']:.0f} % of its salient patterns (same sign) "
            f"with all peers{tag('shared_fraction')}; per sample {mt['gained_count']:.1f} gained, "
            f"{mt['lost_count']:.1f} lost, {mt['sign_flipped_count']:.1f} with flipped sign.")
