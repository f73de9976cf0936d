"""Spectral surrogate (SpecXAI-inspired reconstruction): a global Chebyshev expansion of the network.

The paper (Druc et al., arXiv 2302.09949) could only be read as far as its abstract; this implements the
reconstruction of methods-specxai-neflag.md Part B: the coefficients of the network's input->output map
in a tensor-product Chebyshev basis on a box, obtained from forward passes only, turned into (i) a
spectrum (energy per total degree), (ii) Sobol-type shares per input, and (iii) a linear-in-the-basis
formula whose fidelity to the network is measured on held-out points.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, field_validator

from governance.errors import MethodError
from governance import Explanation, Method, MethodConfig, MethodContext, Requirement

from governance_plugins.spectral import basis as B
from governance_plugins.spectral import fit as F
from governance_plugins.spectral import formula as FM
from governance_plugins.spectral import reduce as R

RECONSTRUCTION_NOTE = (
    "Reconstruction, not a reproduction: only the abstract of SpecXAI (arXiv 2302.09949) was available. "
    "'Spectral characterisation' is read as the coefficients of a global orthogonal-polynomial (Chebyshev) "
    "expansion of the network on a box, and the 'linear, interpretable, symbolic representation' as the "
    "truncated expansion, linear in named basis functions (methods-specxai-neflag.md, Part B).")


REDUCTION_LABELS = {
    "none": "every input that varies on the box",
    "features": "the configured subset of inputs",
    "top_k": "the inputs with the largest effect in a sweep screen",
    "pca": "principal-component scores of the data",
    "pool": "mean brightness of image blocks",
}


class SpectralConfig(MethodConfig):
    """Options of the spectral surrogate. Defaults follow spec B3.6."""

    basis: Literal["chebyshev", "legendre"] = "chebyshev"
    degree: int | None = Field(None, ge=1, le=16, description="total degree p; default 3, or 5 when d <= 6")
    interaction_order: int | None = Field(None, ge=1, description="max interacting inputs q; default 2, or d when d <= 4")
    coefficients: Literal["auto", "quadrature", "least_squares"] = Field(
        "auto", description="auto: Gauss quadrature when nodes^d <= max_quadrature_points, else least squares")
    quadrature_nodes: int | None = Field(None, ge=1, description="nodes per axis; default max(p + 1, 2p)")
    max_quadrature_points: int = Field(100_000, ge=1)
    samples_per_term: float = Field(10.0, ge=2.0, description="least-squares samples M = this x |index set|")
    n_samples: int | None = Field(None, ge=1, description="explicit M (>= 2 |index set|); overrides samples_per_term")
    sampling: Literal["basis", "data"] = Field(
        "basis", description="basis: the basis's own measure (arcsine for Chebyshev); data: dataset rows")
    ridge: float | None = Field(None, ge=0.0, description="ridge lambda; default 1e-8 trace(Phi'Phi)/|index set|")
    sparsify: Literal["off", "energy", "omp"] = "off"
    energy_fraction: float = Field(0.99, gt=0.0, le=1.0)
    omp_max_terms: int = Field(100, ge=1)
    output: Literal["logit", "prob", "log_prob"] = Field(
        "logit", description="logit: the model's raw outputs; prob/log_prob: softmax (sigmoid for one output)")
    classes: list[int] | None = Field(None, description="outputs shown in formulas and tables (all are fitted)")
    box: list[tuple[float, float]] | None = Field(None, description="[low, high] per input feature")
    box_quantiles: tuple[float, float] = (0.005, 0.995)
    reduce: Literal["auto", "none", "features", "top_k", "pca", "pool"] = Field(
        "auto", description="input coordinates of the expansion; auto: pca for images, none otherwise")
    features: list[str | int] | None = Field(None, description="inputs for reduce='features' (names or indices)")
    top_k: int = Field(10, ge=1, description="inputs kept by reduce='top_k'")
    n_components: int = Field(16, ge=1, description="principal components for reduce='pca'")
    pool_size: int = Field(2, ge=1, description="block size for reduce='pool'")
    max_terms: int = Field(4000, ge=1, description="largest index set accepted (memory ~ 8 x terms^2 bytes)")
    n_test: int = Field(2000, ge=10, description="fresh held-out points from the basis measure")
    max_data_points: int = Field(2000, ge=1, description="dataset rows used for data fidelity")
    top_terms: int = Field(12, ge=1)
    batch_size: int = Field(4096, ge=1)

    @field_validator("box_quantiles")
    @classmethod
    def _quantiles(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError("box_quantiles must satisfy 0 <= low < high <= 1")
        return v

    @field_validator("box")
    @classmethod
    def _box(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and any(not (math.isfinite(a) and math.isfinite(b) and a <= b) for a, b in v):
            raise ValueError("each box entry must be finite [low, high] with low <= high")
        return v


def _transform(y: np.ndarray, output: str) -> np.ndarray:
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
    run_model: Callable[[np.ndarray], np.ndarray]  # flattened inputs -> transformed outputs (n, K)
    evaluate: Callable[[np.ndarray], np.ndarray]  # reference points z (M, d) -> outputs (M, K)
    nodes: int | None  # quadrature nodes per axis, or None for least squares
    z_train: np.ndarray | None  # least-squares points on [-1, 1]^d
    train_rows: np.ndarray | None = None  # dataset rows used as least-squares points (sampling='data')
    screen_evaluations: int = 0

    @property
    def d(self) -> int:
        return self.reduction.k


class SpectralSurrogate(Method):
    name = "spectral"
    version = "1.0.0"
    title = "Spectral surrogate (SpecXAI-inspired reconstruction)"
    description = (
        "Expands the whole network, seen only through forward passes, in a tensor-product Chebyshev basis of its "
        "inputs on a data box. The coefficients give the network's spectrum (how much of its behaviour is "
        "linear, quadratic, cubic), each input's share of the output variance, and a formula that is linear in "
        "named basis functions, with its fidelity to the network measured on held-out inputs.")
    reference = ("Druc, Wooldridge, Krishnamurthy, Sarkar, Balu: SpecXAI - Spectral interpretability of Deep "
                 "Learning Models, arXiv:2302.09949 (2023); implemented as the reconstruction of "
                 "methods-specxai-neflag.md Part B")
    requires = frozenset({Requirement.FORWARD})
    Config = SpectralConfig
    report_template = "governance_plugins.spectral:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        why = super().can_explain(model=model, data=data)
        if why:
            return why
        if len(data) < 2:
            return "needs at least 2 data rows to set the input box"
        return None

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, ctx: MethodContext) -> "Problem":
        """Everything before the fit: coordinates, box, index set, and the black-box function on [-1, 1]^d.
        Raises MethodError when the index set is too large for the configured limit."""
        cfg: SpectralConfig = ctx.config  # type: ignore[assignment]
        model, data = ctx.model, ctx.data
        if getattr(model, "task", "classification") == "regression" and cfg.output != "logit":
            raise MethodError(f"output='{cfg.output}' applies a sigmoid/softmax, which means nothing for a regressor",
                              hint="use output='logit' (the raw predicted value) for a regression model")
        sample_shape = tuple(data.sample_shape)
        X = np.asarray(data.X, dtype=np.float64).reshape(len(data), -1)
        if not np.all(np.isfinite(X)):
            raise MethodError("the dataset contains NaN or infinite values, so no input box can be set",
                              hint="impute or drop those rows before running the spectral surrogate")
        names = R.input_names(data.feature_names, sample_shape)
        is_image = data.modality == "image" or len(sample_shape) >= 2
        evaluations = {"screen": 0}

        def run_model(x_flat: np.ndarray) -> np.ndarray:
            x = np.asarray(x_flat).reshape(len(x_flat), *sample_shape).astype(data.X.dtype, copy=False)
            return _transform(model.predict(x, batch_size=cfg.batch_size), cfg.output)

        ctx.progress(0.02, "choosing coordinates")
        input_box = cls._input_box(cfg, X)
        reduction = cls._reduction(cfg, X, input_box, names, sample_shape, is_image, run_model, ctx, evaluations)
        U = reduction.encode(X)
        if reduction.kind in ("pca", "pool"):
            box = np.quantile(U, cfg.box_quantiles, axis=0).T
        else:
            box = input_box[reduction.details["indices"]]
        keep = box[:, 1] - box[:, 0] > 1e-12 * np.maximum(1.0, np.abs(box).max(axis=1))
        if not keep.all():
            reduction = _drop(reduction, keep, box.mean(axis=1))
            box, U = box[keep], U[:, keep]
        d = reduction.k
        if d == 0:
            raise MethodError("no model input varies over the data box, so there is nothing to expand",
                              hint="pass data with varying inputs, or a wider `box`")

        p = cfg.degree or (5 if d <= 6 else 3)
        q = min(cfg.interaction_order or (d if d <= 4 else 2), d)
        n_terms = B.index_set_size(d, p, q)
        if n_terms > cfg.max_terms:
            msg, hint = _too_many_terms(d, p, q, n_terms, cfg, reduction.kind)
            raise MethodError(msg, hint=hint)

        def evaluate(z: np.ndarray) -> np.ndarray:
            return run_model(reduction.decode(B.from_reference(z, box)))

        nodes = cfg.quadrature_nodes or max(p + 1, 2 * p)
        use_q = cfg.coefficients == "quadrature" or (
            cfg.coefficients == "auto" and cfg.sampling == "basis" and nodes**d <= cfg.max_quadrature_points)
        if use_q and nodes**d > 50 * cfg.max_quadrature_points:
            raise MethodError(f"quadrature on {d} coordinates with {nodes} nodes each needs {nodes ** d:,} model "
                              "evaluations", hint="use coefficients='least_squares' (the default above "
                              f"{cfg.max_quadrature_points:,} grid points) or reduce the inputs")
        if use_q and nodes < p + 1:
            raise MethodError(f"quadrature_nodes={nodes} is below degree + 1 = {p + 1}",
                              hint=f"set quadrature_nodes >= {p + 1} (default max(p + 1, 2p) = {max(p + 1, 2 * p)})")
        z_train, train_rows = (None, None) if use_q else cls._training_points(cfg, n_terms, d, U, box, ctx)
        return Problem(cfg=cfg, X=X, U=U, box=box, reduction=reduction, alpha=B.index_set(d, p, q), p=p, q=q,
                       is_image=is_image, sample_shape=sample_shape, run_model=run_model, evaluate=evaluate,
                       nodes=nodes if use_q else None, z_train=z_train, train_rows=train_rows,
                       screen_evaluations=evaluations["screen"])

    @staticmethod
    def fit(problem: "Problem") -> F.SpectralFit:
        """The coefficients: Gauss quadrature on the node grid, or ridge least squares on ``z_train``."""
        cfg = problem.cfg
        if problem.nodes is not None:
            return F.fit_quadrature(problem.evaluate, problem.alpha, cfg.basis, problem.nodes)
        return F.fit_least_squares(problem.evaluate, problem.alpha, cfg.basis, problem.z_train, ridge=cfg.ridge)

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        t0 = time.perf_counter()
        pb = self.prepare(ctx)
        cfg, X, U, box, reduction, alpha, p, q = pb.cfg, pb.X, pb.U, pb.box, pb.reduction, pb.alpha, pb.p, pb.q
        run_model, evaluate, d, is_image, sample_shape = pb.run_model, pb.evaluate, pb.d, pb.is_image, pb.sample_shape
        ctx.progress(0.1, f"fitting {len(alpha)} terms")
        t_fit = time.perf_counter()
        fit = self.fit(pb)
        fit_seconds = time.perf_counter() - t_fit
        gamma = fit.gamma

        coef_full = fit.coef
        if cfg.sparsify == "energy":
            coef = np.where(F.energy_mask(coef_full, gamma, cfg.energy_fraction), coef_full, 0.0)
        elif cfg.sparsify == "omp":
            if fit.gram is None:
                raise MethodError("sparsify='omp' needs a least-squares fit, but the coefficients came from quadrature",
                                  hint="set coefficients='least_squares' or use sparsify='energy'")
            coef, _ = F.omp_bic(fit, cfg.omp_max_terms)
        else:
            coef = coef_full
        kept = coef != 0
        kept[:, 0] = True

        # --- fidelity ------------------------------------------------------------------------------
        ctx.progress(0.7, "measuring fidelity")
        z_test = F.sample_reference(cfg.n_test, d, cfg.basis, ctx.rng)
        y_test = evaluate(z_test)
        yhat_test = F.predict(z_test, alpha, coef, cfg.basis)
        fid_test = F.fidelity(y_test, yhat_test)
        trunc_test = F.truncation_r2(z_test, y_test, alpha, coef, cfg.basis)

        pool = np.setdiff1d(np.arange(len(X)), pb.train_rows) if pb.train_rows is not None else np.arange(len(X))
        if len(pool) < 10:  # sampling='data' used (nearly) every row for the fit: nothing is held out
            pool = np.arange(len(X))
        rows = np.sort(ctx.rng.choice(pool, size=min(cfg.max_data_points, len(pool)), replace=False))
        X_data, U_data = X[rows], U[rows]
        outside = np.any((U_data < box[:, 0]) | (U_data > box[:, 1]), axis=1)
        z_data = np.clip(B.to_reference(U_data, box), -1.0, 1.0)
        y_data = run_model(X_data)
        yhat_data = F.predict(z_data, alpha, coef, cfg.basis)
        fid_data = F.fidelity(y_data, yhat_data)
        trunc_data = F.truncation_r2(z_data, y_data, alpha, coef, cfg.basis)
        fid_inside = F.fidelity(y_data[~outside], yhat_data[~outside]) if (~outside).sum() >= 10 else None
        fid_reduction = None
        if reduction.kind != "none":  # how much of the network the chosen coordinates can see at all
            fid_reduction = F.fidelity(y_data, run_model(reduction.decode(np.clip(U_data, box[:, 0], box[:, 1]))))
        n_eval_total = (fit.n_evaluations + len(z_test) + len(rows) * (2 if fid_reduction is not None else 1)
                        + pb.screen_evaluations)

        # --- understanding -------------------------------------------------------------------------
        ctx.progress(0.85, "spectrum and figures")
        spectrum = F.spectrum_by_degree(coef, alpha, gamma)
        vd = F.variance_decomposition(coef, alpha, gamma)
        K = coef.shape[0]
        data = ctx.data
        out_names = (list(data.class_names) if data.class_names and len(data.class_names) == K
                     else [f"output {k}" for k in range(K)])
        shown = self._shown_outputs(cfg, K)

        explanation = self._assemble(
            cfg=cfg, ctx=ctx, fit=fit, coef=coef, coef_full=coef_full, kept=kept, alpha=alpha, gamma=gamma, box=box,
            reduction=reduction, names=reduction.names, out_names=out_names, shown=shown, p=p, q=q, d=d,
            spectrum=spectrum, vd=vd, fid_test=fid_test, fid_data=fid_data, fid_inside=fid_inside,
            fid_reduction=fid_reduction, trunc_test=trunc_test, trunc_data=trunc_data, outside=outside, y_test=y_test,
            yhat_test=yhat_test,
            y_data=y_data, yhat_data=yhat_data, is_image=is_image, sample_shape=sample_shape,
            n_eval_total=n_eval_total, fit_seconds=fit_seconds, screen_evals=pb.screen_evaluations,
            data_held_out=pb.train_rows is None or not np.isin(rows, pb.train_rows).any())
        ctx.progress(1.0, f"done in {time.perf_counter() - t0:.1f} s")
        return explanation

    # ------------------------------------------------------------------------------------------------
    @staticmethod
    def _input_box(cfg: SpectralConfig, X: np.ndarray) -> np.ndarray:
        D = X.shape[1]
        if cfg.box is not None:
            if len(cfg.box) != D:
                raise MethodError(f"`box` has {len(cfg.box)} entries but the model has {D} input features",
                                  hint="give one [low, high] pair per input feature, in input order")
            return np.asarray(cfg.box, dtype=np.float64)
        return np.quantile(X, cfg.box_quantiles, axis=0).T

    @staticmethod
    def _reduction(cfg: SpectralConfig, X: np.ndarray, input_box: np.ndarray, names: list[str],
                   sample_shape: tuple[int, ...], is_image: bool, run_model: Any, ctx: MethodContext,
                   evaluations: dict[str, int]) -> R.Reduction:
        kind = cfg.reduce if cfg.reduce != "auto" else ("pca" if is_image else "none")
        if kind in ("pca", "pool") and cfg.box is not None:
            raise MethodError(f"`box` bounds input features, but reduce='{kind}' expands over derived coordinates "
                              "whose box comes from data quantiles",
                              hint="drop `box` (use box_quantiles), or use reduce='none', 'features' or 'top_k'")
        if kind == "none":
            return R.select_varying(X, input_box, names)
        if kind == "pca":
            return R.pca(X, cfg.n_components)
        if kind == "pool":
            return R.pool(X, sample_shape, cfg.pool_size)
        if kind == "features":
            if not cfg.features:
                raise MethodError("reduce='features' needs the list of inputs to expand over",
                                  hint="set features: [name or index, ...]")
            idx = []
            for f in cfg.features:
                if isinstance(f, int) and 0 <= f < len(names):
                    idx.append(f)
                elif isinstance(f, str) and f in names:
                    idx.append(names.index(f))
                else:
                    raise MethodError(f"feature {f!r} is not an input of this model",
                                      hint=f"use an index in 0..{len(names) - 1} or one of: {', '.join(names[:10])}"
                                      + (" ..." if len(names) > 10 else ""))
            return R.select_varying(X, input_box, names, kind="features", candidates=np.unique(idx))
        # top_k: one-at-a-time sweep screen over the varying inputs
        varying = np.flatnonzero(input_box[:, 1] - input_box[:, 0] > 0)
        scores, n_eval = R.screen(run_model, X, input_box, ctx.rng)
        evaluations["screen"] = n_eval
        ranked = varying[np.argsort(-scores[varying], kind="stable")]
        red = R.select_varying(X, input_box, names, kind="top_k", candidates=np.sort(ranked[: cfg.top_k]))
        red.note = (f"top {min(cfg.top_k, len(ranked))} of {len(varying)} inputs by a one-at-a-time sweep screen "
                    f"({n_eval:,} evaluations); the others are held at their data mean")
        red.details["screen_scores"] = scores.tolist()
        return red

    @staticmethod
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

    @staticmethod
    def _shown_outputs(cfg: SpectralConfig, K: int) -> list[int]:
        if cfg.classes is None:
            return list(range(min(K, 10)))
        bad = [c for c in cfg.classes if not 0 <= c < K]
        if bad:
            raise MethodError(f"classes {bad} are not outputs of this model (it has {K})",
                              hint=f"use output indices in 0..{K - 1}")
        return list(dict.fromkeys(cfg.classes))

    # ------------------------------------------------------------------------------------------------
    def _assemble(self, *, cfg: SpectralConfig, ctx: MethodContext, fit: F.SpectralFit, coef: np.ndarray,
                  coef_full: np.ndarray, kept: np.ndarray, alpha: np.ndarray, gamma: np.ndarray, box: np.ndarray,
                  reduction: R.Reduction, names: list[str], out_names: list[str], shown: list[int], p: int, q: int,
                  d: int, spectrum: np.ndarray, vd: F.VarianceDecomposition, fid_test: F.Fidelity,
                  fid_data: F.Fidelity, fid_inside: F.Fidelity | None, fid_reduction: F.Fidelity | None,
                  trunc_test: np.ndarray, trunc_data: np.ndarray, outside: np.ndarray, y_test: np.ndarray,
                  yhat_test: np.ndarray,
                  y_data: np.ndarray, yhat_data: np.ndarray, is_image: bool, sample_shape: tuple[int, ...],
                  n_eval_total: int, fit_seconds: float, screen_evals: int, data_held_out: bool) -> Explanation:
        from governance_plugins.spectral import figures as FG

        L = coef.shape[1]
        measure = B.MEASURE[cfg.basis]
        n_kept = kept.sum(axis=1)
        linear_share = np.where(vd.variance > 0, spectrum[:, 1] / np.where(vd.variance > 0, vd.variance, 1.0), 0.0)

        # per-coordinate importance, pooled over the shown outputs (variance-weighted)
        energy_coord = vd.feature_energy[shown].sum(axis=0)
        main_coord = vd.main_energy[shown].sum(axis=0)
        total_var = float(vd.variance[shown].sum())
        order = np.argsort(-energy_coord)

        # --- text ---
        formulas, linear_formulas, top_tables = [], [], {}
        for k in shown:
            intercept, weights = FM.linear_in_units(coef[k], alpha, box)
            formulas.append({"output": out_names[k], "index": k,
                             "formula": FM.formula_text(coef[k], alpha, gamma, names, cfg.basis, cfg.top_terms),
                             "n_terms_kept": int(n_kept[k]), "r2_heldout": float(fid_test.r2[k]),
                             "r2_data": float(fid_data.r2[k]), "r2_linear": float(trunc_test[k, 0]),
                             "linear_share": float(linear_share[k])})
            linear_formulas.append({"output": out_names[k], "index": k, "intercept": intercept,
                                    "formula": FM.linear_text(intercept, weights, names, cfg.top_terms),
                                    "r2_heldout": float(trunc_test[k, 0]), "r2_data": float(trunc_data[k, 0])})
            top_tables[f"top_terms_{k}"] = FM.ranked_terms(coef[k], alpha, gamma, names, cfg.basis, cfg.top_terms)
        feature_table = [{
            "feature": names[i], "energy": float(energy_coord[i]),
            "total_share": float(energy_coord[i] / total_var) if total_var > 0 else 0.0,
            "first_order_share": float(main_coord[i] / total_var) if total_var > 0 else 0.0,
            "interaction_share": float((energy_coord[i] - main_coord[i]) / total_var) if total_var > 0 else 0.0,
        } for i in order[: max(cfg.top_terms, 15)] if energy_coord[i] > 0]
        pairs = (vd.pair_share[shown] * vd.variance[shown, None, None]).sum(axis=0)
        iu, ju = np.triu_indices(d, 1)
        top_pairs = np.argsort(-pairs[iu, ju])[:10] if d > 1 else []
        interaction_table = [{"inputs": f"{names[iu[n]]} × {names[ju[n]]}",
                              "share": float(pairs[iu[n], ju[n]] / total_var) if total_var > 0 else 0.0}
                             for n in top_pairs if pairs[iu[n], ju[n]] > 0]
        spectrum_table = [{
            "degree": j, "energy": float(spectrum[shown, j].sum()),
            "share": float(spectrum[shown, j].sum() / total_var) if total_var > 0 else 0.0,
            "r2_heldout": float(np.mean(trunc_test[shown, j - 1])), "r2_data": float(np.mean(trunc_data[shown, j - 1])),
        } for j in range(1, p + 1)]
        fidelity_table = [
            {"points": f"held-out, {measure}", **fid_test.summary()},
            {"points": "dataset rows" + (" (clipped to the box)" if outside.any() else ""), **fid_data.summary()},
        ]
        if fid_inside is not None and outside.any():
            fidelity_table.append({"points": "dataset rows inside the box", **fid_inside.summary()})
        if fid_reduction is not None:
            fidelity_table.append({"points": f"network on {reduction.kind}-reconstructed rows vs. on rows",
                                   **fid_reduction.summary()})

        # --- figures ---
        figures = {
            "spectrum": ctx.save_figure(FG.spectrum_figure(spectrum, trunc_test, trunc_data, shown, out_names), "spectrum"),
            "feature_energy": ctx.save_figure(FG.feature_energy_figure(energy_coord, main_coord, names, total_var),
                                              "feature_energy"),
            "fidelity": ctx.save_figure(FG.fidelity_figure(y_test, yhat_test, y_data, yhat_data, shown, out_names,
                                                           fid_test, fid_data), "fidelity"),
        }
        input_energy = (vd.feature_energy.sum(axis=0) @ reduction.input_weights()).reshape(sample_shape)
        if is_image:
            figures["energy_map"] = ctx.save_figure(FG.energy_map_figure(input_energy, reduction.kind), "energy_map")

        # --- metrics, findings ---
        mean_r2, mean_r2_data = float(np.mean(fid_test.r2)), float(np.mean(fid_data.r2))
        metrics: dict[str, float] = {
            "r2_heldout": mean_r2, "r2_heldout_min": float(np.min(fid_test.r2)),
            "rmse_heldout": float(np.mean(fid_test.rmse)), "max_abs_error_heldout": float(np.max(fid_test.max_abs_error)),
            "r2_data": mean_r2_data, "rmse_data": float(np.mean(fid_data.rmse)),
            "r2_linear_heldout": float(np.mean(trunc_test[:, 0])), "r2_linear_data": float(np.mean(trunc_data[:, 0])),
            "linear_energy_share": float(np.mean(linear_share)),
            "n_terms": float(L), "n_terms_kept": float(np.max(n_kept)), "n_terms_kept_mean": float(np.mean(n_kept)),
            "n_inputs": float(d), "degree": float(p), "interaction_order": float(q),
            "n_evaluations_fit": float(fit.n_evaluations), "n_evaluations": float(n_eval_total),
            "fit_seconds": float(fit_seconds), "data_outside_box": float(np.mean(outside)),
        }
        if fid_test.agreement is not None:
            metrics["agreement_heldout"] = float(fid_test.agreement)
            metrics["agreement_data"] = float(fid_data.agreement)  # type: ignore[arg-type]
        if fid_inside is not None:
            metrics["r2_data_inside"] = float(np.mean(fid_inside.r2))
        if fid_reduction is not None:
            metrics["r2_reduction_data"] = float(np.mean(fid_reduction.r2))

        top_names = [names[i] for i in order[:3] if energy_coord[i] > 0]
        findings = [
            f"The degree-{p} surrogate ({int(np.max(n_kept))} of {L} terms) reproduces the network's "
            f"{cfg.output}s with R² = {mean_r2:.3f} on held-out points of the box and {mean_r2_data:.3f} on dataset rows.",
            f"The strictly linear part (degree 1) alone reaches R² = {np.mean(trunc_test[:, 0]):.3f}; "
            f"{np.mean(linear_share):.0%} of the output variance sits at degree 1.",
        ]
        if top_names:
            findings.append("Inputs with the largest spectral energy: " + ", ".join(
                f"{names[i]} ({energy_coord[i] / total_var:.0%})" for i in order[:3] if energy_coord[i] > 0) + ".")
        if fid_test.agreement is not None:
            findings.append(f"The surrogate's argmax matches the network's on {fid_data.agreement:.1%} of dataset rows "
                            f"and {fid_test.agreement:.1%} of held-out box points.")
        warns = []
        if mean_r2 < 0.9:
            warns.append(f"Held-out R² is only {mean_r2:.3f}: read the formula as a rough summary. A higher degree, a "
                         "higher interaction order or fewer inputs (reduce) may fit better.")
        if mean_r2_data < mean_r2 - 0.1:
            warns.append(f"Fidelity on dataset rows (R² {mean_r2_data:.3f}) is well below the box's ({mean_r2:.3f}): "
                         "the network behaves differently on real data than on the box measure.")
        if cfg.sampling == "data":
            warns.append("Coefficients were fitted on dataset rows (data measure), where the basis is not orthogonal: "
                         "the per-degree energies and variance shares are approximate, and dataset-row fidelity is "
                         + ("measured on the rows not used for the fit." if data_held_out else
                            "measured on the same rows the fit used (none were left over)."))
        if outside.any():
            warns.append(f"{outside.mean():.1%} of dataset rows fall outside the box in at least one coordinate; "
                         "they were clipped to it, where the surrogate is not valid.")
        if fid_reduction is not None and np.mean(fid_reduction.r2) < 0.9:
            warns.append(f"The {reduction.kind} coordinates preserve the network's outputs only to R² "
                         f"{np.mean(fid_reduction.r2):.3f} on dataset rows: the surrogate cannot see the rest.")

        coords = {"none": "inputs", "features": "selected inputs", "top_k": "screened inputs",
                  "pca": "principal-component scores", "pool": "image blocks"}[reduction.kind]
        summary = (f"A degree-{p} {cfg.basis.capitalize()} surrogate over {d} {coords} "
                   f"({L:,} terms, {fit.method.replace('_', ' ')} on {fit.n_evaluations:,} model evaluations) "
                   f"reproduces the network with held-out R² {mean_r2:.3f} (dataset rows {mean_r2_data:.3f}); its "
                   f"linear part alone reaches R² {np.mean(trunc_test[:, 0]):.3f}.")
        details = {
            "reconstruction_note": RECONSTRUCTION_NOTE,
            "basis": cfg.basis, "symbol": B.SYMBOL[cfg.basis], "measure": measure, "degree": p, "interaction_order": q,
            "n_inputs": d, "n_terms": L, "coefficient_method": fit.method, "quadrature_nodes": fit.nodes,
            "n_evaluations_fit": fit.n_evaluations, "n_evaluations": n_eval_total, "screen_evaluations": screen_evals,
            "ridge": fit.ridge, "sparsify": cfg.sparsify,
            "output": "the predicted value (regression)" if getattr(ctx.model, "task", "") == "regression" else cfg.output,
            "reduction": {"kind": reduction.kind, "label": REDUCTION_LABELS[reduction.kind], "note": reduction.note,
                          "n_coordinates": d,
                          **{k: v for k, v in reduction.details.items() if k != "screen_scores"}},
            "box": [{"coordinate": n, "low": float(lo), "high": float(hi)} for n, (lo, hi) in zip(names, box)],
            "box_source": "user bounds" if cfg.box is not None and reduction.kind not in ("pca", "pool")
            else f"data quantiles {cfg.box_quantiles[0]:g}-{cfg.box_quantiles[1]:g}",
            "formulas": formulas, "linear_formulas": linear_formulas, "outputs": out_names,
            "shown_outputs": shown, "data_outside_box": float(np.mean(outside)),
        }
        arrays = {
            "alpha": alpha.astype(np.int16), "coefficients": coef, "coefficients_full": coef_full, "gamma": gamma,
            "kept": kept, "box": box, "spectrum": spectrum, "variance": vd.variance,
            "first_order": vd.first_order, "total_index": vd.total, "feature_energy": vd.feature_energy,
            "pair_share": vd.pair_share, "truncation_r2_heldout": trunc_test, "truncation_r2_data": trunc_data,
            "r2_heldout": fid_test.r2, "r2_data": fid_data.r2, "input_energy": input_energy,
            "reduction_x0": reduction.x0, "reduction_decoder": reduction.decoder,
            "reduction_encoder": reduction.encoder, "reduction_e0": reduction.e0,
        }
        return Explanation(method=self.name, summary=summary, metrics=metrics, arrays=arrays, figures=figures,
                           tables={**top_tables, "feature_energy": feature_table, "spectrum": spectrum_table,
                                   "interactions": interaction_table, "fidelity": fidelity_table},
                           details=details, findings=findings, warnings=warns)


def _drop(red: R.Reduction, keep: np.ndarray, centre: np.ndarray) -> R.Reduction:
    """Hold the coordinates with a zero-width box at their value and expand over the rest."""
    x0 = red.x0 + centre[~keep] @ red.decoder[~keep]
    details = dict(red.details)
    if "indices" in details:
        details["indices"] = [i for i, k in zip(details["indices"], keep) if k]
    held = int((~keep).sum())
    note = "; ".join(n for n in (red.note, f"{held} coordinate(s) constant on the box held fixed") if n)
    return R.Reduction(kind=red.kind, names=[n for n, k in zip(red.names, keep) if k], x0=x0,
                       decoder=red.decoder[keep], encoder=red.encoder[keep], e0=red.e0, note=note, details=details)


def _too_many_terms(d: int, p: int, q: int, n_terms: int, cfg: SpectralConfig, kind: str) -> tuple[str, str]:
    fits = B.max_dimension(p, q, cfg.max_terms)
    msg = (f"the {cfg.basis} index set for {d} input coordinates at degree {p} with interaction order {q} has "
           f"{n_terms:,} terms, above the limit max_terms={cfg.max_terms:,} (least squares needs about "
           f"{cfg.samples_per_term:g} model evaluations per term and a terms x terms Gram matrix of "
           f"{8 * n_terms ** 2 / 2**20:,.0f} MiB); at this degree and interaction order at most {fits} coordinates fit")
    hint = (f"reduce the inputs to at most {fits} coordinates: reduce='pca' with n_components<={fits}, "
            f"reduce='top_k' with top_k<={fits}, reduce='features' with a list"
            + (", or reduce='pool' for images" if kind != "pool" else ", or a larger pool_size")
            + f"; or lower degree/interaction_order; or raise max_terms (memory grows with its square)")
    return msg, hint
