"""Which coordinates the expansion runs over, and how they map to and from the model's inputs (spec B4).

A polynomial index set grows like d^q, so the expansion cannot run over hundreds of raw inputs. Every
option here is an affine map between the model's flattened input x (length D) and k expansion
coordinates u:

    decode:  x = x0 + u @ D        encode:  u = (x - e0) @ E.T

* ``none``:     every input that varies on the box (constant inputs are held at their value),
* ``features``: a user-chosen subset; the other inputs are held at their data mean,
* ``top_k``:    the k inputs with the largest output variance in a cheap one-at-a-time sweep screen,
* ``pca``:      k principal-component scores of the data (the spec's extension for images),
* ``pool``:     block means of an image (k = blocks): the surrogate reads coarse image regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from governance.errors import MethodError


@dataclass
class Reduction:
    kind: str
    names: list[str]  # one per expansion coordinate
    x0: np.ndarray  # (D,)
    decoder: np.ndarray  # (k, D)
    encoder: np.ndarray  # (k, D)
    e0: np.ndarray  # (D,)
    note: str = ""
    details: dict = field(default_factory=dict)
    input_names: list[str] = field(default_factory=list)  # names of the model's flattened inputs (D)

    @property
    def k(self) -> int:
        return len(self.names)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64).reshape(len(x), -1) - self.e0) @ self.encoder.T

    def decode(self, u: np.ndarray) -> np.ndarray:
        return self.x0 + np.asarray(u, dtype=np.float64) @ self.decoder

    def input_weights(self) -> np.ndarray:
        """(k, D) non-negative weights spreading one coordinate's importance over the raw inputs
        (squared decoder rows normalised to sum 1): used to draw per-pixel energy maps."""
        w = self.decoder**2
        s = w.sum(axis=1, keepdims=True)
        return w / np.where(s > 0, s, 1.0)


def input_names(feature_names: Sequence[str] | None, sample_shape: tuple[int, ...]) -> list[str]:
    """Names of the flattened inputs: the dataset's feature names, or pixel positions for images."""
    D = int(np.prod(sample_shape))
    if feature_names is not None and len(feature_names) == D:
        return [str(n) for n in feature_names]
    if len(sample_shape) >= 2:
        shape = sample_shape[1:] if sample_shape[0] == 1 and len(sample_shape) == 3 else sample_shape
        return ["px[" + ",".join(map(str, idx)) + "]" for idx in np.ndindex(*shape)]
    return [f"x{i}" for i in range(D)]


def _selection(indices: np.ndarray, D: int, fill: np.ndarray, names: list[str], kind: str, note: str) -> Reduction:
    sel = np.zeros((len(indices), D))
    sel[np.arange(len(indices)), indices] = 1.0
    x0 = fill.astype(np.float64).copy()
    x0[indices] = 0.0
    return Reduction(kind=kind, names=[names[i] for i in indices], x0=x0, decoder=sel, encoder=sel,
                     e0=np.zeros(D), note=note, details={"indices": [int(i) for i in indices]},
                     input_names=list(names))


def select_varying(X: np.ndarray, box: np.ndarray, names: list[str], kind: str = "none",
                   candidates: np.ndarray | None = None) -> Reduction:
    """All (candidate) inputs whose box has positive width; the others are held at the box centre."""
    D = X.shape[1]
    centre = box.mean(axis=1)
    pool = np.arange(D) if candidates is None else np.asarray(candidates)
    varying = pool[(box[pool, 1] - box[pool, 0]) > 0]
    held = D - len(varying)
    fill = X.mean(axis=0) if candidates is not None else centre
    fill = np.where(box[:, 1] - box[:, 0] > 0, fill, centre)
    note = f"{held} input(s) held fixed (constant on the box or not selected)" if held else ""
    return _selection(varying, D, fill, names, kind, note)


def pca(X: np.ndarray, k: int, names: Sequence[str] | None = None) -> Reduction:
    """k principal components of the data; the other directions are held at the data mean. The loadings are
    unit vectors, so a score is in the inputs' own units: pc_j = sum_i loading_ji (x_i - mean_i)."""
    D = X.shape[1]
    k = min(k, D, len(X))
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    explained = (s**2) / max(float((s**2).sum()), 1e-300)
    comps = vt[:k] * np.where(_largest_positive(vt[:k]), 1.0, -1.0)[:, None]  # sign: largest loading positive
    return Reduction(kind="pca", names=[f"pc{i + 1}" for i in range(k)], x0=mean, decoder=comps, encoder=comps,
                     e0=mean, note=f"{k} principal components explain {explained[:k].sum():.1%} of the data variance",
                     details={"explained_variance_ratio": explained[:k].tolist()},
                     input_names=list(names) if names is not None else [f"x{i}" for i in range(D)])


def _largest_positive(rows: np.ndarray) -> np.ndarray:
    return rows[np.arange(len(rows)), np.abs(rows).argmax(axis=1)] >= 0 if len(rows) else np.zeros(0, dtype=bool)


def pool(X: np.ndarray, sample_shape: tuple[int, ...], size: int) -> Reduction:
    """Block means of ``size`` x ``size`` image blocks (per channel). Decoding shifts every pixel of a block
    by the same amount from the mean image, so a coordinate is "brightness of that region"."""
    if len(sample_shape) < 2:
        raise MethodError("reduce='pool' needs image inputs (channels, height, width) or (height, width); "
                          f"this model takes samples of shape {sample_shape}",
                          hint="use reduce='pca' or reduce='top_k' for tabular inputs")
    if len(sample_shape) > 3:
        raise MethodError(f"reduce='pool' handles (channels, height, width) images, not samples of shape {sample_shape}",
                          hint="use reduce='pca'")
    C, H, W = (1, *sample_shape) if len(sample_shape) == 2 else sample_shape
    D = int(np.prod(sample_shape))
    rows = []
    names = []
    grid = np.arange(D).reshape(C, H, W)
    for c in range(C):
        for r in range(0, H, size):
            for q in range(0, W, size):
                block = grid[c, r : r + size, q : q + size].ravel()
                row = np.zeros(D)
                row[block] = 1.0
                rows.append(row)
                span = f"{r}:{min(r + size, H)},{q}:{min(q + size, W)}"
                names.append(f"blk[{span}]" if C == 1 else f"blk[{c},{span}]")
    indicator = np.array(rows)
    encoder = indicator / indicator.sum(axis=1, keepdims=True)
    mean = X.mean(axis=0)
    x0 = mean - (mean @ encoder.T) @ indicator
    return Reduction(kind="pool", names=names, x0=x0, decoder=indicator, encoder=encoder, e0=np.zeros(D),
                     note=f"{len(names)} blocks of {size}x{size} pixels; inside a block every pixel moves together",
                     input_names=input_names(None, sample_shape))


def screen(evaluate_x: Callable[[np.ndarray], np.ndarray], X: np.ndarray, box: np.ndarray, rng: np.random.Generator,
           n_base: int = 16, n_levels: int = 5) -> tuple[np.ndarray, int]:
    """One-at-a-time sweep screen: from ``n_base`` data rows, move each input alone over ``n_levels``
    Chebyshev nodes of its box range; score = mean over rows and outputs of the output variance along the
    sweep. Costs n_base * D * n_levels evaluations (one batch). Returns (scores (D,), evaluations)."""
    D = X.shape[1]
    base = X[rng.choice(len(X), size=min(n_base, len(X)), replace=False)].astype(np.float64)
    levels = np.cos(np.pi * (np.arange(n_levels) + 0.5) / n_levels)
    values = box.mean(axis=1)[None, :] + 0.5 * (box[:, 1] - box[:, 0])[None, :] * levels[:, None]  # (n_levels, D)
    scores = np.zeros(D)
    step = max(1, (32 * 2**20) // (8 * len(base) * n_levels * D))  # features per batch (~32 MB of inputs)
    for start in range(0, D, step):
        idx = np.arange(start, min(start + step, D))
        batch = np.repeat(base[:, None, None, :], len(idx), axis=1).repeat(n_levels, axis=2)  # (B, f, L, D)
        batch[:, np.arange(len(idx)), :, idx] = values[:, idx].T[:, None, :]
        y = np.asarray(evaluate_x(batch.reshape(-1, D)), dtype=np.float64).reshape(len(base), len(idx), n_levels, -1)
        scores[idx] = y.var(axis=2).mean(axis=(0, 2))
    return scores, int(len(base) * D * n_levels)
