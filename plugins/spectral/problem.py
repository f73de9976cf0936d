"""Everything before the fit: the expansion coordinates, their box, the index set and the black-box function on
[-1, 1]^d (spec B3.1, B3.6, B4). Bad options are refused here, before any model evaluation is spent."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from governance import MethodContext
from governance.errors import MethodError

from governance_plugins.spectral import basis as B
from governance_plugins.spectral import fit as F
from governance_plugins.spectral import reduce as R
from governance_plugins.spectral.config import SpectralConfig

RunModel = Callable[[np.ndarray], np.ndarray]  # flattened inputs (n, D) -> transformed outputs (n, K)


def transform_outputs(y: np.ndarray, output: str) -> np.ndarray:
    """The explained scalar per output: raw outputs (logit), or softmax (sigmoid for one output) probabilities
    or their logarithm."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if output == "logit":
        return y
    if y.shape[1] == 1:
        return -np.logaddexp(0.0, -y) if output == "log_prob" else 1.0 / (1.0 + np.exp(-y))
    shifted = y - y.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_p if output == "log_prob" else np.exp(log_p)


@dataclass
class Problem:
    """The fit's inputs, prepared from the context (also used by the benchmark to time the fit alone)."""

    cfg: SpectralConfig
    X: np.ndarray  # data rows, flattened (n, D)
    U: np.ndarray  # data rows in expansion coordinates (n, d)
    box: np.ndarray  # (d, 2) box of the expansion coordinates
    reduction: R.Reduction
    alpha: np.ndarray  # (L, d) index set
    p: int
    q: int
    is_image: bool
    sample_shape: tuple[int, ...]
    run_model: RunModel
    nodes: int | None  # quadrature nodes per axis, or None for least squares
    z_train: np.ndarray | None  # least-squares points on [-1, 1]^d
    train_rows: np.ndarray | None = None  # dataset rows used as least-squares points (sampling='data')
    screen_evaluations: int = 0

    @property
    def d(self) -> int:
        return self.reduction.k

    def evaluate(self, z: np.ndarray) -> np.ndarray:
        """The network's (transformed) outputs at reference points z (M, d) of the box."""
        return self.run_model(self.reduction.decode(B.from_reference(z, self.box)))

    def with_model(self, run_model: RunModel) -> "Problem":
        """The same coordinates, box, index set and fit points for another network (the randomised control)."""
        return dataclasses.replace(self, run_model=run_model)


def fit(problem: Problem, same_points_as: F.SpectralFit | None = None) -> F.SpectralFit:
    """The coefficients: Gauss quadrature on the node grid, or ridge least squares on ``z_train``
    (``same_points_as``: an earlier fit of this problem whose factorised normal equations are reused)."""
    cfg = problem.cfg
    if problem.nodes is not None:
        return F.fit_quadrature(problem.evaluate, problem.alpha, cfg.basis, problem.nodes)
    return F.fit_least_squares(problem.evaluate, problem.alpha, cfg.basis, problem.z_train, ridge=cfg.ridge,
                               same_points_as=same_points_as)


def model_runner(ctx: MethodContext) -> RunModel:
    """The network seen as flattened inputs -> transformed outputs, batched by ``batch_size``."""
    cfg: SpectralConfig = ctx.config  # type: ignore[assignment]
    model, data = ctx.model, ctx.data
    shape, dtype = tuple(data.sample_shape), data.X.dtype

    def run_model(x_flat: np.ndarray) -> np.ndarray:
        x = np.asarray(x_flat).reshape(len(x_flat), *shape).astype(dtype, copy=False)
        return transform_outputs(model.predict(x, batch_size=cfg.batch_size), cfg.output)

    return run_model


def prepare(ctx: MethodContext) -> Problem:
    """Coordinates, box, index set and fit points. Raises MethodError when the data cannot set a box or the
    index set is too large for the configured limit."""
    cfg: SpectralConfig = ctx.config  # type: ignore[assignment]
    data = ctx.data
    if getattr(ctx.model, "task", "classification") == "regression" and cfg.output != "logit":
        raise MethodError(f"output='{cfg.output}' applies a sigmoid/softmax, which means nothing for a regressor",
                          hint="use output='logit' (the raw predicted value) for a regression model")
    sample_shape = tuple(data.sample_shape)
    X = np.asarray(data.X, dtype=np.float64).reshape(len(data), -1)
    if not np.all(np.isfinite(X)):
        raise MethodError("the dataset contains NaN or infinite values, so no input box can be set",
                          hint="impute or drop those rows before running the spectral surrogate")
    is_image = data.modality == "image" or len(sample_shape) >= 2
    run_model = model_runner(ctx)
    ctx.progress(0.02, "choosing coordinates")
    input_box = _input_box(cfg, X)
    reduction, screen_evaluations = _reduction(ctx, X, input_box, is_image, run_model)
    reduction, U, box = _expansion_box(cfg, reduction, X, input_box)
    d = reduction.k
    p = cfg.degree or (5 if d <= 6 else 3)
    q = min(cfg.interaction_order or (d if d <= 4 else 2), d)
    n_terms = B.index_set_size(d, p, q)
    if n_terms > cfg.max_terms:
        msg, hint = _too_many_terms(d, p, q, n_terms, cfg, reduction.kind)
        raise MethodError(msg, hint=hint)
    nodes = _quadrature_nodes(cfg, d, p)
    z_train, train_rows = (None, None) if nodes else _training_points(cfg, n_terms, d, U, box, ctx)
    return Problem(cfg=cfg, X=X, U=U, box=box, reduction=reduction, alpha=B.index_set(d, p, q), p=p, q=q,
                   is_image=is_image, sample_shape=sample_shape, run_model=run_model, nodes=nodes,
                   z_train=z_train, train_rows=train_rows, screen_evaluations=screen_evaluations)


def _input_box(cfg: SpectralConfig, X: np.ndarray) -> np.ndarray:
    D = X.shape[1]
    if cfg.box is not None:
        if len(cfg.box) != D:
            raise MethodError(f"`box` has {len(cfg.box)} entries but the model has {D} input features",
                              hint="give one [low, high] pair per input feature, in input order")
        return np.asarray(cfg.box, dtype=np.float64)
    return np.quantile(X, cfg.box_quantiles, axis=0).T


def _expansion_box(cfg: SpectralConfig, reduction: R.Reduction, X: np.ndarray,
                   input_box: np.ndarray) -> tuple[R.Reduction, np.ndarray, np.ndarray]:
    """The box of the expansion coordinates; coordinates with a zero-width box are held at their value."""
    U = reduction.encode(X)
    if reduction.kind in ("pca", "pool"):
        box = np.quantile(U, cfg.box_quantiles, axis=0).T
    else:
        box = input_box[reduction.details["indices"]]
    keep = box[:, 1] - box[:, 0] > 1e-12 * np.maximum(1.0, np.abs(box).max(axis=1))
    if not keep.all():
        reduction = _drop(reduction, keep, box.mean(axis=1))
        box, U = box[keep], U[:, keep]
    if reduction.k == 0:
        raise MethodError("no model input varies over the data box, so there is nothing to expand",
                          hint="pass data with varying inputs, or a wider `box`")
    return reduction, U, box


def _quadrature_nodes(cfg: SpectralConfig, d: int, p: int) -> int | None:
    """Nodes per axis when the coefficients come from quadrature, None for least squares."""
    nodes = cfg.quadrature_nodes or max(p + 1, 2 * p)
    use_q = cfg.coefficients == "quadrature" or (
        cfg.coefficients == "auto" and cfg.sampling == "basis" and nodes**d <= cfg.max_quadrature_points)
    if not use_q:
        return None
    if nodes**d > 50 * cfg.max_quadrature_points:
        raise MethodError(f"quadrature on {d} coordinates with {nodes} nodes each needs {nodes ** d:,} model "
                          "evaluations", hint="use coefficients='least_squares' (the default above "
                          f"{cfg.max_quadrature_points:,} grid points) or reduce the inputs")
    if nodes < p + 1:
        raise MethodError(f"quadrature_nodes={nodes} is below degree + 1 = {p + 1}",
                          hint=f"set quadrature_nodes >= {p + 1} (default max(p + 1, 2p) = {max(p + 1, 2 * p)})")
    return nodes


def _reduction(ctx: MethodContext, X: np.ndarray, input_box: np.ndarray, is_image: bool,
               run_model: RunModel) -> tuple[R.Reduction, int]:
    """The expansion coordinates, and the model evaluations a top-k screen spent choosing them."""
    cfg: SpectralConfig = ctx.config  # type: ignore[assignment]
    sample_shape = tuple(ctx.data.sample_shape)
    names = R.input_names(ctx.data.feature_names, sample_shape)
    kind = cfg.reduce if cfg.reduce != "auto" else ("pca" if is_image else "none")
    if kind in ("pca", "pool") and cfg.box is not None:
        raise MethodError(f"`box` bounds input features, but reduce='{kind}' expands over derived coordinates "
                          "whose box comes from data quantiles",
                          hint="drop `box` (use box_quantiles), or use reduce='none', 'features' or 'top_k'")
    if kind == "none":
        return R.select_varying(X, input_box, names), 0
    if kind == "pca":
        return R.pca(X, cfg.n_components, names), 0
    if kind == "pool":
        return R.pool(X, sample_shape, cfg.pool_size), 0
    if kind == "features":
        return R.select_varying(X, input_box, names, kind="features",
                                candidates=np.unique(_feature_indices(cfg.features, names))), 0
    return _top_k(cfg, X, input_box, names, run_model, ctx.rng)


def _feature_indices(features: list[str | int] | None, names: list[str]) -> list[int]:
    if not features:
        raise MethodError("reduce='features' needs the list of inputs to expand over",
                          hint="set features: [name or index, ...]")
    idx = []
    for f in features:
        if isinstance(f, int) and 0 <= f < len(names):
            idx.append(f)
        elif isinstance(f, str) and f in names:
            idx.append(names.index(f))
        else:
            raise MethodError(f"feature {f!r} is not an input of this model",
                              hint=f"use an index in 0..{len(names) - 1} or one of: {', '.join(names[:10])}"
                              + (" ..." if len(names) > 10 else ""))
    return idx


def _top_k(cfg: SpectralConfig, X: np.ndarray, input_box: np.ndarray, names: list[str], run_model: RunModel,
           rng: np.random.Generator) -> tuple[R.Reduction, int]:
    """One-at-a-time sweep screen over the varying inputs; keeps the ``top_k`` with the largest effect."""
    varying = np.flatnonzero(input_box[:, 1] - input_box[:, 0] > 0)
    scores, n_eval = R.screen(run_model, X, input_box, rng)
    ranked = varying[np.argsort(-scores[varying], kind="stable")]
    red = R.select_varying(X, input_box, names, kind="top_k", candidates=np.sort(ranked[: cfg.top_k]))
    red.note = (f"top {min(cfg.top_k, len(ranked))} of {len(varying)} inputs by a one-at-a-time sweep screen "
                f"({n_eval:,} evaluations); the others are held at their data mean")
    red.details["screen_scores"] = scores.tolist()
    return red, n_eval


def _training_points(cfg: SpectralConfig, n_terms: int, d: int, U: np.ndarray, box: np.ndarray,
                     ctx: MethodContext) -> tuple[np.ndarray, np.ndarray | None]:
    """Least-squares points on [-1, 1]^d, and the dataset rows they came from (sampling='data')."""
    M = cfg.n_samples or int(math.ceil(cfg.samples_per_term * n_terms))
    if M < 2 * n_terms:
        raise MethodError(f"n_samples={M} is below 2 x {n_terms} terms, too few for a stable least-squares fit",
                          hint=f"set n_samples >= {2 * n_terms} (default {10 * n_terms}), or lower degree")
    if cfg.sampling == "basis":
        return F.sample_reference(M, d, cfg.basis, ctx.rng), None
    if len(U) < 2 * n_terms:
        raise MethodError(f"sampling='data' has {len(U)} rows but the {n_terms}-term index set needs at least "
                          f"{2 * n_terms}", hint="use sampling='basis', lower degree or interaction_order, or "
                          "pass more data")
    take = ctx.rng.choice(len(U), size=min(M, len(U)), replace=False)
    return np.clip(B.to_reference(U[take], box), -1.0, 1.0), take


def _drop(red: R.Reduction, keep: np.ndarray, centre: np.ndarray) -> R.Reduction:
    """Hold the coordinates with a zero-width box at their value and expand over the rest."""
    x0 = red.x0 + centre[~keep] @ red.decoder[~keep]
    details = dict(red.details)
    if "indices" in details:
        details["indices"] = [i for i, k in zip(details["indices"], keep) if k]
    held = int((~keep).sum())
    note = "; ".join(n for n in (red.note, f"{held} coordinate(s) constant on the box held fixed") if n)
    return R.Reduction(kind=red.kind, names=[n for n, k in zip(red.names, keep) if k], x0=x0,
                       decoder=red.decoder[keep], encoder=red.encoder[keep], e0=red.e0, note=note, details=details,
                       input_names=red.input_names)


def _too_many_terms(d: int, p: int, q: int, n_terms: int, cfg: SpectralConfig, kind: str) -> tuple[str, str]:
    fits = B.max_dimension(p, q, cfg.max_terms)
    msg = (f"the {cfg.basis} index set for {d} input coordinates at degree {p} with interaction order {q} has "
           f"{n_terms:,} terms, above the limit max_terms={cfg.max_terms:,} (least squares needs about "
           f"{cfg.samples_per_term:g} model evaluations per term and a terms x terms Gram matrix of "
           f"{8 * n_terms ** 2 / 2**20:,.0f} MiB); at this degree and interaction order at most {fits} coordinates fit")
    hint = (f"reduce the inputs to at most {fits} coordinates: reduce='pca' with n_components<={fits}, "
            f"reduce='top_k' with top_k<={fits}, reduce='features' with a list"
            + (", or reduce='pool' for images" if kind != "pool" else ", or a larger pool_size")
            + "; or lower degree/interaction_order; or raise max_terms (memory grows with its square)")
    return msg, hint
