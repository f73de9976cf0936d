"""Input variables (tabular features or image patches), the masked samples x_T, and the output v.

A variable is a group of flat input coordinates. Coordinates that belong to no selected variable are the
background and keep their values in every masked sample (spec §2.1–§2.2). Masked samples are built from a
per-coordinate label (variable index, or n for background) by one fancy-indexing step per chunk:
``keep = bits_with_background[:, label]``, ``x_T = where(keep, x, baseline)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from governance.errors import MethodError
from governance_plugins.interaction.transforms import subset_bits


@dataclass
class Candidates:
    """Every variable the screen may choose from: names and flat coordinate groups."""

    kind: str  # "feature" | "patch"
    names: list[str]
    groups: list[np.ndarray]
    grid: tuple[int, int] | None = None

    def index(self, name: str) -> int:
        return self.names.index(name)


def image_layout(sample_shape: Sequence[int]) -> tuple[int, int, str]:
    """(H, W, layout) of an image sample: (C,H,W) channels-first, (H,W,C) channels-last, or (H,W)."""
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) == 2:
        return shape[0], shape[1], "hw"
    if len(shape) == 3:
        if shape[0] <= 4 and shape[2] > 4:
            return shape[1], shape[2], "chw"
        if shape[2] <= 4 and shape[0] > 4:
            return shape[0], shape[1], "hwc"
        return shape[1], shape[2], "chw"
    raise MethodError(
        f"image samples of shape {shape} are not supported by the patch grid",
        hint="images must be (C, H, W), (H, W, C) or (H, W); pass modality 'tabular' data to treat every "
        "coordinate as a feature",
    )


def patch_candidates(sample_shape: Sequence[int], grid: tuple[int, int]) -> Candidates:
    """A rows × cols grid of rectangular patches (all channels together), named ``r{row}c{col}``."""
    h, w, layout = image_layout(sample_shape)
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1 or rows > h or cols > w:
        raise MethodError(f"grid {rows}x{cols} does not fit an image of {h}x{w} pixels",
                          hint=f"choose a grid between 1x1 and {h}x{w}")
    r_edges = np.linspace(0, h, rows + 1).round().astype(int)
    c_edges = np.linspace(0, w, cols + 1).round().astype(int)
    coords = np.arange(int(np.prod(sample_shape))).reshape(tuple(int(s) for s in sample_shape))
    names, groups = [], []
    for r in range(rows):
        for c in range(cols):
            rs, cs = slice(r_edges[r], r_edges[r + 1]), slice(c_edges[c], c_edges[c + 1])
            if layout == "chw":
                block = coords[:, rs, cs]
            elif layout == "hwc":
                block = coords[rs, cs, :]
            else:
                block = coords[rs, cs]
            names.append(f"r{r}c{c}")
            groups.append(np.sort(block.ravel()))
    return Candidates("patch", names, groups, grid=(rows, cols))


def feature_candidates(n_coords: int, names: Sequence[str] | None) -> Candidates:
    names = list(names) if names is not None and len(names) == n_coords else [f"x{i}" for i in range(n_coords)]
    return Candidates("feature", names, [np.array([i]) for i in range(n_coords)])


@dataclass
class VariableSet:
    """The n variables of one sample: names, flat coordinate groups and how they were chosen."""

    names: list[str]
    groups: list[np.ndarray]
    candidate_index: list[int]
    rule: str
    scores: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.names)

    def labels(self, n_coords: int) -> np.ndarray:
        """Per flat coordinate: the variable index, or n for background."""
        lab = np.full(n_coords, self.n, dtype=np.intp)
        for j, g in enumerate(self.groups):
            lab[g] = j
        return lab


def build_masked(x: np.ndarray, baseline: np.ndarray, labels: np.ndarray, n: int,
                 subsets: np.ndarray) -> np.ndarray:
    """x_T for each subset index in ``subsets``: (len(subsets), *x.shape), in x's dtype, C-contiguous.

    ``take`` keeps the mask (and so the result) in C order; plain fancy indexing ``bits[:, labels]`` returns a
    Fortran-ordered array, which ONNX Runtime then copies batch by batch (10 % slower on the digits CNN)."""
    bits = np.concatenate([subset_bits(n, subsets), np.ones((len(subsets), 1), dtype=bool)], axis=1)
    keep = np.take(bits, labels, axis=1)
    flat = np.where(keep, x.reshape(1, -1), baseline.reshape(1, -1)).astype(x.dtype, copy=False)
    return flat.reshape((len(subsets), *x.shape))


# ------------------------------------------------------------------------------------------ output v
OUTPUT_KINDS = ("log_odds", "raw")


def detect_probabilities(outputs: np.ndarray) -> bool:
    """True when every row looks like a probability vector (non-negative, sums to 1)."""
    z = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    return z.shape[1] > 1 and bool(np.all(z >= 0) and np.allclose(z.sum(axis=1), 1.0, atol=1e-3))


def output_value(outputs: np.ndarray, target: int, *, kind: str = "log_odds", probabilities: bool = False) -> np.ndarray:
    """v for a batch of raw model outputs (spec §2.3), float64.

    log_odds: log p_y/(1-p_y) computed exactly as z_y - logsumexp_{j≠y} z_j from logits (no saturation);
    a single output is a binary logit (target 1: +z, target 0: -z); probability vectors use
    log p_y - log(1-p_y) clipped at 1e-12. raw: the target's raw output (the paper's MNIST-3 choice)."""
    z = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if kind == "raw":
        return z[:, 0] if z.shape[1] == 1 else z[:, target]
    if z.shape[1] == 1:
        return z[:, 0] if target == 1 else -z[:, 0]
    if probabilities:
        p = np.clip(z[:, target], 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    others = np.delete(z, target, axis=1)
    top = others.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
    return z[:, target] - lse


def predicted_class(outputs: np.ndarray) -> np.ndarray:
    z = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)


def evaluate_masked(predicts: Sequence[Callable[[np.ndarray], np.ndarray]], x: np.ndarray, baseline: np.ndarray,
                    labels: np.ndarray, n: int, values: Sequence[Callable[[np.ndarray], np.ndarray]],
                    chunk_rows: int) -> np.ndarray:
    """v(x_T) of every model for all 2ⁿ subsets T, returned in bitmask order: (m, 2ⁿ) float64. The masked
    inputs are built once per chunk of at most ``chunk_rows`` subsets and fed to every model (forward only)."""
    total = 1 << n
    out = np.empty((len(predicts), total), dtype=np.float64)
    step = max(1, min(int(chunk_rows), total))
    for start in range(0, total, step):
        idx = np.arange(start, min(start + step, total))
        batch = build_masked(x, baseline, labels, n, idx)
        for i, (predict, value) in enumerate(zip(predicts, values)):
            out[i, idx] = value(predict(batch))
    return out


def occlusion_scores(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, baseline: np.ndarray,
                     cands: Candidates, value_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     max_bytes: int = 256 * 2**20) -> np.ndarray:
    """|v(x) - v(x with one candidate at its baseline)| for every sample and candidate: (len(X), C).
    ``value_of(outputs, sample_rows)`` maps raw outputs to v per row. Each sample costs C+1 forwards; samples
    are batched together up to ``max_bytes`` of inputs."""
    n_samples, n_c = len(X), len(cands.groups)
    flat = X.reshape(n_samples, -1)
    b = baseline.reshape(-1)
    per_sample = (n_c + 1) * flat.shape[1] * X.dtype.itemsize
    step = max(1, int(max_bytes // max(per_sample, 1)))
    scores = np.empty((n_samples, n_c))
    for s0 in range(0, n_samples, step):
        part = flat[s0 : s0 + step]
        batch = np.repeat(part[:, None, :], n_c + 1, axis=1)  # (B, C+1, D); slot 0 = unmasked
        for c, g in enumerate(cands.groups):
            batch[:, c + 1, g] = b[g]
        outs = predict(batch.reshape((len(part) * (n_c + 1), *X.shape[1:])))
        rows = np.repeat(np.arange(s0, s0 + len(part)), n_c + 1)
        vals = value_of(outs, rows).reshape(len(part), n_c + 1)
        scores[s0 : s0 + len(part)] = np.abs(vals[:, :1] - vals[:, 1:])
    return scores


def resolve_named(names: Sequence[str], cands: Candidates, what: str) -> list[int]:
    missing = [nm for nm in names if nm not in cands.names]
    if missing:
        shown = ", ".join(cands.names[:40]) + (" ..." if len(cands.names) > 40 else "")
        raise MethodError(f"unknown {what}: {', '.join(map(str, missing))}",
                          hint=f"choose among: {shown}")
    if len(set(names)) != len(names):
        raise MethodError(f"the {what} list repeats a name: {list(names)}", hint="name each variable once")
    return [cands.index(nm) for nm in names]

