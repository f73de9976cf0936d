"""From per-sample extractions to what a reviewer reads: shared / gained / lost patterns, sharing per pair of
models, solver quality, and the aggregates behind the figures.

Model 0 is the model under review; models 1.. are its peers. Per sample and model the salient set Ω is
|I| > 0.05·max|I| over AND ∪ OR (spec §2.10). A pattern is *shared* when it is salient in every model
(Definition 1), *gained* when salient in the reviewed model and in no peer, *lost* when salient in some peer
but not in the reviewed model, *partly shared* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from governance_plugins.interaction.extract import Extraction
from governance_plugins.interaction.metrics import (
    k_grid,
    matching_error,
    matching_precision,
    orderwise,
    overlap,
    pattern_label,
    salient_masks,
    topk_mask,
    transferability,
)
from governance_plugins.interaction.transforms import n_of, popcounts

STATUSES = ("shared", "partly shared", "gained", "lost")


@dataclass
class SampleRecord:
    index: int  # row in the dataset
    target: int
    names: list[str]  # variable names, bit j ↔ names[j]
    ext: Extraction
    v_empty: np.ndarray  # (m,) raw v(x_∅) before the shift


def _nanmean(values: list[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _status(salient_in: np.ndarray) -> str | None:
    """salient_in: bool per model (model 0 first)."""
    mine, peers = bool(salient_in[0]), salient_in[1:]
    if len(peers) == 0:
        return "salient" if mine else None
    if mine and peers.all():
        return "shared"
    if mine and not peers.any():
        return "gained"
    if mine:
        return "partly shared"
    if peers.any():
        return "lost"
    return None


@dataclass
class Summary:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    patterns: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    set_sizes: dict[str, list[float]] = field(default_factory=dict)


def _pair_rows(a: np.ndarray, o: np.ndarray, sal: list[tuple[np.ndarray, np.ndarray]], k: int) -> dict[tuple[int, int], dict[str, float]]:
    m = a.shape[0]
    tops = [(topk_mask(a[i], k, scale=np.abs(np.concatenate([a[i], o[i]])).max()),
             topk_mask(o[i], k, scale=np.abs(np.concatenate([a[i], o[i]])).max())) for i in range(m)]
    rows = {}
    for i, j in combinations(range(m), 2):
        s_a, iou_a = overlap(tops[i][0], tops[j][0])
        s_o, iou_o = overlap(tops[i][1], tops[j][1])
        si = np.concatenate(sal[i])
        sj = np.concatenate(sal[j])
        _, iou_s = overlap(si, sj)
        rows[(i, j)] = {"s_and_topk": s_a, "iou_and_topk": iou_a, "s_or_topk": s_o, "iou_or_topk": iou_o,
                        "iou_salient": iou_s}
    return rows


def _curve(a: np.ndarray, o: np.ndarray, ks: list[int]) -> tuple[list[float], list[float]]:
    """Mean over pairs of s at every k, for AND and OR: |top-k ∩ top-k| / k, where a model with fewer than k
    non-zero interactions contributes only those (so k counts at most the larger non-zero set)."""
    m = a.shape[0]
    s_and, s_or = [], []
    for k in ks:
        vals_a, vals_o = [], []
        for i, j in combinations(range(m), 2):
            for vals, x in ((vals_a, a), (vals_o, o)):
                scale_i = np.abs(np.concatenate([a[i], o[i]])).max()
                scale_j = np.abs(np.concatenate([a[j], o[j]])).max()
                ti, tj = topk_mask(x[i], k, scale=scale_i), topk_mask(x[j], k, scale=scale_j)
                size = max(int(ti.sum()), int(tj.sum()))
                vals.append(float(np.logical_and(ti, tj).sum()) / size if size else float("nan"))
        s_and.append(_nanmean(vals_a))
        s_or.append(_nanmean(vals_o))
    return s_and, s_or


def summarize(records: list[SampleRecord], model_labels: list[str], *, salient_ratio: float = 0.05,
              top_k: int | None = None, show_top: int = 10, class_names: list[str] | None = None) -> Summary:
    out = Summary()
    m = len(model_labels)
    n = n_of(records[0].ext.v.shape[1])
    sizes = popcounts(n)
    k = top_k or k_grid(n)[0]
    ks = k_grid(n)
    has_trad = records[0].ext.and_trad is not None and m > 1

    per_sample, solver_rows = [], []
    s_and_all, s_or_all, t_s_and_all, t_s_or_all = [], [], [], []
    pair_acc: dict[tuple[int, int], list[dict[str, float]]] = {}
    tpair_acc: dict[tuple[int, int], list[dict[str, float]]] = {}
    counts = {s: [] for s in ("shared", "gained", "lost", "partly shared")}
    salient_sizes = [[] for _ in range(m)]
    shared_sizes = []
    mp, me_sal_max, me_sal_mean, um_err = [], [], [], []
    curve_j, curve_t = [], []
    agg: dict[str, dict[str, Any]] = {}
    order_keys = ("shared_pos", "shared_neg", "all_pos", "all_neg")
    orders = {key: np.zeros((m, n + 1)) for key in order_keys}

    for rec in records:
        ext = rec.ext
        a, o = ext.and_joint, ext.or_joint
        sal = [salient_masks(a[i], o[i], salient_ratio) for i in range(m)]
        shared = (np.logical_and.reduce([s[0] for s in sal]), np.logical_and.reduce([s[1] for s in sal]))
        if m > 1:
            s_and_all.append(transferability([s[0] for s in sal]))
            s_or_all.append(transferability([s[1] for s in sal]))
            for key, row in _pair_rows(a, o, sal, k).items():
                pair_acc.setdefault(key, []).append(row)
            curve_j.append(_curve(a, o, ks))
            if has_trad:
                ta, to = ext.and_trad, ext.or_trad
                tsal = [salient_masks(ta[i], to[i], salient_ratio) for i in range(m)]
                t_s_and_all.append(transferability([s[0] for s in tsal]))
                t_s_or_all.append(transferability([s[1] for s in tsal]))
                for key, row in _pair_rows(ta, to, tsal, k).items():
                    tpair_acc.setdefault(key, []).append(row)
                curve_t.append(_curve(ta, to, ks))
        for i in range(m):
            salient_sizes[i].append(float(sal[i][0].sum() + sal[i][1].sum()))
            ow = orderwise(a[i], o[i], sal[i], shared)
            for key in order_keys:
                orders[key][i] += getattr(ow, key)
        shared_sizes.append(float(shared[0].sum() + shared[1].sum()))
        delta = float(ext.v[0, -1] - ext.v[0, 0])
        mp.append(float(matching_precision(a[0], o[0], delta, [k])[0]))
        e_max, e_mean = matching_error(ext.v[0], a[0], o[0], sal[0][0], sal[0][1])
        me_sal_max.append(e_max)
        me_sal_mean.append(e_mean)
        um_err.append(ext.joint.matching_error)

        # patterns of this sample: every pattern salient in some model, with its status
        sample_patterns = []
        sample_counts = {s: 0 for s in counts}
        for op, vals, idx_sal in (("and", a, 0), ("or", o, 1)):
            any_sal = np.logical_or.reduce([s[idx_sal] for s in sal])
            for subset in np.flatnonzero(any_sal):
                flags = np.array([s[idx_sal][subset] for s in sal])
                status = _status(flags)
                if status in sample_counts:
                    sample_counts[status] += 1
                label = pattern_label(op, int(subset), rec.names)
                strengths = [float(vals[i, subset]) for i in range(m)]
                sample_patterns.append({"pattern": label, "op": op.upper(), "order": int(sizes[subset]),
                                        "strengths": strengths, "status": status})
                entry = agg.setdefault(label, {"pattern": label, "op": op.upper(), "order": int(sizes[subset]),
                                               "sum": np.zeros(m), "salient": np.zeros(m, dtype=int),
                                               "status": {}})
                entry["sum"] += np.array(strengths)
                entry["salient"] += flags.astype(int)
                entry["status"][status] = entry["status"].get(status, 0) + 1
        for s_name in counts:
            counts[s_name].append(sample_counts[s_name])
        sample_patterns.sort(key=lambda p: (-max(abs(x) for x in p["strengths"]), p["order"], p["pattern"]))
        joint = ext.joint
        for label, sol in [("joint", joint)] + ([(f"traditional: {model_labels[i]}", t)
                                                 for i, t in enumerate(ext.traditional)] if m > 1 else []):
            solver_rows.append({
                "sample": rec.index, "problem": label, "solver": sol.solver, "exact": sol.exact,
                "loss": sol.loss, "loss_gamma0": sol.loss_gamma0, "lower_bound": sol.lower_bound,
                "gap": sol.gap, "reduction": sol.improvement, "seconds": sol.seconds,
                "matching_error": sol.matching_error, "note": sol.message[:160]})
        target_name = (class_names[rec.target] if class_names and 0 <= rec.target < len(class_names)
                       else str(rec.target))
        per_sample.append({
            "sample": rec.index, "target": rec.target, "target_name": target_name, "variables": rec.names,
            "v_empty": [float(x) for x in rec.v_empty],
            "v_full": [float(x) for x in rec.v_empty + ext.v[:, -1]],
            "loss": joint.loss, "loss_gamma0": joint.loss_gamma0, "solver": joint.solver,
            "patterns": sample_patterns[:show_top], "n_patterns": len(sample_patterns),
            "counts": sample_counts,
        })

    S = len(records)
    rows = []
    for entry in agg.values():
        mean = entry["sum"] / S
        priority = {"shared": 4, "partly shared": 3, "gained": 2, "lost": 1, "salient": 4}
        dominant = max(entry["status"].items(), key=lambda kv: (kv[1], priority.get(kv[0], 0)))[0]
        rows.append({"pattern": entry["pattern"], "op": entry["op"], "order": entry["order"],
                     "mean_strength": [float(x) for x in mean],
                     "salient_in": [int(x) for x in entry["salient"]],
                     "status": dominant, "status_counts": {str(k2): v for k2, v in entry["status"].items()}})
    rows.sort(key=lambda r: (-max(abs(x) for x in r["mean_strength"]), r["order"], r["pattern"]))
    out.patterns = rows

    def pick(status: str, limit: int = 15) -> list[dict[str, Any]]:
        chosen = [r for r in rows if r["status_counts"].get(status, 0) > 0]
        chosen.sort(key=lambda r: (-r["status_counts"][status], -max(abs(x) for x in r["mean_strength"])))
        return chosen[:limit]

    # -------------------------------------------------------------------------------------- metrics
    mt: dict[str, float] = {"n_samples": float(S), "n_variables": float(n), "n_models": float(m), "top_k": float(k)}
    mt["salient_count"] = _nanmean(salient_sizes[0])
    if m > 1:
        mt["s_and"] = _nanmean([x for row in s_and_all for x in row])
        mt["s_or"] = _nanmean([x for row in s_or_all for x in row])
        mt["shared_count"] = _nanmean(shared_sizes)
        mt["gained_count"] = _nanmean(counts["gained"])
        mt["lost_count"] = _nanmean(counts["lost"])
        mt["shared_fraction"] = _nanmean([sh / sz if sz else float("nan")
                                          for sh, sz in zip(shared_sizes, salient_sizes[0])])
        all_pairs = [r for rs in pair_acc.values() for r in rs]
        mt["iou_and_topk"] = _nanmean([r["iou_and_topk"] for r in all_pairs])
        mt["iou_or_topk"] = _nanmean([r["iou_or_topk"] for r in all_pairs])
        mt["iou_salient"] = _nanmean([r["iou_salient"] for r in all_pairs])
        if has_trad:
            mt["traditional_s_and"] = _nanmean([x for row in t_s_and_all for x in row])
            mt["traditional_s_or"] = _nanmean([x for row in t_s_or_all for x in row])
            t_pairs = [r for rs in tpair_acc.values() for r in rs]
            mt["traditional_iou_and_topk"] = _nanmean([r["iou_and_topk"] for r in t_pairs])
            mt["traditional_iou_or_topk"] = _nanmean([r["iou_or_topk"] for r in t_pairs])
    joints = [r.ext.joint for r in records]
    mt["loss"] = _nanmean([j.loss for j in joints])
    mt["loss_gamma0"] = _nanmean([j.loss_gamma0 for j in joints])
    mt["loss_reduction"] = _nanmean([j.improvement for j in joints])
    gaps = [j.gap for j in joints if j.gap is not None]
    mt["lower_bound_gap"] = _nanmean(gaps) if gaps else float("nan")
    bounds = [(r.ext.joint.loss - r.ext.bound) / r.ext.bound for r in records
              if r.ext.bound is not None and r.ext.bound > 0 and m > 1]
    mt["o13_bound_gap"] = _nanmean(bounds) if bounds else float("nan")
    mt["solver_seconds"] = _nanmean([j.seconds for j in joints])
    mt["exact_fraction"] = _nanmean([1.0 if j.exact else 0.0 for j in joints])
    mt["universal_matching_error"] = float(np.max(um_err))
    mt["salient_matching_error_max"] = float(np.max(me_sal_max))
    mt["salient_matching_error_mean"] = _nanmean(me_sal_mean)
    mt["matching_precision_at_k"] = _nanmean(mp)
    out.metrics = {key: float(val) for key, val in mt.items()}

    # -------------------------------------------------------------------------------------- tables
    def pair_table(acc: dict[tuple[int, int], list[dict[str, float]]], kind: str) -> list[dict[str, Any]]:
        table = []
        for (i, j), rs in sorted(acc.items()):
            table.append({"model_a": model_labels[i], "model_b": model_labels[j], "extraction": kind,
                          **{key: _nanmean([r[key] for r in rs]) for key in rs[0]}})
        return table

    if m > 1:
        out.tables["pairs"] = pair_table(pair_acc, "shared (Eq. 6)") + (
            pair_table(tpair_acc, "traditional (Eq. 4)") if has_trad else [])
    out.tables["solver"] = solver_rows
    out.tables["patterns"] = [
        {"pattern": r["pattern"], "order": r["order"], "status": r["status"],
         **{f"strength[{model_labels[i]}]": r["mean_strength"][i] for i in range(m)},
         **{f"salient_in[{model_labels[i]}]": r["salient_in"][i] for i in range(m)}}
        for r in rows[:50]]

    # -------------------------------------------------------------------------------------- details
    def brief(r: dict[str, Any], status: str | None = None) -> dict[str, Any]:
        return {"pattern": r["pattern"], "order": r["order"], "strengths": r["mean_strength"],
                "samples": r["status_counts"].get(status, 0) if status else max(r["salient_in"]),
                "status": r["status"]}

    out.details = {
        "models": model_labels,
        "k": k,
        "k_grid": ks,
        "salient_ratio": salient_ratio,
        "samples": per_sample,
        "top_patterns": [brief(r) for r in rows[:show_top * 2]],
        "shared": [brief(r, "shared") for r in pick("shared")] if m > 1 else [],
        "gained": [brief(r, "gained") for r in pick("gained")] if m > 1 else [],
        "lost": [brief(r, "lost") for r in pick("lost")] if m > 1 else [],
    }
    if m > 1:
        cj = np.array(curve_j)  # (S, 2, len(ks))
        out.curves = {"k": ks, "joint_and": cj[:, 0].mean(0).tolist(), "joint_or": cj[:, 1].mean(0).tolist()}
        if has_trad:
            ct = np.array(curve_t)
            out.curves.update({"traditional_and": ct[:, 0].mean(0).tolist(),
                               "traditional_or": ct[:, 1].mean(0).tolist()})
        out.details["curves"] = out.curves
    out.orders = {key: val / S for key, val in orders.items()}
    out.set_sizes = {"salient": [_nanmean(s) for s in salient_sizes], "shared": [_nanmean(shared_sizes)] * m}

    # -------------------------------------------------------------------------------------- arrays
    out.arrays = {
        "v": np.stack([r.ext.v + r.v_empty[:, None] for r in records]),
        "i_and": np.stack([r.ext.and_joint for r in records]),
        "i_or": np.stack([r.ext.or_joint for r in records]),
        "gamma_shared": np.stack([r.ext.joint.gamma_shared for r in records]),
        "gamma_specific": np.stack([r.ext.joint.gamma_specific for r in records]),
        "error_term": np.stack([-r.ext.joint.q for r in records]),
        "samples": np.array([r.index for r in records]),
        "targets": np.array([r.target for r in records]),
    }
    if has_trad:
        out.arrays["i_and_traditional"] = np.stack([r.ext.and_trad for r in records])
        out.arrays["i_or_traditional"] = np.stack([r.ext.or_trad for r in records])
    return out
