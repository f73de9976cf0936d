"""Which patterns the models share (spec §2.10–§2.11), with the sign rule: a pattern counts as shared only when
it is salient in every model *with the same sign* (a pattern that raises the output in one version and lowers it
in another is not shared knowledge). Model 0 is the model under review; models 1.. are its peers."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from governance_plugins.interaction.metrics import salient_masks, topk_mask

STATUSES = ("shared", "partly shared", "sign flipped", "gained", "lost")


@dataclass
class SampleSets:
    """Salient and shared masks of one sample's merged interactions (per op: 0 = AND, 1 = OR)."""

    a: np.ndarray  # (m, 2ⁿ) merged AND
    o: np.ndarray  # (m, 2ⁿ) merged OR
    salient: list[tuple[np.ndarray, np.ndarray]]
    shared: tuple[np.ndarray, np.ndarray]

    @property
    def m(self) -> int:
        return int(self.a.shape[0])

    def values(self, op: int) -> np.ndarray:
        return self.a if op == 0 else self.o


def same_sign(values: np.ndarray) -> np.ndarray:
    """Per entry: every model's value has the sign of model 0's (values (m, 2ⁿ))."""
    return np.all(np.sign(values) == np.sign(values[:1]), axis=0)


def sample_sets(a: np.ndarray, o: np.ndarray, ratio: float) -> SampleSets:
    sal = [salient_masks(a[i], o[i], ratio) for i in range(a.shape[0])]
    shared = tuple(np.logical_and.reduce([s[op] for s in sal]) & same_sign(vals)
                   for op, vals in ((0, a), (1, o)))
    return SampleSets(a=a, o=o, salient=sal, shared=shared)  # type: ignore[arg-type]


def status(salient_in: np.ndarray, signs: np.ndarray) -> str | None:
    """Status of one pattern from its salience and sign in every model (model 0 first)."""
    mine, peers = bool(salient_in[0]), salient_in[1:]
    if len(peers) == 0:
        return "salient" if mine else None
    agree = peers & (signs[1:] == signs[0])
    if mine and agree.all():
        return "shared"
    if mine and agree.any():
        return "partly shared"
    if mine:
        return "sign flipped" if peers.any() else "gained"
    return "lost" if peers.any() else None


def transferability(sets: SampleSets, op: int) -> list[float]:
    """Definition 1 with the sign rule: s⁽ⁱ⁾ = |shared| / |Ω⁽ⁱ⁾| per model (NaN for an empty Ω⁽ⁱ⁾)."""
    shared = int(sets.shared[op].sum())
    return [shared / int(s[op].sum()) if s[op].sum() else float("nan") for s in sets.salient]


def shared_fraction(sets: SampleSets) -> float:
    """Share of the reviewed model's salient patterns that every model shares (same sign)."""
    own = int(sets.salient[0][0].sum() + sets.salient[0][1].sum())
    return (int(sets.shared[0].sum() + sets.shared[1].sum()) / own) if own else float("nan")


def _scale(sets: SampleSets, i: int) -> float:
    return float(np.abs(np.concatenate([sets.a[i], sets.o[i]])).max())


def topk_overlap(sets: SampleSets, op: int, i: int, j: int, k: int) -> tuple[float, float]:
    """(s, IoU) of the top-k sets of models i and j for one op: s = |same-sign intersection| / k (the paper's
    Fig. 3 metric, divided by k even when a model has fewer than k non-zero interactions), IoU = |∩| / |∪|."""
    vals = sets.values(op)
    ti = topk_mask(vals[i], k, scale=_scale(sets, i))
    tj = topk_mask(vals[j], k, scale=_scale(sets, j))
    inter = ti & tj & (np.sign(vals[i]) == np.sign(vals[j]))
    union = ti | tj
    return float(inter.sum()) / k, (float(inter.sum()) / float(union.sum()) if union.any() else float("nan"))


def pair_rows(sets: SampleSets, k: int) -> dict[tuple[int, int], dict[str, float]]:
    """Top-k overlap per pair of models, and the IoU of their salient sets (same-sign intersection)."""
    rows = {}
    for i, j in combinations(range(sets.m), 2):
        s_a, iou_a = topk_overlap(sets, 0, i, j, k)
        s_o, iou_o = topk_overlap(sets, 1, i, j, k)
        signs = np.concatenate([np.sign(sets.a[i]) == np.sign(sets.a[j]), np.sign(sets.o[i]) == np.sign(sets.o[j])])
        si, sj = np.concatenate(sets.salient[i]), np.concatenate(sets.salient[j])
        union = int((si | sj).sum())
        rows[(i, j)] = {"s_and_topk": s_a, "iou_and_topk": iou_a, "s_or_topk": s_o, "iou_or_topk": iou_o,
                        "iou_salient": int((si & sj & signs).sum()) / union if union else float("nan")}
    return rows


def curve(sets: SampleSets, ks: list[int]) -> tuple[list[float], list[float]]:
    """s versus k (mean over pairs of models) for AND and OR: |same-sign top-k ∩ top-k| / k."""
    pairs = list(combinations(range(sets.m), 2))
    return tuple([float(np.mean([topk_overlap(sets, op, i, j, k)[0] for i, j in pairs])) for k in ks]
                 for op in (0, 1))  # type: ignore[return-value]
