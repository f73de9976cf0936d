"""Controls for the headline figures, and the stability of the reported optimum across re-solves.

* **Permuted-peer control** (sharing): the peers' variables are relabelled by a random permutation before the
  joint extraction, v'(T) = v(π(T)). Each peer keeps its own interaction structure (orders, strengths, sparsity)
  but no longer computes its patterns on the same variables as the reviewed model, so the sharing it still shows
  is what the joint objective and the pattern structure produce by chance (the joint loss rewards sharing by
  design, so a sharing figure means something only above this level).
* **Trivial split** (sparsity): the salient patterns of the 50/50 split γ = 0 with no error term, which is what
  a solver that never moves reports.
* **Trivial split** (faithfulness): the matching error against v of the trivial split's own salient patterns. The
  extraction is worth its cost only if its salient summary is sparser *and* rebuilds v better than the split
  that needs no optimisation.
* **Re-solve** (canonical optimum): the same joint problem with its variables relabelled is a different LP
  instance for HiGHS; when the optimum is not unique it may land on another vertex. The largest change of a
  merged interaction after mapping back, and the agreement of the salient sets, say how canonical the reported
  optimum is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance_plugins.interaction.extract import ExtractOptions, Extraction, extract_all, joint_only
from governance_plugins.interaction.metrics import matching_error, salient_masks
from governance_plugins.interaction.transforms import and_or_interactions, merge_singletons


def permutation_index(perm: np.ndarray) -> np.ndarray:
    """Subset index map for a variable permutation: index T ↦ the index of {π(j) : j ∈ T}."""
    n = len(perm)
    idx = np.arange(1 << n)
    out = np.zeros_like(idx)
    for j, pj in enumerate(perm):
        out |= ((idx >> j) & 1) << int(pj)
    return out


def random_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of n variables that is not the identity (for n ≥ 2)."""
    while True:
        perm = rng.permutation(n)
        if n < 2 or np.any(perm != np.arange(n)):
            return perm


def permuted_peer_extractions(vs: list[np.ndarray], tau_gamma: np.ndarray, options: ExtractOptions,
                              rng: np.random.Generator) -> list[Extraction]:
    """Joint extractions with every peer's variables relabelled by its own random permutation."""
    out = []
    n = int(vs[0].shape[1]).bit_length() - 1
    for v in vs:
        w = np.array(v, copy=True)
        for i in range(1, w.shape[0]):
            w[i] = v[i][permutation_index(random_permutation(n, rng))]
        out.append(w)
    return extract_all(out, tau_gamma, joint_only(options))


def trivial_split_figures(v: np.ndarray, ratio: float) -> tuple[float, float]:
    """(salient patterns, mean salient-only matching error against v) of the 50/50 split (γ = 0, no error
    term) of one model's v, after merging: what the headline figures would be without the optimisation."""
    a, o = merge_singletons(*and_or_interactions(v, np.zeros_like(v)))
    sal = salient_masks(a, o, ratio)
    return float(sal[0].sum() + sal[1].sum()), matching_error(v, a, o, sal[0], sal[1])[1]


@dataclass
class Stability:
    """How much the reported optimum moves when the same problem is solved with relabelled variables."""

    max_change: float  # largest |ΔI| of a merged interaction, any model
    salient_agreement: float  # IoU of the salient (op, S) sets, pooled over models
    loss_change: float  # |ΔL| (0 up to solver tolerance for an exact solver)


def resolve_stability(ext: Extraction, tau_gamma: np.ndarray, options: ExtractOptions, ratio: float,
                      rng: np.random.Generator) -> Stability:
    """Re-solve one sample's joint problem with all variables relabelled and compare after mapping back."""
    n = int(ext.v.shape[1]).bit_length() - 1
    index = permutation_index(random_permutation(n, rng))
    again = extract_all([ext.v[:, index]], tau_gamma, joint_only(options))[0]
    inverse = np.argsort(index)
    a2, o2 = again.and_joint[:, inverse], again.or_joint[:, inverse]
    change = float(max(np.abs(a2 - ext.and_joint).max(), np.abs(o2 - ext.or_joint).max()))
    inter = union = 0
    for i in range(ext.m):
        s1 = np.concatenate(salient_masks(ext.and_joint[i], ext.or_joint[i], ratio))
        s2 = np.concatenate(salient_masks(a2[i], o2[i], ratio))
        inter += int(np.logical_and(s1, s2).sum())
        union += int(np.logical_or(s1, s2).sum())
    return Stability(max_change=change, salient_agreement=inter / union if union else 1.0,
                     loss_change=abs(again.joint.loss - ext.joint.loss))
