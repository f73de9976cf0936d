"""The words of the spectral section: summary, findings and warnings. Every sentence is computed from the
figures and their controls; a figure that does not beat a control is called "not informative"."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from governance import Control, Explanation

from governance_plugins.spectral import fit as F
from governance_plugins.spectral.result import Result

SHORT = {"mean": "best constant", "majority": "majority class", "degree1": "degree-1 truncation",
         "randomised_model": "randomised-weights surrogate", "random_terms": "random-terms formulas"}
COORDS = {"none": "inputs", "features": "selected inputs", "top_k": "screened inputs",
          "pca": "principal-component scores", "pool": "image blocks"}
UNDEFINED = "undefined (the model's output is constant)"


def fr2(v: float) -> str:
    """An R² for text: three decimals, or why it is undefined (never 0 for a constant output)."""
    return f"{v:.3f}" if v is not None and math.isfinite(v) else UNDEFINED


def fpct(v: float | None) -> str:
    return f"{v:.1%}" if v is not None and math.isfinite(v) else "n/a"


def controls_of(e: Explanation, metric: str) -> list[Control]:
    return [c for c in e.controls if c.metric == metric]


def control_phrase(e: Explanation, metric: str, fmt: Callable[[float], str] = fr2) -> str:
    """`` (controls: best constant 0.000, degree-1 truncation 0.960; informative)``, or the failed ones."""
    cs = controls_of(e, metric)
    if not cs:
        return ""
    listed = ", ".join(f"{SHORT[c.key]} {fmt(c.control_value) if math.isfinite(c.control_value) else 'undefined'}"
                       for c in cs)
    if not math.isfinite(cs[0].value):
        return f" (controls: {listed}; not informative: the figure is undefined)"
    failed = [SHORT[c.key] for c in cs if not c.informative]
    verdict = ("informative" if not failed else
               "not informative: it does not beat the " + " or the ".join(failed) + " by the margin")
    return f" (controls: {listed}; {verdict})"


#: what failing each control means, in words a reader can act on
FAILED = {"mean": "no better than the best constant", "majority": "no better than always predicting the majority class",
          "degree1": "the degree-1 truncation does as well or better, so the terms above degree 1 add nothing there",
          "randomised_model": "no better than the same surrogate of the network with randomised weights",
          "random_terms": "no better than formulas of as many randomly drawn terms"}


def not_informative(e: Explanation) -> list[str]:
    """The figures that fail at least one control, each with what its failure means."""
    out = []
    for metric, verdict in e.verdicts().items():
        if verdict != "informative":
            cs = controls_of(e, metric)
            why = ("undefined" if not math.isfinite(cs[0].value)
                   else "; ".join(FAILED[c.key] for c in cs if not c.informative))
            out.append(f"{cs[0].label or metric} ({why})")
    return out


def _degree_verdict(e: Explanation, r: Result, where: str) -> tuple[str, float, float, str] | None:
    """("better" | "worse" | "same", R² degree p, R² degree 1, R² by degree) on one point set; None for p = 1."""
    if r.problem.p < 2:
        return None
    points = r.scores.data if where == "data" else r.scores.heldout
    full, lin = points.fidelity.mean_r2, F.nanmean(points.truncation_r2()[:, 0])
    if not (math.isfinite(full) and math.isfinite(lin)):
        return None
    c = next((c for c in controls_of(e, f"r2_{where}") if c.key == "degree1"), None)
    curve = ", ".join(fr2(F.nanmean(col)) for col in points.truncation_r2().T)
    kind = "better" if c is not None and c.informative else "worse" if lin > full else "same"
    return kind, full, lin, curve


def degree_comparison(e: Explanation, r: Result, where: str) -> str | None:
    """The degree-1 versus degree-p comparison on one point set, stated plainly (None when p = 1)."""
    verdict = _degree_verdict(e, r, where)
    if verdict is None:
        return None
    kind, full, lin, curve = verdict
    p, place = r.problem.p, ("dataset rows" if where == "data" else "held-out box points")
    by_degree = f"by degree 1..{p}: {curve}"
    if kind == "better":
        return (f"On {place} the degree-{p} surrogate fits the network better than its degree-1 truncation "
                f"(R² {fr2(full)} vs {fr2(lin)}; {by_degree}): the non-linear terms matter there.")
    if kind == "worse":
        tail = (" The terms of degree 2 and above, fitted on the box measure, do not carry over to the data: for "
                "real data the strictly linear formula is the better summary." if where == "data" else "")
        return (f"On {place} the degree-1 truncation fits the network better than the full degree-{p} surrogate "
                f"(R² {fr2(lin)} vs {fr2(full)}; {by_degree}).{tail}")
    return (f"On {place} the degree-{p} surrogate fits the network about as well as its degree-1 truncation "
            f"(R² {fr2(full)} vs {fr2(lin)}, a gain within the margin; {by_degree}).")


def _degree_sentence(e: Explanation, r: Result) -> str:
    verdict = _degree_verdict(e, r, "data")
    if verdict is None:
        return ""
    kind, full, lin, _ = verdict
    if kind == "better":
        return f" On dataset rows it fits better than its degree-1 truncation (R² {fr2(full)} vs {fr2(lin)})."
    if kind == "worse":
        return (f" On dataset rows its degree-1 truncation fits better (R² {fr2(lin)} vs {fr2(full)}): for real data "
                "the linear formula is the better summary.")
    return f" On dataset rows it fits about as well as its degree-1 truncation (R² {fr2(full)} vs {fr2(lin)})."


def _span(values: list[float], fmt: Callable[[float], str], unit: str = "") -> str:
    """``18``, ``7-10``, ``90-91 %``."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return (lo if lo == hi else f"{lo}-{hi}") + unit


def summary(e: Explanation, r: Result) -> str:
    cfg, pb, fit = r.cfg, r.problem, r.surrogate.fit
    h, d = r.scores.heldout.fidelity, r.scores.data.fidelity
    head = (f"A degree-{pb.p} {cfg.basis.capitalize()} surrogate over {pb.d} {COORDS[pb.reduction.kind]} "
            f"({len(pb.alpha):,} terms, {fit.method.replace('_', ' ')} on {fit.n_evaluations:,} model evaluations)")
    if r.analysis.constant.all():
        return (f"{head} finds nothing to explain: the network's {r.output_words} are constant on the box, so every "
                "R² is undefined and no figure here is informative.")
    text = (f"{head} reproduces the network's {r.output_words} with R² {fr2(h.mean_r2)} on held-out box points and "
            f"{fr2(d.mean_r2)} on dataset rows.")
    text += _degree_sentence(e, r)
    if r.formulas:
        plural = len(r.formulas) > 1
        text += (f" The readable formula{'s' if plural else ''} keep{'' if plural else 's'} "
                 f"{_span([len(f.terms) for f in r.formulas], str)} terms for {cfg.formula_share:.0%} of the "
                 f"surrogate's variance (R² {fr2(F.nanmean(r.formula_scores.heldout))} held-out, "
                 f"{fr2(F.nanmean(r.formula_scores.data))} on dataset rows).")
    failing = not_informative(e)
    if failing:
        text += " Not informative against their controls: " + "; ".join(failing) + "."
    return text


def findings(e: Explanation, r: Result) -> list[str]:
    h, d = r.scores.heldout.fidelity, r.scores.data.fidelity
    if r.analysis.constant.all():
        values = "; ".join(f"{f.output} = {f.text}" for f in r.formulas)
        return [f"The network's {r.output_words} are constant on the box ({values}): the surrogate is that constant, "
                "R² is undefined, and no spectrum, importance or formula can be read from it."]
    kept = int(np.max(r.surrogate.kept.sum(axis=1)))
    out = [f"The degree-{r.problem.p} surrogate ({kept} of {len(r.problem.alpha)} terms) reproduces the network's "
           f"{r.output_words} with R² = {fr2(h.mean_r2)} on held-out box points{control_phrase(e, 'r2_heldout')} "
           f"and {fr2(d.mean_r2)} on dataset rows{control_phrase(e, 'r2_data')}."]
    out += [s for s in (degree_comparison(e, r, "data"), degree_comparison(e, r, "heldout")) if s]
    out += _linear_share_finding(r)
    out += _formula_findings(e, r)
    a = r.analysis
    order = [i for i in np.argsort(-a.energy_coord)[:3] if a.energy_coord[i] > 0]
    if order:
        names = r.problem.reduction.names
        out.append("Inputs with the largest spectral energy: " + ", ".join(
            f"{names[i]} ({a.energy_coord[i] / a.total_var:.0%})" for i in order) + ".")
    if h.agreement is not None:
        out.append(f"The surrogate's argmax matches the network's on {fpct(d.agreement)} of dataset rows"
                   f"{control_phrase(e, 'agreement_data', fpct)} and {fpct(h.agreement)} of held-out box points"
                   f"{control_phrase(e, 'agreement_heldout', fpct)}.")
    return out


def _linear_share_finding(r: Result) -> list[str]:
    share = F.nanmean(r.analysis.linear_share)
    if not math.isfinite(share):
        return []
    text = f"{share:.0%} of the surrogate's variance on the box sits at degree 1"
    rnd = F.nanmean(r.randomised.linear_share) if r.randomised.linear_share is not None else float("nan")
    if math.isfinite(rnd):
        text += f"; for the same network with randomised weights it is {rnd:.0%}"
        if abs(rnd - share) < 0.05:
            text += ", so this linearity owes as much to the architecture and the box as to training"
    return [text + "."]


def _formula_findings(e: Explanation, r: Result) -> list[str]:
    if not r.formulas:
        return []
    plural = len(r.formulas) > 1
    shares = [f.share for f in r.formulas if math.isfinite(f.share)]
    reach = f", explaining {_span(shares, lambda v: f'{100 * v:.0f}', ' %')} of it" if shares else ""
    return [f"The readable formula{'s' if plural else ''} (the fewest terms for {r.cfg.formula_share:.0%} of the "
            f"surrogate's variance on the box, in the coordinates' own units) use{'' if plural else 's'} "
            f"{_span([len(f.terms) for f in r.formulas], str)} terms{reach}. As printed, "
            f"{'they reach' if plural else 'it reaches'} R² {fr2(F.nanmean(r.formula_scores.heldout))} on held-out "
            f"box points{control_phrase(e, 'r2_formula_heldout')} and {fr2(F.nanmean(r.formula_scores.data))} on "
            f"dataset rows{control_phrase(e, 'r2_formula_data')}."]


def warnings(e: Explanation, r: Result) -> list[str]:
    cfg = r.cfg
    h, d = r.scores.heldout.fidelity, r.scores.data.fidelity
    out = list(r.surrogate.notes)
    if r.randomised.surrogate is not None:
        out += [f"Randomised-weights control: {n}" for n in r.randomised.surrogate.notes]
    out += _constant_output_warnings(r)
    if math.isfinite(h.mean_r2) and h.mean_r2 < 0.9:
        out.append(f"Held-out R² is only {h.mean_r2:.3f}: read the formula as a rough summary. A higher degree, a "
                   "higher interaction order or fewer inputs (reduce) may fit better.")
    if math.isfinite(d.mean_r2) and math.isfinite(h.mean_r2) and d.mean_r2 < h.mean_r2 - 0.1:
        out.append(f"Fidelity on dataset rows (R² {d.mean_r2:.3f}) is well below the box's ({h.mean_r2:.3f}): "
                   "the network behaves differently on real data than on the box measure.")
    if cfg.sampling == "data":
        out.append("Coefficients were fitted on dataset rows (data measure), where the basis is not orthogonal: "
                   "the per-degree energies and variance shares are approximate, and dataset-row fidelity is "
                   + ("measured on the rows not used for the fit." if r.scores.data_held_out else
                      "measured on the same rows the fit used (none were left over)."))
    outside = r.scores.outside
    if outside.any():
        out.append(f"{outside.mean():.1%} of dataset rows fall outside the box in at least one coordinate; "
                   "they were clipped to it, where the surrogate is not valid.")
    red = r.scores.reduction
    if red is not None and math.isfinite(red.mean_r2) and red.mean_r2 < 0.9:
        out.append(f"The {r.problem.reduction.kind} coordinates preserve the network's outputs only to R² "
                   f"{red.mean_r2:.3f} on dataset rows: the surrogate cannot see the rest.")
    if r.randomised.reason is not None:
        out.append(f"The randomised-weights control could not be computed: {r.randomised.reason}. The fidelity "
                   "figures are compared with the best constant (or majority class) and the degree-1 truncation "
                   "only.")
    for f in r.formulas:
        if f.n_needed > len(f.terms):
            out.append(f"The readable formula for {f.output} needs {f.n_needed} terms for {f.target:.0%} of the "
                       f"variance; only the largest {len(f.terms)} are printed (formula_max_terms), explaining "
                       f"{f.share:.0%}.")
    return out


def _constant_output_warnings(r: Result) -> list[str]:
    out = []
    for points in (r.scores.heldout, r.scores.data):
        const = np.flatnonzero(F.constant_outputs(points.y))
        if len(const):
            names = ", ".join(r.analysis.out_names[k] for k in const[:10]) + (" ..." if len(const) > 10 else "")
            place = "held-out box points" if points is r.scores.heldout else "dataset rows"
            rest = ("the mean R² is taken over the other outputs" if len(const) < points.y.shape[1]
                    else "no R² is reported")
            out.append(f"R² on {place} is undefined for {names}: the model's output is constant there, so there is "
                       f"no variance to explain; {rest}.")
    return out
