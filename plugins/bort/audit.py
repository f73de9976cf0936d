"""How far each layer's weights are from bounded-orthogonal (spec B6.1).

Per layer with ``W`` (``m x n``, rows = output units), ``k = min(m, n)``, ``G`` the ``k x k`` Gram matrix
(``W W^T`` when wide, ``W^T W`` when tall), ``s = tr(G)/k`` and ``sigma^2`` the eigenvalues of ``G``:

* ``D_orth = ||G/s - I||_F / sqrt(k)`` (scale-free: 0 for a scaled partial isometry),
* ``D_abs = ||G - cI||_F / (c sqrt(k))`` (0 exactly at Bort's target amplitude ``c``),
* ``kappa = sigma_max / sigma_min``, the row norms and ``R_c = 1/4 ||G - cI||_F^2``.

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
    within_bounds: bool
    sigma2: np.ndarray  # eigenvalues of G, descending

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sigma2")
        d["shape"] = "×".join(map(str, self.shape))
        d["form"] = "wide" if self.m <= self.n else "tall"
        return d


def gram_eigenvalues(W: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, >= 0) of the ``k x k`` Gram matrix of ``W`` in float64."""
    W = np.asarray(W, dtype=np.float64)
    m, n = W.shape
    G = W @ W.T if m <= n else W.T @ W
    lam = np.linalg.eigvalsh(G)[::-1]
    return np.clip(lam, 0.0, None)


def audit_matrix(W: np.ndarray, *, name: str = "W", kind: str = "linear", shape: Sequence[int] | None = None,
                 amplitude: float = 1.0, row_tolerance: float = 0.1) -> LayerAudit:
    """Audit one ``m x n`` weight matrix (see the module docstring). ``row_tolerance``: a row is within the
    bound when ``‖w_i‖² <= (1 + row_tolerance) c`` (an uncalibrated default, not from the paper)."""
    if amplitude <= 0:
        raise ValueError(f"amplitude must be positive, got {amplitude}")
    W = np.asarray(W, dtype=np.float64)
    m, n = W.shape
    k = min(m, n)
    lam = gram_eigenvalues(W)
    c = float(amplitude)
    s = float(lam.mean())
    d_orth = float(np.sqrt(np.mean((lam / s - 1.0) ** 2))) if s > 0 else math.nan
    d_abs = float(np.sqrt(np.sum((lam - c) ** 2)) / (c * math.sqrt(k)))
    lmax, lmin = float(lam[0]), float(lam[-1])
    kappa = math.sqrt(lmax / lmin) if lmin > RANK_TOL * lmax and lmax > 0 else math.inf
    row_sq = np.einsum("ij,ij->i", W, W)
    rmax, rmin = float(np.sqrt(row_sq.max())), float(np.sqrt(row_sq.min()))
    return LayerAudit(
        name=name, kind=kind, shape=tuple(shape) if shape is not None else (m, n), m=m, n=n, n_params=m * n,
        d_orth=d_orth, d_abs=d_abs, kappa=kappa, penalty=float(0.25 * np.sum((lam - c) ** 2)), mean_sigma2=s,
        row_norm_max=rmax, row_norm_min=rmin, row_norm_ratio=rmax / rmin if rmin > 0 else math.inf,
        row_dev_max=float(np.max(np.abs(row_sq - c)) / c),
        within_bounds=bool(row_sq.max() <= (1.0 + row_tolerance) * c), sigma2=lam,
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


def init_reference(layers: Sequence[LayerWeight], *, seed: int = 0, amplitude: float = 1.0) -> list[LayerAudit]:
    """The same audit on fresh random weights of the same shapes, drawn like torch's default initialisation
    of Linear/Conv layers (uniform with bound ``1/sqrt(fan_in)``): context for what "untrained" looks like.
    ``D_orth`` and ``kappa`` do not depend on the bound; they depend on the shape (and, a little, the seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in layers:
        m, n = layer.matrix.shape
        W = rng.uniform(-1.0, 1.0, size=(m, n)) / math.sqrt(n)
        out.append(audit_matrix(W, name=layer.name, kind=layer.kind, shape=layer.shape, amplitude=amplitude))
    return out


def summarize(audits: Sequence[LayerAudit]) -> dict[str, float]:
    """Parameter-count-weighted means and worst layers (spec B6.1 aggregation). ``d_orth_hidden_mean`` leaves
    out the last layer (usually the classifier, which Bort training leaves unconstrained by default)."""
    if not audits:
        return {}
    w = np.array([a.n_params for a in audits], dtype=np.float64)
    d_orth = np.array([a.d_orth for a in audits])
    d_abs = np.array([a.d_abs for a in audits])
    kappa = np.array([a.kappa for a in audits])
    finite_k = kappa[np.isfinite(kappa)]
    ok = np.isfinite(d_orth)
    return {
        "n_layers": float(len(audits)),
        "n_params": float(w.sum()),
        "d_orth_mean": float(np.average(d_orth[ok], weights=w[ok])) if ok.any() else math.nan,
        "d_orth_max": float(np.nanmax(d_orth)) if ok.any() else math.nan,
        "d_abs_mean": float(np.average(d_abs, weights=w)),
        "d_abs_max": float(d_abs.max()),
        "kappa_median": float(np.median(finite_k)) if finite_k.size else math.nan,
        "kappa_max": float(finite_k.max()) if finite_k.size else math.nan,
        "n_rank_deficient": float(np.sum(~np.isfinite(kappa))),
        "fraction_within_bounds": float(np.mean([a.within_bounds for a in audits])),
        "row_norm_ratio_max": float(max(a.row_norm_ratio for a in audits)),
        "penalty_total": float(sum(a.penalty for a in audits)),
        **({"d_orth_hidden_mean": _weighted(audits[:-1])} if len(audits) > 1 else {}),
    }


def _weighted(audits: Sequence[LayerAudit]) -> float:
    ok = [a for a in audits if math.isfinite(a.d_orth)]
    if not ok:
        return math.nan
    return float(np.average([a.d_orth for a in ok], weights=[a.n_params for a in ok]))


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
