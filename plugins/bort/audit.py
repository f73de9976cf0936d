"""How far each layer's weights are from bounded-orthogonal (spec B6.1).

Per layer with ``W`` (``m x n``, rows = output units), ``k = min(m, n)``, ``G`` the ``k x k`` Gram matrix
(``W W^T`` when wide, ``W^T W`` when tall), ``s = tr(G)/k`` and ``sigma^2`` the eigenvalues of ``G``:

* ``D_orth = ||G/s - I||_F / sqrt(k)`` (scale-free: 0 for a scaled partial isometry),
* ``D_abs = ||G - cI||_F / (c sqrt(k))`` (0 exactly at Bort's target amplitude ``c``),
* ``kappa = sigma_max / sigma_min``, the row norms and ``R_c = 1/4 ||G - cI||_F^2``,
* boundedness, two-sided: every diagonal entry of ``G`` (the squared row norms of a wide weight, the squared
  column norms of a tall one) within ``[(1 - t) c, (1 + t) c]``. A one-sided ``||w_i||^2 <= (1 + t) c`` would
  pass every untrained layer (torch's default initialisation gives ``||w_i||^2 ~ 1/3``).

Layers are split into the ones Bort constrains by default (every Linear/Conv weight except the last linear
layer) and that last linear layer, the classifier, which Bort leaves free by default (spec B2.6): their
figures are reported separately, so the free classifier never hides or fakes what the constraint did.

Everything comes from one float64 Gram matrix and its eigenvalues (``eigvalsh``): about 30 times cheaper
than singular values of the weights themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from governance_plugins.bort.layers import LayerWeight

#: eigenvalues below this fraction of the largest count as zero (rank deficiency -> kappa = inf)
RANK_TOL = 1e-12


@dataclass
class LayerAudit:
    name: str
    kind: str
    shape: tuple[int, ...]
    m: int
    n: int
    n_params: int
    d_orth: float
    d_abs: float
    kappa: float
    penalty: float  # R_c
    mean_sigma2: float  # s = tr(G)/k
    row_norm_max: float
    row_norm_min: float
    row_norm_ratio: float
    row_dev_max: float  # max_i |‖w_i‖² − c| / c
    norm_sq_min: float  # smallest diagonal entry of G (row norms² if wide, column norms² if tall)
    norm_sq_max: float
    norm_dev_max: float  # max_i |G_ii − c| / c
    within_bounds: bool  # norm_dev_max <= tolerance (two-sided)
    sigma2: np.ndarray  # eigenvalues of G, descending

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sigma2")
        d["shape"] = "×".join(map(str, self.shape))
        d["form"] = "wide" if self.m <= self.n else "tall"
        return d


def gram_eigenvalues(W: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Eigenvalues (descending, >= 0) of the ``k x k`` Gram matrix of ``W`` (float64 unless told otherwise)."""
    W = np.asarray(W, dtype=dtype)
    m, n = W.shape
    G = W @ W.T if m <= n else W.T @ W
    lam = np.linalg.eigvalsh(G)[::-1]
    return np.clip(lam, 0.0, None)


def audit_matrix(W: np.ndarray, *, name: str = "W", kind: str = "linear", shape: Sequence[int] | None = None,
                 amplitude: float = 1.0, row_tolerance: float = 0.1, dtype: Any = np.float64) -> LayerAudit:
    """Audit one ``m x n`` weight matrix (see the module docstring). ``row_tolerance`` t: the layer is within
    the bound when every diagonal entry of its ``k x k`` Gram matrix lies in ``[(1 - t) c, (1 + t) c]`` (an
    uncalibrated default, not from the paper)."""
    if amplitude <= 0:
        raise ValueError(f"amplitude must be positive, got {amplitude}")
    W = np.asarray(W, dtype=dtype)
    m, n = W.shape
    k = min(m, n)
    lam = gram_eigenvalues(W, dtype).astype(np.float64)
    c = float(amplitude)
    s = float(lam.mean())
    d_orth = float(np.sqrt(np.mean((lam / s - 1.0) ** 2))) if s > 0 else math.nan
    d_abs = float(np.sqrt(np.sum((lam - c) ** 2)) / (c * math.sqrt(k)))
    lmax, lmin = float(lam[0]), float(lam[-1])
    kappa = math.sqrt(lmax / lmin) if lmin > RANK_TOL * lmax and lmax > 0 else math.inf
    row_sq = np.einsum("ij,ij->i", W, W)
    rmax, rmin = float(np.sqrt(row_sq.max())), float(np.sqrt(row_sq.min()))
    unit_sq = row_sq if m <= n else np.einsum("ij,ij->j", W, W)  # diag(G): rows if wide, columns if tall
    norm_dev = float(np.max(np.abs(unit_sq - c)) / c)
    return LayerAudit(
        name=name, kind=kind, shape=tuple(shape) if shape is not None else (m, n), m=m, n=n, n_params=m * n,
        d_orth=d_orth, d_abs=d_abs, kappa=kappa, penalty=float(0.25 * np.sum((lam - c) ** 2)), mean_sigma2=s,
        row_norm_max=rmax, row_norm_min=rmin, row_norm_ratio=rmax / rmin if rmin > 0 else math.inf,
        row_dev_max=float(np.max(np.abs(row_sq - c)) / c), norm_sq_min=float(unit_sq.min()),
        norm_sq_max=float(unit_sq.max()), norm_dev_max=norm_dev, within_bounds=bool(norm_dev <= row_tolerance),
        sigma2=lam,
    )


def audit_layers(layers: Sequence[LayerWeight], *, amplitude: float = 1.0, row_tolerance: float = 0.1,
                 progress: Any = None) -> list[LayerAudit]:
    out = []
    for i, layer in enumerate(layers):
        out.append(audit_matrix(layer.matrix, name=layer.name, kind=layer.kind, shape=layer.shape,
                                amplitude=amplitude, row_tolerance=row_tolerance))
        if progress is not None:
            progress((i + 1) / max(len(layers), 1))
    return out


def classifier_index(audits: Sequence[LayerAudit]) -> int | None:
    """Position of the layer Bort leaves free by default: the last linear layer, when there is another layer
    before it (the rule of ``make_bort_param_groups``); None otherwise."""
    if len(audits) < 2:
        return None
    linear = [i for i, a in enumerate(audits) if a.kind == "linear"]
    return linear[-1] if linear else None


@dataclass(frozen=True)
class Split:
    """Which audited layers Bort constrains by default and which one is the free classifier."""

    constrained: tuple[int, ...]
    classifier: int | None

    @classmethod
    def of(cls, audits: Sequence[LayerAudit], classifier_constrained: bool = False) -> "Split":
        cls_i = classifier_index(audits)
        keep = tuple(i for i in range(len(audits)) if classifier_constrained or i != cls_i)
        return cls(constrained=keep, classifier=cls_i)


def _weighted(values: Sequence[float], weights: Sequence[float]) -> float:
    v, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v)
    return float(np.average(v[ok], weights=w[ok])) if ok.any() else math.nan


def group_summary(audits: Sequence[LayerAudit]) -> dict[str, float]:
    """Parameter-weighted mean D_orth and D_abs, the worst boundedness deviation and the share of layers within
    the two-sided bound, for one group of layers."""
    if not audits:
        return {}
    w = [a.n_params for a in audits]
    return {
        "d_orth_mean": _weighted([a.d_orth for a in audits], w),
        "d_abs_mean": _weighted([a.d_abs for a in audits], w),
        "norm_dev_max": float(max(a.norm_dev_max for a in audits)),
        "fraction_within_bounds": float(np.mean([a.within_bounds for a in audits])),
        "n_layers": float(len(audits)),
    }


def summarize(audits: Sequence[LayerAudit], split: Split | None = None) -> dict[str, float]:
    """Parameter-count-weighted means and worst layers over all layers (spec B6.1 aggregation), then the same
    figures for the layers Bort constrains (``*_constrained*``) and for the free classifier (``*_classifier``)."""
    if not audits:
        return {}
    split = split or Split.of(audits)
    d_orth = np.array([a.d_orth for a in audits])
    d_abs = np.array([a.d_abs for a in audits])
    kappa = np.array([a.kappa for a in audits])
    finite_k = kappa[np.isfinite(kappa)]
    out = {
        "n_layers": float(len(audits)),
        "n_params": float(sum(a.n_params for a in audits)),
        "d_orth_mean": _weighted(d_orth, [a.n_params for a in audits]),
        "d_orth_max": float(np.nanmax(d_orth)) if np.isfinite(d_orth).any() else math.nan,
        "d_abs_mean": _weighted(d_abs, [a.n_params for a in audits]),
        "d_abs_max": float(d_abs.max()),
        "kappa_median": float(np.median(finite_k)) if finite_k.size else math.nan,
        "kappa_max": float(finite_k.max()) if finite_k.size else math.nan,
        "n_rank_deficient": float(np.sum(~np.isfinite(kappa))),
        "fraction_within_bounds": float(np.mean([a.within_bounds for a in audits])),
        "row_norm_ratio_max": float(max(a.row_norm_ratio for a in audits)),
        "penalty_total": float(sum(a.penalty for a in audits)),
    }
    con = group_summary([audits[i] for i in split.constrained])
    if con:
        out.update({"d_orth_constrained_mean": con["d_orth_mean"], "d_abs_constrained_mean": con["d_abs_mean"],
                    "norm_dev_constrained_max": con["norm_dev_max"],
                    "fraction_within_bounds_constrained": con["fraction_within_bounds"],
                    "n_constrained_layers": con["n_layers"]})
    if split.classifier is not None:
        c = audits[split.classifier]
        out.update({"d_orth_classifier": c.d_orth, "d_abs_classifier": c.d_abs, "kappa_classifier": c.kappa})
    return out


@dataclass
class ModelAudit:
    """The audit of one model: its layers, their audits, where the layer kinds came from, what was skipped, and
    which layers Bort constrains."""

    layers: list[LayerWeight]
    audits: list[LayerAudit]
    roles_from: str
    skipped: list[dict[str, Any]]
    split: Split

    @property
    def summary(self) -> dict[str, float]:
        return summarize(self.audits, self.split)


def audit_model(model: Any, *, amplitude: float = 1.0, row_tolerance: float = 0.1, classifier_constrained: bool = False,
                progress: Any = None) -> ModelAudit:
    """Audit every Linear/Conv weight of a LoadedModel (torch or ONNX)."""
    from governance_plugins.bort.layers import extract_layers, model_roles

    roles, source = model_roles(model)
    layers, skipped = extract_layers(model.parameters(), roles or None)
    audits = audit_layers(layers, amplitude=amplitude, row_tolerance=row_tolerance, progress=progress)
    return ModelAudit(layers, audits, source if roles else "tensor shapes", skipped,
                      Split.of(audits, classifier_constrained))


def worst_layer(audits: Sequence[LayerAudit]) -> LayerAudit | None:
    finite = [a for a in audits if math.isfinite(a.d_orth)]
    return max(finite, key=lambda a: a.d_orth) if finite else None


def match_layers(ours: Sequence[LayerAudit], theirs: Sequence[LayerAudit]) -> tuple[list[tuple[LayerAudit, LayerAudit]], str]:
    """Pairs of the same layer in two model versions: by parameter name, or, when no name matches (a torch
    model against its ONNX export, say), by position if every layer's shape agrees in order."""
    by_name = {a.name: a for a in theirs}
    pairs = [(a, by_name[a.name]) for a in ours if a.name in by_name]
    if pairs:
        return pairs, "name"
    if len(ours) == len(theirs) and all(a.shape == b.shape for a, b in zip(ours, theirs)):
        return list(zip(ours, theirs)), "position"
    return [], "none"


def comparison_rows(ours: Sequence[LayerAudit], theirs: Sequence[LayerAudit], peer_label: str) -> tuple[list[dict[str, Any]], str]:
    pairs, how = match_layers(ours, theirs)
    rows = []
    for a, b in pairs:
        rows.append({
            "peer": peer_label, "layer": a.name, "peer_layer": b.name,
            "d_orth": a.d_orth, "d_orth_peer": b.d_orth, "d_orth_delta": a.d_orth - b.d_orth,
            "d_abs": a.d_abs, "d_abs_peer": b.d_abs, "d_abs_delta": a.d_abs - b.d_abs,
            "kappa": a.kappa, "kappa_peer": b.kappa,
        })
    return rows, how
