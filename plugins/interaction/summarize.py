"""From per-sample extractions to what a reviewer reads: shared / gained / lost patterns, sharing per pair of
models, solver quality, faithfulness against v, and the aggregates behind the figures.

Per sample and model the salient set Ω is |I| > 0.05·max|I| over AND ∪ OR (spec §2.10). A pattern is *shared*
when it is salient in every model with the same sign, *partly shared* when some peers agree, *sign flipped*
when peers have it with the opposite sign only, *gained* when no peer has it, *lost* when a peer has it but the
reviewed model does not (:mod:`.sharing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from governance_plugins.interaction.extract import Extraction
from governance_plugins.interaction.metrics import (
    k_grid,
    matching_error,
    matching_precision,
    orderwise,
    pattern_label,
)
from governance_plugins.interaction.sharing import (
    SampleSets,
    curve,
    pair_rows,
    sample_sets,
    shared_fraction,
    status,
    transferability,
)
from governance_plugins.interaction.transforms import n_of, popcounts

PRIORITY = {"shared": 5, "salient": 5, "partly shared": 4, "sign flipped": 3, "gained": 2, "lost": 1}
ORDER_KEYS = ("shared_pos", "shared_neg", "all_pos", "all_neg")


@dataclass
class SampleRecord:
    index: int  # row in the dataset
    target: int
    names: list[str]  # variable names, bit j ↔ names[j]
    ext: Extraction
    v_empty: np.ndarray  # (m,) raw v(x_∅) before the shift


@dataclass
class SummaryOptions:
    salient_ratio: float = 0.05
    top_k: int | None = None
    show_top: int = 10
    class_names: list[str] | None = None


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
    per_sample: dict[str, list[float]] = field(default_factory=dict)  # per-sample values of headline figures


def nanmean(values: list[float | None]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def sharing_figures(exts: list[Extraction], ratio: float) -> dict[str, list[float]]:
    """Per-sample shared fraction and s_and / s_or (mean over models) of joint extractions with m ≥ 2."""
    out: dict[str, list[float]] = {"shared_fraction": [], "s_and": [], "s_or": []}
    for ext in exts:
        sets = sample_sets(ext.and_joint, ext.or_joint, ratio)
        out["shared_fraction"].append(shared_fraction(sets))
        out["s_and"].append(nanmean(transferability(sets, 0)))
        out["s_or"].append(nanmean(transferability(sets, 1)))
    return out


class _Accumulator:
    """Collects what every figure needs while walking over the samples once."""

    def __init__(self, labels: list[str], n: int, opts: SummaryOptions, has_trad: bool) -> None:
        self.labels, self.m, self.n, self.opts, self.has_trad = labels, len(labels), n, opts, has_trad
        self.k = opts.top_k or k_grid(n)[0]
        self.ks = k_grid(n)
        self.sizes = popcounts(n)
        self.values: dict[str, list[float]] = {}
        self.pairs: dict[str, dict[tuple[int, int], list[dict[str, float]]]] = {"joint": {}, "trad": {}}
        self.curves: dict[str, list[tuple[list[float], list[float]]]] = {"joint": [], "trad": []}
        self.orders = {key: np.zeros((self.m, n + 1)) for key in ORDER_KEYS}
        self.salient_sizes: list[list[float]] = [[] for _ in labels]
        self.patterns: dict[str, dict[str, Any]] = {}
        self.samples: list[dict[str, Any]] = []
        self.solver_rows: list[dict[str, Any]] = []

    def note(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(float(value))

    def add(self, rec: SampleRecord) -> None:
        ext = rec.ext
        sets = sample_sets(ext.and_joint, ext.or_joint, self.opts.salient_ratio)
        if self.m > 1:
            self._sharing("joint", sets)
            if self.has_trad:
                self._sharing("trad", sample_sets(ext.and_trad, ext.or_trad, self.opts.salient_ratio))
        for i in range(self.m):
            self.salient_sizes[i].append(float(sets.salient[i][0].sum() + sets.salient[i][1].sum()))
            ow = orderwise(sets.a[i], sets.o[i], sets.salient[i], sets.shared)
            for key in ORDER_KEYS:
                self.orders[key][i] += getattr(ow, key)
        self.note("shared_count", float(sets.shared[0].sum() + sets.shared[1].sum()))
        self._faithfulness(ext, sets)
        self._patterns(rec, sets)
        self._solver_rows(rec)

    def _sharing(self, kind: str, sets: SampleSets) -> None:
        prefix = "" if kind == "joint" else "traditional_"
        self.note(prefix + "s_and", nanmean(transferability(sets, 0)))
        self.note(prefix + "s_or", nanmean(transferability(sets, 1)))
        self.note(prefix + "shared_fraction", shared_fraction(sets))
        for key, row in pair_rows(sets, self.k).items():
            self.pairs[kind].setdefault(key, []).append(row)
        self.curves[kind].append(curve(sets, self.ks))

    def _faithfulness(self, ext: Extraction, sets: SampleSets) -> None:
        """Matching errors against v (not v + q): all interactions (the error term's size) and salient only."""
        a, o = sets.a[0], sets.o[0]
        e_max, e_mean = matching_error(ext.v[0], a, o)
        s_max, s_mean = matching_error(ext.v[0], a, o, sets.salient[0][0], sets.salient[0][1])
        self.note("matching_error_max", e_max)
        self.note("matching_error_mean", e_mean)
        self.note("salient_matching_error_max", s_max)
        self.note("salient_matching_error_mean", s_mean)
        self.note("output_range", float(np.abs(ext.v[0]).max()))
        self.note("universal_matching_error", ext.joint.matching_error)
        self.note("matching_precision_at_k",
                  float(matching_precision(a, o, float(ext.v[0, -1] - ext.v[0, 0]), [self.k])[0]))

    def _patterns(self, rec: SampleRecord, sets: SampleSets) -> None:
        found, counts = [], {s: 0 for s in PRIORITY if s != "salient"}
        for op_idx, op in ((0, "and"), (1, "or")):
            vals = sets.values(op_idx)
            any_sal = np.logical_or.reduce([s[op_idx] for s in sets.salient])
            for subset in np.flatnonzero(any_sal):
                flags = np.array([s[op_idx][subset] for s in sets.salient])
                st = status(flags, np.sign(vals[:, subset]))
                if st in counts:
                    counts[st] += 1
                label = pattern_label(op, int(subset), rec.names)
                strengths = [float(vals[i, subset]) for i in range(self.m)]
                found.append({"pattern": label, "op": op.upper(), "order": int(self.sizes[subset]),
                              "strengths": strengths, "status": st})
                entry = self.patterns.setdefault(label, {"pattern": label, "op": op.upper(),
                                                         "order": int(self.sizes[subset]), "sum": np.zeros(self.m),
                                                         "salient": np.zeros(self.m, dtype=int), "status": {}})
                entry["sum"] += np.array(strengths)
                entry["salient"] += flags.astype(int)
                entry["status"][st] = entry["status"].get(st, 0) + 1
        for key, val in counts.items():
            self.note(f"count:{key}", val)
        found.sort(key=lambda p: (-max(abs(x) for x in p["strengths"]), p["order"], p["pattern"]))
        self._sample_row(rec, found, counts)

    def _sample_row(self, rec: SampleRecord, found: list[dict[str, Any]], counts: dict[str, int]) -> None:
        names = self.opts.class_names
        joint = rec.ext.joint
        self.samples.append({
            "sample": rec.index, "target": rec.target,
            "target_name": names[rec.target] if names and 0 <= rec.target < len(names) else str(rec.target),
            "variables": rec.names, "v_empty": [float(x) for x in rec.v_empty],
            "v_full": [float(x) for x in rec.v_empty + rec.ext.v[:, -1]],
            "loss": joint.loss, "loss_gamma0": joint.loss_gamma0, "solver": joint.solver,
            "patterns": found[: self.opts.show_top], "n_patterns": len(found), "counts": counts})

    def _solver_rows(self, rec: SampleRecord) -> None:
        ext = rec.ext
        rows = [("joint", ext.joint)] + ([(f"traditional: {self.labels[i]}", t) for i, t in
                                          enumerate(ext.traditional)] if self.m > 1 else [])
        for label, sol in rows:
            self.solver_rows.append({
                "sample": rec.index, "problem": label, "solver": sol.solver, "exact": sol.exact,
                "loss": sol.loss, "loss_gamma0": sol.loss_gamma0, "lower_bound": sol.lower_bound,
                "gap": sol.gap, "reduction": sol.improvement, "seconds": sol.seconds, "iterations": sol.iterations,
                "matching_error": sol.matching_error, "note": sol.message[:200]})


def _pattern_rows(acc: _Accumulator, n_samples: int) -> list[dict[str, Any]]:
    rows = []
    for entry in acc.patterns.values():
        dominant = max(entry["status"].items(), key=lambda kv: (kv[1], PRIORITY.get(kv[0], 0)))[0]
        rows.append({"pattern": entry["pattern"], "op": entry["op"], "order": entry["order"],
                     "mean_strength": [float(x) for x in entry["sum"] / n_samples],
                     "salient_in": [int(x) for x in entry["salient"]], "status": dominant,
                     "status_counts": {str(k): v for k, v in entry["status"].items()}})
    rows.sort(key=lambda r: (-max(abs(x) for x in r["mean_strength"]), r["order"], r["pattern"]))
    return rows


def _metrics(acc: _Accumulator, records: list[SampleRecord]) -> dict[str, float]:
    mean = lambda key: nanmean(acc.values.get(key, []))  # noqa: E731
    mt: dict[str, float] = {"n_samples": float(len(records)), "n_variables": float(acc.n),
                            "n_models": float(acc.m), "top_k": float(acc.k),
                            "salient_count": nanmean(acc.salient_sizes[0])}
    if acc.m > 1:
        keys = ["s_and", "s_or", "shared_fraction", "shared_count"]
        mt.update({key: mean(key) for key in keys})
        for status_key, metric in (("gained", "gained_count"), ("lost", "lost_count"),
                                   ("sign flipped", "sign_flipped_count")):
            mt[metric] = mean(f"count:{status_key}")
        joint_pairs = [r for rs in acc.pairs["joint"].values() for r in rs]
        for key in ("iou_and_topk", "iou_or_topk", "iou_salient", "s_and_topk", "s_or_topk"):
            mt[key] = nanmean([r[key] for r in joint_pairs])
        if acc.has_trad:
            trad_pairs = [r for rs in acc.pairs["trad"].values() for r in rs]
            mt.update({f"traditional_{key}": mean(f"traditional_{key}") for key in ("s_and", "s_or",
                                                                                    "shared_fraction")})
            for key in ("iou_and_topk", "iou_or_topk"):
                mt[f"traditional_{key}"] = nanmean([r[key] for r in trad_pairs])
    joints = [r.ext.joint for r in records]
    mt.update({"loss": nanmean([j.loss for j in joints]), "loss_gamma0": nanmean([j.loss_gamma0 for j in joints]),
               "loss_reduction": nanmean([j.improvement for j in joints]),
               "lower_bound_gap": nanmean([j.gap for j in joints]),
               "max_lower_bound_gap": float(np.nanmax([np.nan if j.gap is None else j.gap for j in joints]))
               if any(j.gap is not None for j in joints) else float("nan"),
               "solver_seconds": nanmean([j.seconds for j in joints]),
               "exact_fraction": nanmean([1.0 if j.exact else 0.0 for j in joints])})
    bounds = [(r.ext.joint.loss - r.ext.bound) / r.ext.bound for r in records
              if r.ext.bound is not None and r.ext.bound > 0 and acc.m > 1]
    mt["o13_bound_gap"] = nanmean(bounds)
    for key in ("matching_error_max", "salient_matching_error_max", "universal_matching_error"):
        mt[key] = float(np.max(acc.values[key]))
    for key in ("matching_error_mean", "salient_matching_error_mean", "matching_precision_at_k", "output_range"):
        mt[key] = mean(key)
    return {key: float(val) for key, val in mt.items()}


def _tables(acc: _Accumulator, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    def pair_table(kind: str, label: str) -> list[dict[str, Any]]:
        return [{"model_a": acc.labels[i], "model_b": acc.labels[j], "extraction": label,
                 **{key: nanmean([r[key] for r in rs]) for key in rs[0]}}
                for (i, j), rs in sorted(acc.pairs[kind].items())]

    tables: dict[str, list[dict[str, Any]]] = {"solver": acc.solver_rows}
    if acc.m > 1:
        tables["pairs"] = pair_table("joint", "shared (Eq. 6)") + (
            pair_table("trad", "traditional (Eq. 4)") if acc.has_trad else [])
    tables["patterns"] = [
        {"pattern": r["pattern"], "order": r["order"], "status": r["status"],
         **{f"strength[{acc.labels[i]}]": r["mean_strength"][i] for i in range(acc.m)},
         **{f"salient_in[{acc.labels[i]}]": r["salient_in"][i] for i in range(acc.m)}}
        for r in rows[:50]]
    return tables


def _details(acc: _Accumulator, rows: list[dict[str, Any]]) -> dict[str, Any]:
    def brief(r: dict[str, Any], st: str | None = None) -> dict[str, Any]:
        return {"pattern": r["pattern"], "order": r["order"], "strengths": r["mean_strength"],
                "samples": r["status_counts"].get(st, 0) if st else max(r["salient_in"]), "status": r["status"]}

    def pick(st: str, limit: int = 15) -> list[dict[str, Any]]:
        chosen = [r for r in rows if r["status_counts"].get(st, 0) > 0]
        chosen.sort(key=lambda r: (-r["status_counts"][st], -max(abs(x) for x in r["mean_strength"])))
        return [brief(r, st) for r in chosen[:limit]]

    details: dict[str, Any] = {"models": acc.labels, "k": acc.k, "k_grid": acc.ks,
                               "salient_ratio": acc.opts.salient_ratio, "samples": acc.samples,
                               "top_patterns": [brief(r) for r in rows[: acc.opts.show_top * 2]]}
    for key in ("shared", "gained", "lost", "sign flipped"):
        details[key.replace(" ", "_")] = pick(key) if acc.m > 1 else []
    return details


def _curves(acc: _Accumulator) -> dict[str, Any]:
    if acc.m == 1:
        return {}
    cj = np.array(acc.curves["joint"])  # (S, 2, len(ks))
    out = {"k": acc.ks, "joint_and": cj[:, 0].mean(0).tolist(), "joint_or": cj[:, 1].mean(0).tolist()}
    if acc.has_trad:
        ct = np.array(acc.curves["trad"])
        out.update({"traditional_and": ct[:, 0].mean(0).tolist(), "traditional_or": ct[:, 1].mean(0).tolist()})
    return out


def _arrays(records: list[SampleRecord], has_trad: bool) -> dict[str, np.ndarray]:
    arrays = {
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
        arrays["i_and_traditional"] = np.stack([r.ext.and_trad for r in records])
        arrays["i_or_traditional"] = np.stack([r.ext.or_trad for r in records])
    return arrays


def summarize(records: list[SampleRecord], model_labels: list[str], opts: SummaryOptions | None = None) -> Summary:
    opts = opts or SummaryOptions()
    m = len(model_labels)
    has_trad = records[0].ext.and_trad is not None and m > 1
    acc = _Accumulator(model_labels, n_of(records[0].ext.v.shape[1]), opts, has_trad)
    for rec in records:
        acc.add(rec)
    rows = _pattern_rows(acc, len(records))
    out = Summary(metrics=_metrics(acc, records), tables=_tables(acc, rows), details=_details(acc, rows),
                  arrays=_arrays(records, has_trad), curves=_curves(acc), patterns=rows,
                  orders={key: val / len(records) for key, val in acc.orders.items()})
    if out.curves:
        out.details["curves"] = out.curves
    out.details["orders"] = {key: val.tolist() for key, val in out.orders.items()}  # (m, n+1) per-sample means
    out.set_sizes = {"salient": [nanmean(s) for s in acc.salient_sizes],
                     "shared": [nanmean(acc.values.get("shared_count", []))] * m}
    out.per_sample = {key: list(vals) for key, vals in acc.values.items()}
    return out
