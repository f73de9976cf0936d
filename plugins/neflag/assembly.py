"""Turn a NeFLAG run's attributions and evidence into the Explanation: metrics, arrays, figures, tables, the
details the report section reads, findings, the summary and the controls of every headline figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from governance import Explanation, MethodContext, quality
from governance_plugins.neflag.evidence import Measured
from governance_plugins.neflag.figures import LABELS, attribution_maps, deletion_insertion_curves, feature_bars
from governance_plugins.neflag.method import FORM_LABELS, MAP_LABELS, SAMPLER_LABELS
from governance_plugins.neflag.runner import METRIC_PREFIX, Attributions, Prepared

HEADLINE = ("deletion_auc", "insertion_auc")


@dataclass
class Outcome:
    """Everything a finished run produced, before it becomes an Explanation."""

    ctx: MethodContext
    p: Prepared
    attrs: Attributions
    measured: Measured
    warnings: list[str]

    @property
    def n(self) -> int:
        return len(self.p.X)

    @property
    def methods(self) -> list[str]:
        return list(self.attrs.maps)

    @property
    def images(self) -> bool:
        return self.p.image_like and self.p.X.ndim >= 3


def assemble(o: Outcome) -> Explanation:
    metrics = _metrics(o)
    e = Explanation(method="neflag", summary=_summary(o, metrics), metrics=metrics, arrays=_arrays(o),
                    figures=_figures(o), tables=_tables(o, metrics), details=_details(o),
                    findings=_findings(o, metrics), warnings=o.warnings)
    quality.record_controls(e, o.measured.controls)
    return e


# ------------------------------------------------------------------------------------------- pieces
def _metrics(o: Outcome) -> dict[str, float]:
    p, diag, cfg = o.p, o.attrs.diag, o.ctx.config
    metrics = dict(o.measured.metrics)
    for m in o.methods:
        metrics[f"{METRIC_PREFIX[m]}seconds_per_input"] = o.attrs.seconds[m] / o.n
    zero_rows = int(np.sum(~np.any(o.attrs.maps["neflag"].reshape(o.n, -1) != 0, axis=1)))
    metrics["negative_points_mean"] = float(diag.n_negative.double().mean())
    metrics["evaluations_per_input"] = float(diag.n_evaluations.double().mean())
    metrics["zero_attribution_fraction"] = zero_rows / o.n
    metrics["n_inputs"] = float(o.n)
    metrics["epsilon"] = float(p.sphere.epsilon)
    if diag.first_draw_acceptance is not None:
        metrics["first_draw_acceptance"] = float(diag.first_draw_acceptance)
    if p.settings.form == "B" and p.settings.derivative == "gradient" and cfg.map == "flux":
        gap = _completeness_gap(p, o.attrs.maps["neflag"], diag)
        if gap is not None:
            metrics["completeness_gap"] = gap
    if zero_rows:
        o.warnings.append(
            f"{zero_rows} of {o.n} inputs had no negative-flux point on the sphere (zero or saturated gradients, or "
            "an input equal to the baseline): their NeFLAG attribution is all zeros"
            + ("; output='log_prob' or 'logit' avoids softmax saturation" if cfg.output == "prob" else ""))
    if diag.n_clipped:
        o.warnings.append(f"{diag.n_clipped} sphere points were clipped into input_range {cfg.input_range}; "
                          "their normals were recomputed from the clipped displacement")
    return {k: float(v) for k, v in metrics.items()}


def _completeness_gap(p: Prepared, A: np.ndarray, diag: Any) -> float | None:
    """P3: Σ_i A_B,i ≈ f(x) − mean f(s) over negative-flux points. Median relative gap over inputs."""
    drop = p.attributor.score_at(p.X, p.targets) - diag.mean_negative_score.cpu().numpy()
    ok = np.isfinite(drop) & (np.abs(drop) > 1e-12)
    if not ok.any():
        return None
    total = A.reshape(len(A), -1).astype(np.float64).sum(axis=1)
    return float(np.median(np.abs(total[ok] - drop[ok]) / np.abs(drop[ok])))


def _arrays(o: Outcome) -> dict[str, np.ndarray]:
    ms = o.measured
    arrays = {"inputs": o.p.X, "targets": o.p.targets,
              "negative_points": o.attrs.diag.n_negative.cpu().numpy().astype(np.int64)}
    arrays.update({m: a.astype(np.float32) for m, a in o.attrs.maps.items()})
    if ms.fractions is not None:
        arrays["fractions"] = ms.fractions
        for m, c in ms.curves.items():
            arrays[f"deletion_{m}"] = c["deletion"]
            arrays[f"insertion_{m}"] = c["insertion"]
    return arrays


def _figures(o: Outcome) -> dict[str, Any]:
    ctx, X, maps = o.ctx, o.p.X, o.attrs.maps
    figures = {}
    if o.images:
        figures["attribution_maps"] = ctx.save_figure(
            attribution_maps(X, maps, o.p.targets, o.p.data.class_names), "attribution_maps")
    else:
        names = o.p.data.feature_names or [f"x{i}" for i in range(X.reshape(o.n, -1).shape[1])]
        fig = feature_bars({m: a.reshape(o.n, -1) for m, a in maps.items()}, names)
        figures["feature_importance"] = ctx.save_figure(fig, "feature_importance")
    if o.measured.curves:
        unit = "pixels" if o.p.image_like and X.ndim == 4 else "features"
        fig = deletion_insertion_curves(o.measured.fractions, o.measured.curves, o.measured.aucs, unit)
        figures["deletion_insertion"] = ctx.save_figure(fig, "deletion_insertion")
    return figures


def _tables(o: Outcome, metrics: dict[str, float]) -> dict[str, list[dict[str, Any]]]:
    rows = []
    for m in o.methods:
        pre = METRIC_PREFIX[m]
        row: dict[str, Any] = {"method": LABELS[m]}
        for key in ("deletion_auc", "insertion_auc", "difference_auc", "max_sensitivity", "randomisation_spearman",
                    "seconds_per_input"):
            row[key] = metrics.get(pre + key)
        row["seed_stability"] = metrics.get("seed_stability") if m == "neflag" else None  # deterministic
        rows.append(row)
    tables: dict[str, list[dict[str, Any]]] = {"comparison": rows}
    if not o.images:
        tables["top_features"] = _top_features(o)
    if o.measured.layers:
        tables["randomisation_layers"] = [
            {"method": LABELS[m], "layer": row["layer"], "spearman": row["spearman"]}
            for m, steps in o.measured.layers.items() for row in steps]
    if o.measured.controls:
        tables["controls"] = [
            {"figure": c.label, "metric": c.metric, "value": c.value, "control": c.key,
             "control_value": c.control_value, "margin": c.margin, "verdict": c.verdict}
            for c in o.measured.controls]
    return tables


def _top_features(o: Outcome, top: int = 10) -> list[dict[str, Any]]:
    mean_abs = {m: np.abs(a.reshape(o.n, -1)).mean(axis=0) for m, a in o.attrs.maps.items()}
    signed = o.attrs.maps["neflag"].reshape(o.n, -1).mean(axis=0)
    names = o.p.data.feature_names or [f"x{i}" for i in range(len(signed))]
    order = np.argsort(-mean_abs["neflag"], kind="stable")[:top]
    return [{"feature": str(names[i]), "neflag_mean_abs": float(mean_abs["neflag"][i]),
             "neflag_mean": float(signed[i]),
             **{f"{m}_mean_abs": float(v[i]) for m, v in mean_abs.items() if m != "neflag"}} for i in order]


def _details(o: Outcome) -> dict[str, Any]:
    p, cfg, s = o.p, o.ctx.config, o.p.settings
    times_input = cfg.map == "times_input"
    return {
        "variant": _variant(s),
        "form": s.form, "form_label": FORM_LABELS[s.form],
        "sampler": s.sampler, "sampler_label": SAMPLER_LABELS[s.sampler],
        "map": cfg.map, "map_label": MAP_LABELS[cfg.map],
        "epsilon": s.epsilon, "epsilon_rule": p.sphere.rule, "epsilon_scale": p.sphere.epsilon_scale,
        "data_sigma": p.sphere.sigma, "dimension": p.sphere.d,
        "n_points": s.n_points, "m": s.resolved_m(), "antipodes": s.antipodes, "step_size": s.step_size,
        "n_directions": s.resolved_directions(p.sphere.d),
        "output": cfg.output, "output_kind": p.kind, "derivative": s.derivative,
        "sphere_units": ("standardised (z) units: x divided by each feature's standard deviation"
                         if p.scale is not None else "model-input units"),
        "units": ("units of the explained score (flux map × (x − baseline))" if times_input
                  else "standardised (z) units" if p.scale is not None else "model-input units"),
        "modality": o.ctx.data.modality, "n_inputs": o.n, "baselines": [LABELS[b] for b in cfg.baselines],
        "ig_steps": cfg.ig_steps, "first_draw_acceptance": o.attrs.diag.first_draw_acceptance,
        "clipped_points": o.attrs.diag.n_clipped, "quality": cfg.quality.model_dump(),
        "methods": [{"key": m, "label": LABELS[m], "prefix": METRIC_PREFIX[m]} for m in o.methods],
        "target": cfg.target if isinstance(cfg.target, str) else int(cfg.target),
        "target_counts": {str(c): int(v) for c, v in zip(*np.unique(p.targets, return_counts=True))},
    }


def _variant(s: Any) -> str:
    return f"NeFLAG-{s.n_points}" if s.sampler == "rejection" else "NeFLAG"


# ------------------------------------------------------------------------------------------- words
def _verdicts(o: Outcome) -> dict[str, str]:
    return quality.figure_verdicts(o.measured.controls)


def _findings(o: Outcome, metrics: dict[str, float]) -> list[str]:
    methods = o.methods
    out = _game_findings(metrics, methods) + _control_findings(o)
    rho = metrics.get("randomisation_spearman")
    if rho is not None and np.isfinite(rho):
        verdict = ("depend strongly on the learned weights (the sanity check passes)" if abs(rho) < 0.3 else
                   "depend only partly on the learned weights" if abs(rho) < 0.7 else
                   "barely change when the weights are randomised (the sanity check fails)")
        out.append(f"With the model's weights randomised, NeFLAG's attributions keep a rank correlation of "
                   f"{rho:.2f} with the trained model's: they {verdict}.")
    st = metrics.get("seed_stability")
    if st is not None and np.isfinite(st):
        out.append(f"Re-running NeFLAG with other seeds gives attributions with a mean rank correlation of "
                   f"{st:.2f} with each other ({'stable' if st >= 0.8 else 'noticeably seed-dependent'}).")
    if "max_sensitivity" in metrics:
        vals = ", ".join(f"{LABELS[m]} {metrics[METRIC_PREFIX[m] + 'max_sensitivity']:.3f}" for m in methods
                         if METRIC_PREFIX[m] + "max_sensitivity" in metrics)
        out.append(f"Max-sensitivity (relative change under small input noise, lower is better): {vals}.")
    return out


def _game_findings(metrics: dict[str, float], methods: list[str]) -> list[str]:
    if "deletion_auc" not in metrics:
        return []
    baselines = [m for m in methods if m != "neflag"]
    if not baselines:
        return [f"Deletion AUC {metrics['deletion_auc']:.3f} (lower is better) and insertion AUC "
                f"{metrics['insertion_auc']:.3f} (higher is better); no baseline was computed to compare with."]
    auc = lambda m, k: metrics[METRIC_PREFIX[m] + k]  # noqa: E731
    dels = ", ".join(f"{auc(b, 'deletion_auc'):.3f} for {LABELS[b]}" for b in baselines)
    ins = ", ".join(f"{auc(b, 'insertion_auc'):.3f} for {LABELS[b]}" for b in baselines)
    best = min(methods, key=lambda m: auc(m, "deletion_auc"))
    best_i = max(methods, key=lambda m: auc(m, "insertion_auc"))
    return [f"Deletion AUC (lower is better): NeFLAG {metrics['deletion_auc']:.3f}, against {dels}; removing the "
            f"features {LABELS[best]} ranks first lowers the class probability fastest.",
            f"Insertion AUC (higher is better): NeFLAG {metrics['insertion_auc']:.3f}, against {ins}; "
            f"best: {LABELS[best_i]}."]


def _control_findings(o: Outcome) -> list[str]:
    """One sentence per method: which of its headline figures beat every control, which did not and why."""
    out = []
    for m in o.methods:
        mine = [c for c in o.measured.controls if c.metric in {METRIC_PREFIX[m] + h for h in HEADLINE}]
        if not mine:
            continue
        bad = [c for c in mine if not c.informative]
        if not bad:
            names = {"random": "random attributions", "randomised_model": "fully randomised models",
                     "cascading": "the cascading randomisation"}
            used = [names.get(k, k) for k in dict.fromkeys(c.key for c in mine)]
            out.append(f"{LABELS[m]}'s deletion and insertion AUCs are informative: each beats "
                       f"{', '.join(used[:-1]) + ' and ' + used[-1] if len(used) > 1 else used[0]} by more than its "
                       f"margin (at least {min(c.margin for c in mine):.3f}).")
            continue
        reasons = "; ".join(f"{c.label} {c.value:.3f} against {c.control.split(' (')[0]} {c.control_value:.3f} "
                            f"(advantage {c.advantage:+.3f}, margin {c.margin:.3f})" for c in bad)
        figures = sorted({c.label for c in bad})
        out.append(f"Not informative: {' and '.join(figures)} ({'does' if len(figures) == 1 else 'do'} not beat "
                   f"every control by its margin): {reasons}.")
    return out


def _summary(o: Outcome, metrics: dict[str, float]) -> str:
    s, n = o.p.settings, o.n
    sampler = {"descent": f"descent sampler, n = {s.n_points}, m = {s.resolved_m()}",
               "rejection": f"rejection sampler, n = {s.n_points}",
               }.get(s.sampler, f"{s.sampler.replace('_', ' ')} sampler, N = {s.resolved_directions(o.p.sphere.d)}")
    text = (f"{_variant(s)} (form {s.form}, {sampler}, ε = {s.epsilon:.3g}) explained {n} input"
            f"{'s' if n != 1 else ''} at {metrics['seconds_per_input']:.3g} s each.")
    if "deletion_auc" in metrics:
        parts = [f"{LABELS[m]} {metrics[METRIC_PREFIX[m] + 'deletion_auc']:.3f}" for m in o.methods]
        text += " Deletion AUC (lower is better): " + ", ".join(parts) + "."
    verdicts = _verdicts(o)
    mine = [verdicts[h] for h in HEADLINE if h in verdicts]
    if mine:
        bad = [h.replace("_auc", "") for h in HEADLINE if verdicts.get(h) == quality.NOT_INFORMATIVE]
        text += (" NeFLAG's deletion and insertion AUCs beat their controls (informative)." if not bad else
                 f" NeFLAG's {' and '.join(bad)} AUC{'s are' if len(bad) > 1 else ' is'} not informative: "
                 "not better than every control (random attributions, randomised models) by the required margin.")
    return text
