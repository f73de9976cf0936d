"""Metrics, tables, details, arrays and figures of the spectral explanation, each built from one :class:`Result`."""

from __future__ import annotations

from typing import Any

import numpy as np

from governance import MethodContext

from governance_plugins.spectral import basis as B
from governance_plugins.spectral import fit as F
from governance_plugins.spectral import formula as FM
from governance_plugins.spectral.controls import MARGIN_TEXT, has_choice
from governance_plugins.spectral.readable import coordinate_definitions
from governance_plugins.spectral.result import Result

RECONSTRUCTION_NOTE = (
    "Reconstruction, not a reproduction: only the abstract of SpecXAI (arXiv 2302.09949) was available. "
    "'Spectral characterisation' is read as the coefficients of a global orthogonal-polynomial (Chebyshev) "
    "expansion of the network on a box, and the 'linear, interpretable, symbolic representation' as the "
    "truncated expansion, linear in named basis functions (methods-specxai-neflag.md, Part B).")

REDUCTION_LABELS = {
    "none": "every input that varies on the box",
    "features": "the configured subset of inputs",
    "top_k": "the inputs with the largest effect in a sweep screen",
    "pca": "principal-component scores of the data",
    "pool": "mean brightness of image blocks",
}


def metrics(r: Result) -> dict[str, float]:
    h, d = r.scores.heldout, r.scores.data
    fh, fd = h.fidelity, d.fidelity
    kept = r.surrogate.kept.sum(axis=1)
    defined = fh.r2[np.isfinite(fh.r2)]
    m: dict[str, float] = {
        "r2_heldout": fh.mean_r2, "r2_heldout_min": float(defined.min()) if len(defined) else float("nan"),
        "rmse_heldout": float(np.mean(fh.rmse)), "max_abs_error_heldout": float(np.max(fh.max_abs_error)),
        "r2_data": fd.mean_r2, "rmse_data": float(np.mean(fd.rmse)),
        "r2_linear_heldout": F.nanmean(h.truncation_r2()[:, 0]), "r2_linear_data": F.nanmean(d.truncation_r2()[:, 0]),
        "linear_energy_share": F.nanmean(r.analysis.linear_share),
        "n_terms": float(len(r.problem.alpha)), "n_terms_kept": float(np.max(kept)),
        "n_terms_kept_mean": float(np.mean(kept)), "n_inputs": float(r.problem.d), "degree": float(r.problem.p),
        "interaction_order": float(r.problem.q), "n_evaluations_fit": float(r.surrogate.fit.n_evaluations),
        "n_evaluations": float(r.n_evaluations), "fit_seconds": float(r.surrogate.fit_seconds),
        "data_outside_box": float(np.mean(r.scores.outside)),
    }
    if fh.agreement is not None:
        m["agreement_heldout"] = float(fh.agreement)
        m["agreement_data"] = float(fd.agreement)  # type: ignore[arg-type]
    if r.scores.inside is not None:
        m["r2_data_inside"] = r.scores.inside.mean_r2
    if r.scores.reduction is not None:
        m["r2_reduction_data"] = r.scores.reduction.mean_r2
    if r.formulas:
        m["r2_formula_heldout"] = F.nanmean(r.formula_scores.heldout)
        m["r2_formula_data"] = F.nanmean(r.formula_scores.data)
        m["formula_terms"] = float(np.mean([len(f.terms) for f in r.formulas]))
        m["formula_terms_max"] = float(max(len(f.terms) for f in r.formulas))
        m["formula_share"] = F.nanmean(np.array([f.share for f in r.formulas]))
    if r.randomised.surrogate is not None:
        m["n_evaluations_control"] = float(r.randomised.n_evaluations)
        m["linear_energy_share_randomised"] = F.nanmean(r.randomised.linear_share)  # type: ignore[arg-type]
    return m


def tables(r: Result) -> dict[str, list[dict[str, Any]]]:
    a, names, cfg = r.analysis, r.problem.reduction.names, r.cfg
    total = a.total_var
    share = (lambda v: float(v / total)) if total > 0 else (lambda v: float("nan"))
    energy, main = a.energy_coord, a.main_coord
    out: dict[str, list[dict[str, Any]]] = {
        f"top_terms_{k}": FM.ranked_terms(r.surrogate.coef[k], r.surrogate.alpha, r.surrogate.gamma, names,
                                          cfg.basis, cfg.top_terms) for k in a.shown}
    out["feature_energy"] = [{"feature": names[i], "energy": float(energy[i]), "total_share": share(energy[i]),
                              "first_order_share": share(main[i]), "interaction_share": share(energy[i] - main[i])}
                             for i in np.argsort(-energy)[: max(cfg.top_terms, 15)] if energy[i] > 0]
    out["interactions"] = _interactions(r)
    h, d = r.scores.heldout.truncation_r2(), r.scores.data.truncation_r2()
    out["spectrum"] = [{"degree": j, "energy": float(a.spectrum[a.pooled, j].sum()),
                        "share": share(a.spectrum[a.pooled, j].sum()), "r2_heldout": F.nanmean(h[a.shown, j - 1]),
                        "r2_data": F.nanmean(d[a.shown, j - 1])} for j in range(1, r.problem.p + 1)]
    out["fidelity"] = _fidelity_rows(r)
    out["box_mapping"] = _box_rows(r)
    out["coordinate_definitions"] = coordinate_definitions(
        r.problem.reduction, sorted({i for f in r.formulas for i in f.coordinates}))
    return out


def _interactions(r: Result) -> list[dict[str, Any]]:
    a, names, d = r.analysis, r.problem.reduction.names, r.problem.d
    if d < 2 or a.total_var <= 0:
        return []
    pairs = (a.vd.pair_share[a.pooled] * a.vd.variance[a.pooled, None, None]).sum(axis=0)
    iu, ju = np.triu_indices(d, 1)
    return [{"inputs": f"{names[iu[n]]} × {names[ju[n]]}", "share": float(pairs[iu[n], ju[n]] / a.total_var)}
            for n in np.argsort(-pairs[iu, ju])[:10] if pairs[iu[n], ju[n]] > 0]


def _fidelity_rows(r: Result) -> list[dict[str, Any]]:
    s = r.scores
    rows = [{"points": s.heldout.label, **s.heldout.fidelity.summary()},
            {"points": "dataset rows" + (" (clipped to the box)" if s.outside.any() else ""),
             **s.data.fidelity.summary()}]
    if s.inside is not None and s.outside.any():
        rows.append({"points": "dataset rows inside the box", **s.inside.summary()})
    if s.reduction is not None:
        rows.append({"points": f"network on {r.problem.reduction.kind}-reconstructed rows vs. on rows",
                     **s.reduction.summary()})
    return rows


def _box_rows(r: Result) -> list[dict[str, Any]]:
    """The box mapping of every coordinate a printed formula uses (all coordinates when there is none)."""
    used = sorted({i for f in r.formulas for i in f.coordinates}) or list(range(r.problem.d))
    box_map = r.formulas[0].box_map if r.formulas else None
    rows = []
    for i in used:
        lo, hi = (float(v) for v in r.problem.box[i])
        row = {"coordinate": r.problem.reduction.names[i], "low": lo, "high": hi, "centre": 0.5 * (lo + hi),
               "half_width": 0.5 * (hi - lo)}
        if box_map is not None:
            row.update(centre=float(box_map.centre[i]), mapping=box_map.mapping_text(i))
        rows.append(row)
    return rows


def details(r: Result) -> dict[str, Any]:
    cfg, pb, fit = r.cfg, r.problem, r.surrogate.fit
    red = pb.reduction
    return {
        "reconstruction_note": RECONSTRUCTION_NOTE, "basis": cfg.basis, "symbol": B.SYMBOL[cfg.basis],
        "measure": B.MEASURE[cfg.basis], "degree": pb.p, "interaction_order": pb.q, "n_inputs": pb.d,
        "n_terms": len(pb.alpha), "coefficient_method": fit.method, "quadrature_nodes": fit.nodes,
        "n_evaluations_fit": fit.n_evaluations, "n_evaluations": r.n_evaluations,
        "screen_evaluations": pb.screen_evaluations, "ridge": fit.ridge, "sparsify": cfg.sparsify,
        "output": "the predicted value (regression)" if r.regression else cfg.output, "output_words": r.output_words,
        "reduction": {"kind": red.kind, "label": REDUCTION_LABELS[red.kind], "note": red.note, "n_coordinates": pb.d,
                      **{k: v for k, v in red.details.items() if k != "screen_scores"}},
        "box": [{"coordinate": n, "low": float(lo), "high": float(hi)} for n, (lo, hi) in zip(red.names, pb.box)],
        "box_source": "user bounds" if cfg.box is not None and red.kind not in ("pca", "pool")
        else f"data quantiles {cfg.box_quantiles[0]:g}-{cfg.box_quantiles[1]:g}",
        "formula_share": cfg.formula_share, "formulas": _formula_details(r), "linear_formulas": _linear_details(r),
        "outputs": r.analysis.out_names, "shown_outputs": r.analysis.shown,
        "data_outside_box": float(np.mean(r.scores.outside)),
        "controls_text": MARGIN_TEXT, "randomised_weights": r.randomised.n_weights,
        "controls_not_computed": _missing_controls(r),
    }


def _missing_controls(r: Result) -> list[dict[str, str]]:
    out = []
    if r.randomised.reason:
        out.append({"control": "randomised_model", "reason": r.randomised.reason})
    if r.formulas and not has_choice(r.formulas, r.surrogate):
        out.append({"control": "random_terms", "reason": "every readable formula uses all of its surrogate's terms, so "
                    "there is no choice of terms for random ones to be compared with"})
    return out


def _formula_details(r: Result) -> list[dict[str, Any]]:
    names = r.problem.reduction.names
    out = []
    for f, r2h, r2d in zip(r.formulas, r.formula_scores.heldout, r.formula_scores.data):
        out.append({
            "output": f.output, "index": f.index, "formula": f.text, "n_terms": len(f.terms),
            "n_terms_needed": f.n_needed, "n_monomials": len(f.monomials), "share": f.share, "target": f.target,
            "r2_heldout": float(r2h), "r2_data": float(r2d),
            "intercept": f.intercept, "intercept_meaning": "the formula's value at the box centre",
            "terms": [FM.term_label(r.surrogate.alpha[n], names, r.cfg.basis) for n in f.terms],
            "chebyshev": FM.chebyshev_text(r.surrogate.coef[f.index], r.surrogate.alpha, f.terms, names, r.cfg.basis),
            "monomials": [{"coefficient": m.coefficient, "powers": [[names[i], p] for i, p in m.powers]}
                          for m in f.monomials],
        })
    return out


def _linear_details(r: Result) -> list[dict[str, Any]]:
    names, out = r.problem.reduction.names, []
    h, d = r.scores.heldout.truncation_r2(), r.scores.data.truncation_r2()
    for k in r.analysis.shown:
        intercept, weights = FM.linear_in_units(r.surrogate.coef[k], r.surrogate.alpha, r.problem.box)
        out.append({"output": r.analysis.out_names[k], "index": k, "intercept": intercept,
                    "weights": {names[i]: float(w) for i, w in enumerate(weights)},
                    "formula": FM.linear_text(intercept, weights, names, r.cfg.top_terms),
                    "r2_heldout": float(h[k, 0]), "r2_data": float(d[k, 0])})
    return out


def arrays(r: Result) -> dict[str, np.ndarray]:
    s, vd, red = r.surrogate, r.analysis.vd, r.problem.reduction
    h, d = r.scores.heldout, r.scores.data
    out = {
        "alpha": s.alpha.astype(np.int16), "coefficients": s.coef, "coefficients_full": s.coef_full,
        "gamma": s.gamma, "kept": s.kept, "box": r.problem.box, "spectrum": r.analysis.spectrum,
        "variance": vd.variance, "first_order": vd.first_order, "total_index": vd.total,
        "feature_energy": vd.feature_energy, "pair_share": vd.pair_share, "truncation_r2_heldout": h.truncation_r2(),
        "truncation_r2_data": d.truncation_r2(), "r2_heldout": h.fidelity.r2, "r2_data": d.fidelity.r2,
        "input_energy": input_energy(r), "reduction_x0": red.x0, "reduction_decoder": red.decoder,
        "reduction_encoder": red.encoder, "reduction_e0": red.e0,
        "heldout_z": h.z, "heldout_network": h.y, "heldout_surrogate": h.yhat,
        "data_rows": r.scores.rows, "data_network": d.y, "data_surrogate": d.yhat,
        "formula_r2_heldout": r.formula_scores.heldout, "formula_r2_data": r.formula_scores.data,
    }
    if r.randomised.surrogate is not None:
        out["randomised_coefficients"] = r.randomised.surrogate.coef
    return out


def input_energy(r: Result) -> np.ndarray:
    vd, red = r.analysis.vd, r.problem.reduction
    return (vd.feature_energy.sum(axis=0) @ red.input_weights()).reshape(r.problem.sample_shape)


def figures(ctx: MethodContext, r: Result) -> dict[str, Any]:
    from governance_plugins.spectral import figures as FG

    a, h, d = r.analysis, r.scores.heldout, r.scores.data
    out = {
        "spectrum": ctx.save_figure(FG.spectrum_figure(a.spectrum, h.truncation_r2(), d.truncation_r2(), a.shown,
                                                       a.out_names), "spectrum"),
        "feature_energy": ctx.save_figure(FG.feature_energy_figure(a.energy_coord, a.main_coord,
                                                                   r.problem.reduction.names, a.total_var),
                                          "feature_energy"),
        "fidelity": ctx.save_figure(FG.fidelity_figure(FG.Scatter(h.y, h.yhat, h.fidelity),
                                                       FG.Scatter(d.y, d.yhat, d.fidelity), a.shown), "fidelity"),
    }
    if r.problem.is_image:
        out["energy_map"] = ctx.save_figure(FG.energy_map_figure(input_energy(r), r.problem.reduction.kind),
                                            "energy_map")
    return out

