"""What the report shows of a trained interpreter: global relevance, relevant pairs, maximum-activating samples
(over all classes), local interpretations, activation maximisation, and their figures."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from governance import MethodContext
from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter import visualise as V
from governance_plugins.interpreter.training import single_thread_if_small


def relevant_pairs_or_best(R: np.ndarray, threshold: float, max_pairs: int) -> tuple[list, str | None]:
    """The relevant (class, attribute, r) pairs; when none passes the threshold, each class's best attribute,
    with a note saying so."""
    pairs = M.relevant_pairs(R, threshold)
    note = None
    if not pairs:
        pairs = [(c, int(np.nanargmax(R[c])), float(np.nanmax(R[c]))) for c in range(len(R))
                 if np.isfinite(R[c]).any() and np.nanmax(R[c]) > 0]
        note = (f"no class-attribute relevance exceeds {threshold:g}; the most relevant attribute of each class "
                "is shown instead")
    return pairs[:max_pairs], note


def local_rows(n: int, disagree: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` held-out samples, with one disagreement among them when there is one."""
    rows = list(range(min(n, k)))
    if k and len(disagree) and not set(rows) & set(disagree.tolist()):
        rows[-1] = int(disagree[0])
    return np.asarray(sorted(set(rows)), dtype=np.int64)


def visualise(ctx: MethodContext, plan: Any, main: Any) -> dict[str, Any]:
    cfg, names, ev = ctx.config, ctx.data.class_names, main.ev
    X_hold = plan.X[plan.n_train:]
    R = M.global_relevance(ev.relevances, ev.g_pred, plan.spec.n_classes)
    pairs, pairs_note = relevant_pairs_or_best(R, cfg.relevance_threshold, cfg.max_pairs)
    mas = V.max_activating(ev.phi, [j for _, j, _ in pairs], cfg.mas_per_pair)
    disagree = np.nonzero(ev.g_pred != ev.f_pred)[0]
    rows = local_rows(len(X_hold), disagree, cfg.n_local)
    out: dict[str, Any] = {"R": R, "pairs": pairs, "pairs_note": pairs_note, "mas": mas, "disagree": disagree,
                           "local_rows": rows, "am": None, "am_settings": None, "am_pairs": [], "am_skipped": [],
                           "am_off": None}
    figures = out["figures"] = {}
    figures["global_relevance"] = ctx.save_figure(V.plot_global_relevance(R, names, cfg.relevance_threshold),
                                                  "global_relevance")
    if len(rows):
        figures["local"] = ctx.save_figure(
            V.plot_local(X_hold[rows] if plan.image else None, ev.relevances[rows], ev.f_pred[rows],
                         ev.g_pred[rows], names, plan.lo, plan.hi), "local")
    if pairs and plan.image:
        figures["mas"] = ctx.save_figure(V.plot_mas(X_hold, mas, pairs, names, plan.lo, plan.hi, ev.f_pred,
                                                    plan.labels_hold), "mas")
    elif pairs:
        attrs = list(dict.fromkeys(j for _, j, _ in pairs))
        figures["profiles"] = ctx.save_figure(V.plot_profiles(X_hold, ev.phi, attrs, ctx.data.feature_names),
                                              "profiles")
    figures["training"] = ctx.save_figure(V.plot_training(main.history, ev.cns), "training")
    if plan.image and cfg.am_pairs > 0 and pairs:
        out.update(_activation_maximisation(ctx, plan, main, X_hold, mas, pairs))
        if out["am"] is not None:
            figures["am"] = ctx.save_figure(V.plot_am(out["am"], out["am_pairs"], names, plan.lo, plan.hi), "am")
    return out


def _activation_maximisation(ctx: MethodContext, plan: Any, main: Any, X_hold: np.ndarray, mas: np.ndarray,
                             pairs: list) -> dict[str, Any]:
    cfg = ctx.config
    settings = V.AMSettings.for_range(plan.lo, plan.hi, rounds=cfg.am_rounds, steps=cfg.am_steps, lr=cfg.am_lr,
                                      clamp=cfg.am_clamp)
    pixels = math.prod(plan.spec.input_shape[1:])
    if pixels < cfg.am_min_pixels:
        return {"am_off": (f"activation maximisation is left out: the inputs have {pixels} pixels per channel, "
                           f"under am_min_pixels = {cfg.am_min_pixels}; on inputs this small the optimisation yields "
                           "saturated pixel patterns (measured on 8x8 digits: 82 % of pixels at the range bounds, "
                           "rougher than the data), not images of what an attribute responds to, so only the "
                           "maximum-activating samples are shown (set am_min_pixels: 0 to compute them anyway)")}
    ctx.progress(0.88, "activation maximisation")
    t0 = time.perf_counter()
    shapes = plan.spec.layer_shapes
    floats = cfg.am_pairs * (sum(math.prod(s) for s in shapes) + math.prod(X_hold.shape[1:]))
    with single_thread_if_small(floats if plan.device.type == "cpu" else 1 << 40):
        chosen = pairs[: cfg.am_pairs]
        starts, kept, skipped = V.live_starts(ctx.model, main.interp, X_hold, mas[: len(chosen)], chosen,
                                              settings.kappa)
        am = (V.activation_maximisation(ctx.model, main.interp, X_hold[starts], [j for _, j, _ in kept], settings)
              if kept else None)
    return {"am": am, "am_settings": settings, "am_pairs": kept, "am_skipped": skipped,
            "am_seconds": time.perf_counter() - t0}
