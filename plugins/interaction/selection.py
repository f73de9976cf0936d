"""Choosing what is explained: the baseline, the output v, the samples (seeded, correctly classified when the
target is the label) and the n input variables (named, all, or the top-n of an occlusion screen)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from governance import MethodContext
from governance.errors import MethodError


# ------------------------------------------------------------------------------------------ helpers
def baseline_of(cfg: Any, data: Any) -> np.ndarray:
    X = np.asarray(data.X)
    if cfg.baseline == "dataset":
        b = data.baseline if data.baseline is not None else np.zeros(X.shape[1:])
    elif cfg.baseline == "mean":
        b = X.mean(axis=0)
    elif cfg.baseline == "zero":
        b = np.zeros(X.shape[1:])
    else:
        b = np.full(X.shape[1:], float(cfg.baseline))
    b = np.asarray(b, dtype=X.dtype)
    if b.shape != X.shape[1:]:
        raise MethodError(f"the dataset's baseline has shape {b.shape}, but samples have shape {X.shape[1:]}",
                          hint="set baseline to 'mean', 'zero' or a number")
    return b

def value_fn(cfg: Any, probabilities: bool):
    from governance_plugins.interaction.variables import output_value

    def value(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        out = np.empty(len(outputs), dtype=np.float64)
        for t in np.unique(targets):
            rows = targets == t
            out[rows] = output_value(outputs[rows], int(t), kind=cfg.output, probabilities=probabilities)
        return out

    return value

def target_rule(cfg: Any, data: Any) -> str:
    if cfg.target == "label" or (cfg.target == "auto" and data.y is not None):
        return "the true label" + (" (only samples every model classifies correctly)" if cfg.correct_only else "")
    return "the reviewed model's predicted class on the unmasked sample (kept fixed for every model and mask)"

@dataclass
class SampleChoice:
    rows: np.ndarray
    targets: np.ndarray
    probabilities: list[bool]  # per model: outputs are probabilities, not logits
    notes: list[str]
    seconds_per_row: float  # measured forward time of all models per input row (for the run-time estimate)


def choose_samples(ctx: MethodContext, cfg: Any, models: list[Any], predicts: list[Any],
                   X: np.ndarray, data: Any) -> SampleChoice:
    """Draw samples in a seeded random order, in small blocks, until ``n_samples`` qualify (every model
    classifies them correctly when the target is the label), looking at no more than
    max(200, 20·n_samples) samples."""
    from governance_plugins.interaction.variables import detect_probabilities, predicted_class

    notes: list[str] = []
    n_out = models[0].n_outputs
    use_labels = cfg.target == "label" or (cfg.target == "auto" and data.y is not None)
    if use_labels and data.y is None:
        raise MethodError("target='label' needs labels in the dataset", hint="pass --data with a 'y' array, or "
                          "set target to 'predicted'")
    labels = None
    if use_labels:
        labels = np.asarray(data.y).astype(np.int64).reshape(-1)
        limit = 2 if n_out == 1 else n_out
        if labels.min() < 0 or labels.max() >= limit:
            raise MethodError(f"labels range over {int(labels.min())}..{int(labels.max())}, but the model has "
                              f"{n_out} output(s)", hint="use class indices as labels, or target='predicted'")
    order = ctx.rng.permutation(len(X))[: min(len(X), max(200, 20 * cfg.n_samples))]
    filtering = use_labels and cfg.correct_only
    block = max(cfg.n_samples, 8) if filtering else cfg.n_samples
    seen_rows, seen_targets, seen_ok, probs = [], [], [], None
    seconds_per_row: list[float] = []
    for start in range(0, len(order), block):
        rows = order[start : start + block]
        t0 = time.perf_counter()
        outs = [np.asarray(p(X[rows])) for p in predicts]
        seconds_per_row.append((time.perf_counter() - t0) / max(len(rows), 1))
        if probs is None:
            probs = [detect_probabilities(o) for o in outs]
        preds = [predicted_class(o) for o in outs]
        targets = labels[rows] if use_labels else preds[0]
        ok = np.logical_and.reduce([p == targets for p in preds]) if filtering else np.ones(len(rows), bool)
        seen_rows.append(rows)
        seen_targets.append(targets)
        seen_ok.append(ok)
        if sum(int(o.sum()) for o in seen_ok) >= cfg.n_samples:
            break
    rows, targets, ok = np.concatenate(seen_rows), np.concatenate(seen_targets), np.concatenate(seen_ok)
    for i, pr in enumerate(probs or []):
        if pr and cfg.output == "log_odds":
            notes.append(f"{models[i].info.display_name} outputs probabilities, not logits: log-odds are "
                         "computed from them, clipped at 1e-12 (they saturate where logits would not).")
    if filtering and not ok.any():
        notes.append("No sample is classified correctly by every model; samples were drawn regardless.")
        ok[:] = True
    elif filtering and ok.sum() < cfg.n_samples:
        notes.append(f"Only {int(ok.sum())} of the {len(rows)} drawn samples are classified correctly by "
                     f"every model; {int(ok.sum())} samples were explained instead of {cfg.n_samples}.")
    idx = np.flatnonzero(ok)[: cfg.n_samples]
    return SampleChoice(rows[idx], targets[idx], probs or [False] * len(models), notes,
                        float(np.median(seconds_per_row)) if seconds_per_row else 0.0)


def choose_variables(cfg: Any, data: Any, Xs: np.ndarray, targets: np.ndarray,
                     baseline: np.ndarray, predicts: list[Any], values: list[Any]):
    from governance_plugins.interaction.variables import (
        VariableSet,
        feature_candidates,
        occlusion_scores,
        patch_candidates,
        resolve_named,
    )

    image = data.modality == "image"
    if image:
        if cfg.features:
            raise MethodError("'features' names tabular features, but this dataset holds images",
                              hint="use 'patches' (names like r0c1 in the grid) or leave both unset")
        cands = patch_candidates(Xs.shape[1:], cfg.grid)
        named = cfg.patches
    else:
        if cfg.patches:
            raise MethodError("'patches' applies to image data, but this dataset is tabular",
                              hint="use 'features' with feature names, or leave both unset")
        cands = feature_candidates(int(np.prod(Xs.shape[1:])), data.feature_names)
        named = cfg.features
    what = "patches" if image else "features"
    n_cand = len(cands.names)
    info: dict[str, Any] = {"kind": cands.kind, "candidates": n_cand, "grid": list(cands.grid) if cands.grid else None}
    if named:
        idx = resolve_named(named, cands, what)
        if len(idx) > 20:
            raise MethodError(f"{len(idx)} named {what} means 2^{len(idx)} masked inputs per sample",
                              hint="name at most 20 (the paper uses 8-10)")
        sets = [idx] * len(Xs)
        rule = f"{len(idx)} {what} named in the configuration"
        scores = None
    elif n_cand <= cfg.n_variables:
        sets = [list(range(n_cand))] * len(Xs)
        rule = f"all {n_cand} {what}"
        scores = None
    else:
        occ = np.mean([occlusion_scores(predicts[i], Xs, baseline, cands,
                                        lambda out, rows, f=values[i]: f(out, targets[rows]))
                       for i in range(len(predicts))], axis=0)  # (S, C)
        if image:
            sets = [sorted(np.argsort(-row, kind="stable")[: cfg.n_variables].tolist()) for row in occ]
            rule = (f"per sample, the {cfg.n_variables} of {n_cand} grid patches whose masking moves v most "
                    "(mean |occlusion| over the models)")
        else:
            mean = occ.mean(axis=0)
            top = sorted(np.argsort(-mean, kind="stable")[: cfg.n_variables].tolist())
            sets = [top] * len(Xs)
            rule = (f"the {cfg.n_variables} of {n_cand} features whose masking moves v most (mean |occlusion| "
                    f"over {len(Xs)} samples and the models); the others stay at their values")
        scores = occ
    var_sets = []
    for s, idx in enumerate(sets):
        var_sets.append(VariableSet(names=[cands.names[c] for c in idx], groups=[cands.groups[c] for c in idx],
                                    candidate_index=list(idx), rule=rule,
                                    scores=[] if scores is None else [float(scores[s][c]) for c in idx]))
    info["rule"] = rule
    info["names"] = var_sets[0].names if all(v.names == var_sets[0].names for v in var_sets) else None
    info["per_sample"] = info["names"] is None
    return var_sets, info
