"""Spectral coefficients of a black-box function on [-1, 1]^d, and what they say (spec B3.2-B3.5).

``evaluate`` is any callable mapping reference points ``z`` of shape ``(M, d)`` to outputs ``(M, K)``; the
method wraps the model's forward pass in one. Two ways to get ``c_alpha = E_mu[f T_alpha] / gamma_alpha``:

* :func:`fit_quadrature`: tensor Gauss quadrature (exact for polynomials of per-axis degree < 2N - p),
* :func:`fit_least_squares`: ridge regression on M sampled points, with the normal equations accumulated
  in row chunks so memory is O(L^2), not O(M L).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import product
from typing import Callable

import numpy as np

from governance_plugins.spectral.basis import BasisName, TermPlan, design_matrix, norms, univariate_table

Evaluate = Callable[[np.ndarray], np.ndarray]

#: rows of the design matrix built at once (keeps a chunk of Phi near 64 MB for L ~ 4000).
_CHUNK_BYTES = 64 * 2**20


@dataclass
class SpectralFit:
    """Coefficients ``coef[k, n]`` of output k on basis function ``alpha[n]``, and how they were obtained."""

    alpha: np.ndarray  # (L, d) int
    coef: np.ndarray  # (K, L)
    basis: BasisName
    method: str  # "quadrature" | "least_squares"
    n_evaluations: int
    ridge: float = 0.0
    nodes: int | None = None
    gram: np.ndarray | None = field(default=None, repr=False)  # Phi^T Phi (LS only; for sparse refits)
    phi_y: np.ndarray | None = field(default=None, repr=False)  # Phi^T y, (L, K)
    y_sq: np.ndarray | None = field(default=None, repr=False)  # y^T y per output, (K,)
    #: fallbacks taken on the way (e.g. Cholesky -> least squares); the method lifts them into its warnings
    notes: list[str] = field(default_factory=list)
    solver: "RidgeSolver | None" = field(default=None, repr=False)  # LS only: reusable for another network

    @property
    def gamma(self) -> np.ndarray:
        return norms(self.alpha, self.basis)

    @property
    def degrees(self) -> np.ndarray:
        return np.asarray(self.alpha, dtype=np.int64).sum(axis=1)

    def predict(self, z: np.ndarray, coef: np.ndarray | None = None) -> np.ndarray:
        """Surrogate values at reference points ``z`` (M, d) -> (M, K), optionally with other coefficients."""
        return predict(z, self.alpha, self.coef if coef is None else coef, self.basis)


def _chunk_rows(n_terms: int) -> int:
    return max(256, _CHUNK_BYTES // (8 * max(1, n_terms)))


def predict(z: np.ndarray, alpha: np.ndarray, coef: np.ndarray, basis: BasisName) -> np.ndarray:
    """sum_alpha c_alpha T_alpha(z), evaluated in row chunks; returns (M, K)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    plan = TermPlan.from_alpha(alpha, int(np.max(alpha, initial=0)))
    step = _chunk_rows(len(alpha))
    out = np.empty((len(z), coef.shape[0]))
    for i in range(0, len(z), step):
        out[i : i + step] = design_matrix(z[i : i + step], alpha, basis, plan) @ coef.T
    return out


# ------------------------------------------------------------------------------------------- sampling
def sample_reference(n: int, d: int, basis: BasisName, rng: np.random.Generator) -> np.ndarray:
    """n points from the basis's orthogonality measure on [-1, 1]^d: arcsine (z = cos(pi U)) for Chebyshev,
    uniform for Legendre. Sampling from this measure keeps Phi well conditioned (spec B7)."""
    u = rng.random((n, d))
    return np.cos(np.pi * u) if basis == "chebyshev" else 2.0 * u - 1.0


def quadrature_rule(n_nodes: int, basis: BasisName) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1, i.e. for the normalised measure) of the N-point Gauss rule.

    Chebyshev: z_j = cos(pi (j + 1/2) / N), weights 1/N (Gauss-Chebyshev). Legendre: Gauss-Legendre / 2.
    """
    if basis == "chebyshev":
        theta = np.pi * (np.arange(n_nodes) + 0.5) / n_nodes
        return np.cos(theta), np.full(n_nodes, 1.0 / n_nodes)
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    return nodes, weights / 2.0


def quadrature_grid(d: int, n_nodes: int, basis: BasisName) -> np.ndarray:
    """The tensor grid of Gauss nodes, (N^d, d), in C order (last axis fastest)."""
    nodes, _ = quadrature_rule(n_nodes, basis)
    return np.array(list(product(nodes, repeat=d)), dtype=np.float64).reshape(-1, d)


def fit_quadrature(evaluate: Evaluate, alpha: np.ndarray, basis: BasisName, n_nodes: int) -> SpectralFit:
    """Coefficients by tensor Gauss quadrature (spec B3.2 "Q").

    Per axis, c_k = sum_j w_j f(z_j) phi_k(z_j) / gamma_k; in d dimensions the same contraction is applied
    along every axis of the grid values (for Chebyshev this is the DCT-II product formula). N^d evaluations.
    """
    alpha = np.asarray(alpha)
    d = alpha.shape[1]
    p = int(alpha.max(initial=0))
    if n_nodes < p + 1:
        raise ValueError(f"quadrature needs at least p + 1 = {p + 1} nodes per axis, got {n_nodes}")
    nodes, weights = quadrature_rule(n_nodes, basis)
    gamma_1d = norms(np.arange(p + 1)[:, None], basis)
    proj = (univariate_table(nodes, p, basis) * weights[:, None]).T / gamma_1d[:, None]  # (p+1, N)
    values = np.asarray(evaluate(quadrature_grid(d, n_nodes, basis)), dtype=np.float64)
    values = values.reshape(len(values), -1)
    K = values.shape[1]
    tensor = values.reshape(*([n_nodes] * d), K)
    for axis in range(d):  # contract grid axis `axis` -> degree axis, keeping the order of axes
        tensor = np.moveaxis(np.tensordot(proj, tensor, axes=([1], [axis])), 0, axis)
    coef = tensor[tuple(alpha[:, i] for i in range(d))].T  # (K, L)
    return SpectralFit(alpha=alpha, coef=np.ascontiguousarray(coef), basis=basis, method="quadrature",
                       n_evaluations=n_nodes**d, nodes=n_nodes)


def default_ridge(gram: np.ndarray) -> float:
    """lambda = 1e-8 * trace(Phi^T Phi) / L (spec B3.6)."""
    return 1e-8 * float(np.trace(gram)) / len(gram)


def normal_equations(z: np.ndarray, y: np.ndarray, alpha: np.ndarray, basis: BasisName,
                     gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phi^T Phi (L, L), Phi^T y (L, K) and y^T y (K,), accumulated over row chunks. A known ``gram`` (the same
    points ``z``) is reused instead of accumulated again."""
    plan = TermPlan.from_alpha(alpha, int(np.max(alpha, initial=0)))
    from scipy.linalg.blas import dsyrk

    L = len(alpha)
    acc = np.zeros((L, L), order="F") if gram is None else None
    phi_y = np.zeros((L, y.shape[1]))
    step = _chunk_rows(L)
    for i in range(0, len(z), step):
        phi = design_matrix(z[i : i + step], alpha, basis, plan)
        if acc is not None:  # upper triangle += phi^T phi (half the flops of a full product; phi.T is Fortran-ordered)
            acc = dsyrk(1.0, phi.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
        phi_y += phi.T @ y[i : i + step]
    if acc is not None:
        gram = np.ascontiguousarray(np.triu(acc) + np.triu(acc, 1).T)
    return gram, phi_y, np.einsum("mk,mk->k", y, y)  # type: ignore[return-value]


@dataclass
class RidgeSolver:
    """G + lambda I factorised once (Cholesky), for any right-hand side. When it is not positive definite
    (lambda = 0 and collinear terms) the solve falls back to minimum-norm least squares and ``note`` says so."""

    gram: np.ndarray = field(repr=False)
    ridge: float
    factor: tuple | None = field(default=None, repr=False)
    note: str | None = None

    @classmethod
    def of(cls, gram: np.ndarray, ridge: float) -> "RidgeSolver":
        import scipy.linalg

        try:
            factor = scipy.linalg.cho_factor(gram + ridge * np.eye(len(gram)), lower=False, check_finite=False)
            return cls(gram, ridge, factor)
        except np.linalg.LinAlgError:
            return cls(gram, ridge, None, "")

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        import scipy.linalg

        if self.factor is not None:
            return scipy.linalg.cho_solve(self.factor, rhs)
        a = self.gram + self.ridge * np.eye(len(self.gram))
        solution, _, rank, _ = scipy.linalg.lstsq(a, rhs, check_finite=False)
        self.note = (f"The normal equations (ridge {self.ridge:.3g}) are not positive definite, so the Cholesky "
                     f"solve failed; the coefficients are the minimum-norm least-squares solution instead (numerical "
                     f"rank {rank} of {len(a)} terms): terms that are collinear on the fit points share their weight "
                     "arbitrarily. A positive ridge (the default) or more, better spread fit points avoid this.")
        return solution


def solve_ridge(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> tuple[np.ndarray, str | None]:
    """(G + lambda I)^{-1} rhs, and the fallback note (None when Cholesky succeeded)."""
    solver = RidgeSolver.of(gram, ridge)
    return solver.solve(rhs), solver.note


def fit_least_squares(evaluate: Evaluate, alpha: np.ndarray, basis: BasisName, z: np.ndarray,
                      ridge: float | None = None, y: np.ndarray | None = None,
                      same_points_as: "SpectralFit | None" = None) -> SpectralFit:
    """Coefficients by ridge regression on the points ``z`` (spec B3.2 "LS"); ``ridge=None`` is the B3.6
    default. ``y`` may be given when the values at ``z`` are already known. ``same_points_as``: a fit on the
    very same points, whose Gram matrix and factorisation are reused (another network on the same design)."""
    alpha = np.asarray(alpha)
    values = np.asarray(evaluate(z) if y is None else y, dtype=np.float64)
    values = values.reshape(len(values), -1)
    base = same_points_as if same_points_as is not None and same_points_as.solver is not None else None
    gram, phi_y, y_sq = normal_equations(z, values, alpha, basis, gram=base.gram if base is not None else None)
    if base is not None:
        lam, solver = base.ridge, base.solver
    else:
        lam = default_ridge(gram) if ridge is None else float(ridge)
        solver = RidgeSolver.of(gram, lam)
    coef = np.ascontiguousarray(solver.solve(phi_y).T)
    return SpectralFit(alpha=alpha, coef=coef, basis=basis, method="least_squares", n_evaluations=len(z), ridge=lam,
                       gram=gram, phi_y=phi_y, y_sq=y_sq, notes=[solver.note] if solver.note else [], solver=solver)


# ------------------------------------------------------------------------------------------- sparsify
def term_energy(coef_row: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Each term's share of the variance under the basis measure, c^2 gamma, with the constant term set to 0
    (row 0 of every index set is the constant: it carries the mean, not variance)."""
    energy = np.asarray(coef_row, dtype=np.float64) ** 2 * gamma
    energy[0] = 0.0
    return energy


def rank_terms(coef_row: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Indices of the non-constant terms with non-zero energy, largest c^2 gamma first (ties: index order)."""
    energy = term_energy(coef_row, gamma)
    order = np.argsort(-energy, kind="stable")
    return order[energy[order] > 0]


def fewest_terms(coef_row: np.ndarray, gamma: np.ndarray, share: float) -> tuple[np.ndarray, float]:
    """The fewest non-constant terms whose energies add up to at least ``share`` of the variance (largest
    first), and the share they reach. Under the basis measure the terms are orthogonal, so their variances
    add and the selection is optimal. Empty (share nan) when the surrogate has no variance."""
    energy = term_energy(coef_row, gamma)
    total = float(energy.sum())
    order = rank_terms(coef_row, gamma)
    if total <= 0 or not len(order):
        return order[:0], float("nan")
    cumulative = np.cumsum(energy[order]) / total
    need = min(int(np.searchsorted(cumulative, share - 1e-12)) + 1, len(order))
    return order[:need], float(cumulative[need - 1])


def energy_mask(coef: np.ndarray, gamma: np.ndarray, fraction: float = 0.99) -> np.ndarray:
    """Per output, the smallest set of terms holding >= ``fraction`` of the variance sum c^2 gamma over
    non-constant terms, plus the constant term (spec B3.4 "energy99"). Returns a (K, L) boolean mask."""
    mask = np.zeros(coef.shape, dtype=bool)
    mask[:, 0] = True
    for k in range(coef.shape[0]):
        mask[k, fewest_terms(coef[k], gamma, fraction)[0]] = True
    return mask


@dataclass
class SparseFit:
    """Sparse coefficients (K, L), their support, and the outputs for which nothing was selected."""

    coef: np.ndarray
    mask: np.ndarray
    empty_outputs: list[int]


def _omp_path(gram_n: np.ndarray, xy: np.ndarray, y_sq: float, n_max: int) -> np.ndarray:
    """OMP coefficient path (L, steps) on normalised normal equations; (L, 0) when OMP stops before the
    first term (no basis function correlates with the output)."""
    from sklearn.linear_model import orthogonal_mp_gram

    with warnings.catch_warnings():  # "ended prematurely": the residual reached zero (exact fit)
        warnings.simplefilter("ignore", RuntimeWarning)
        path = orthogonal_mp_gram(gram_n, xy, n_nonzero_coefs=n_max, norms_squared=[y_sq], return_path=True,
                                  copy_Gram=True, copy_Xy=True)
    return np.asarray(path).reshape(len(gram_n), -1)


def omp_bic(fit: SpectralFit, max_terms: int) -> SparseFit:
    """Orthogonal matching pursuit on the normal equations, with the number of terms chosen by BIC among the
    path and the empty model (spec B3.2 sparse option). Needs a least-squares fit (it reuses Phi^T Phi).
    An output for which the empty model wins (or OMP stops before the first term) gets all-zero
    coefficients and is listed in ``empty_outputs``, so the caller can warn."""
    if fit.gram is None or fit.phi_y is None or fit.y_sq is None:
        raise ValueError("OMP needs the normal equations of a least-squares fit")
    M = fit.n_evaluations
    scale = 1.0 / np.sqrt(np.maximum(np.diag(fit.gram), 1e-300))
    gram_n = fit.gram * scale[:, None] * scale[None, :]
    coef, empty = np.zeros_like(fit.coef), []
    for k in range(fit.coef.shape[0]):
        xy, y_sq = fit.phi_y[:, k] * scale, float(fit.y_sq[k])
        floor = 1e-300 * max(1.0, y_sq)
        best, best_bic = np.zeros(len(xy)), M * np.log(max(y_sq, floor) / M)  # the empty model: predicts 0
        path = _omp_path(gram_n, xy, y_sq, int(min(max_terms, len(gram_n), max(1, M - 1))))
        for c in path.T:
            sse = max(float(y_sq - 2 * c @ xy + c @ gram_n @ c), floor)
            bic = M * np.log(sse / M) + np.count_nonzero(c) * np.log(M)
            if bic < best_bic:
                best, best_bic = c, bic
        if not np.any(best):
            empty.append(k)
        coef[k] = best * scale
    return SparseFit(coef=coef, mask=coef != 0, empty_outputs=empty)


# ------------------------------------------------------------------------------------------- analysis
def spectrum_by_degree(coef: np.ndarray, alpha: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """E_k = sum_{|alpha|_1 = k} c_alpha^2 gamma_alpha for k = 0..p: (K, p+1) (spec B3.3)."""
    deg = np.asarray(alpha, dtype=np.int64).sum(axis=1)
    p = int(deg.max(initial=0))
    energy = coef**2 * gamma[None, :]
    return np.stack([energy[:, deg == k].sum(axis=1) for k in range(p + 1)], axis=1)


@dataclass
class VarianceDecomposition:
    """Sobol-type shares from the coefficients under the basis measure (spec B3.3)."""

    variance: np.ndarray  # (K,)  sum_{alpha != 0} c^2 gamma
    first_order: np.ndarray  # (K, d)  S_i
    total: np.ndarray  # (K, d)  T_i
    feature_energy: np.ndarray  # (K, d)  sum_{alpha_i > 0} c^2 gamma (T_i * variance)
    main_energy: np.ndarray  # (K, d)  sum_{supp alpha = {i}} c^2 gamma
    pair_share: np.ndarray  # (K, d, d)  share of terms with support exactly {i, j}


def variance_decomposition(coef: np.ndarray, alpha: np.ndarray, gamma: np.ndarray) -> VarianceDecomposition:
    alpha = np.asarray(alpha)
    K, d = coef.shape[0], alpha.shape[1]
    energy = coef**2 * gamma[None, :]
    active = alpha > 0
    order = active.sum(axis=1)
    energy_nc = np.where(order[None, :] > 0, energy, 0.0)
    variance = energy_nc.sum(axis=1)
    denom = np.where(variance > 0, variance, 1.0)[:, None]
    feature_energy = energy_nc @ active.astype(np.float64)  # (K, d)
    main_energy = (energy * (order == 1)[None, :]) @ active.astype(np.float64)
    pair_share = np.zeros((K, d, d))
    pairs = np.flatnonzero(order == 2)
    if len(pairs):
        ij = np.array([np.flatnonzero(active[n]) for n in pairs])
        for k in range(K):
            np.add.at(pair_share[k], (ij[:, 0], ij[:, 1]), energy[k, pairs])
        pair_share = pair_share + pair_share.transpose(0, 2, 1)
    return VarianceDecomposition(variance=variance, first_order=main_energy / denom, total=feature_energy / denom,
                                 feature_energy=feature_energy, main_energy=main_energy,
                                 pair_share=pair_share / denom[:, :, None])


# ------------------------------------------------------------------------------------------- fidelity
#: an output whose range on the scored points is below this fraction of its magnitude is constant (float32
#: resolution is ~6e-8): R^2 = 1 - SSE/SST has no meaning there.
CONSTANT_RTOL = 1e-6


def constant_outputs(y: np.ndarray) -> np.ndarray:
    """(K,) True where the network's output does not vary over the points (R^2 undefined)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if not len(y):
        return np.ones(y.shape[1], dtype=bool)
    return np.ptp(y, axis=0) <= CONSTANT_RTOL * np.maximum(1.0, np.abs(y).max(axis=0))


def r2_per_output(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """R^2 = 1 - SSE/SST per output column; nan where the network's output is constant (SST = 0), because a
    share of explained variance is undefined when there is no variance (never reported as 0 or 1)."""
    sse = ((y - y_hat) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst
    return np.where(constant_outputs(y) | ~(sst > 0), np.nan, r2)


def nanmean(values: np.ndarray) -> float:
    """Mean over the defined (finite) values; nan when none is (no RuntimeWarning)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


@dataclass
class Fidelity:
    r2: np.ndarray  # (K,), nan for outputs that are constant on the points
    rmse: np.ndarray  # (K,)
    max_abs_error: np.ndarray  # (K,)
    agreement: float | None  # argmax agreement (None for a single output)
    n_points: int

    @property
    def mean_r2(self) -> float:
        return nanmean(self.r2)

    def summary(self) -> dict[str, float]:
        defined = self.r2[np.isfinite(self.r2)]
        out = {"r2": self.mean_r2, "r2_min": float(defined.min()) if len(defined) else float("nan"),
               "rmse": float(np.mean(self.rmse)), "max_abs_error": float(np.max(self.max_abs_error)),
               "n_points": float(self.n_points)}
        if self.agreement is not None:
            out["agreement"] = float(self.agreement)
        return out


def agreement(y: np.ndarray, y_hat: np.ndarray) -> float | None:
    """How often argmax of the surrogate equals the network's (None for a single output)."""
    return float(np.mean(y.argmax(axis=1) == y_hat.argmax(axis=1))) if y.shape[1] > 1 else None


def fidelity(y: np.ndarray, y_hat: np.ndarray) -> Fidelity:
    """R^2, RMSE, max |error| per output, and how often argmax of the surrogate equals the network's."""
    err = y_hat - y
    return Fidelity(r2=r2_per_output(y, y_hat), rmse=np.sqrt((err**2).mean(axis=0)),
                    max_abs_error=np.abs(err).max(axis=0), agreement=agreement(y, y_hat), n_points=len(y))


def truncation_predictions(z: np.ndarray, alpha: np.ndarray, coef: np.ndarray, basis: BasisName) -> np.ndarray:
    """Predictions of the degree-<=k truncations for k = 0..p: (p + 1, M, K). Entry 0 is the constant term
    alone, entry 1 the strictly linear surrogate R2 of B3.4, entry p the whole surrogate."""
    deg = np.asarray(alpha, dtype=np.int64).sum(axis=1)
    p = int(deg.max(initial=0))
    plan = TermPlan.from_alpha(alpha, p)
    step = _chunk_rows(len(alpha))
    blocks = np.zeros((p + 1, len(z), coef.shape[0]))  # the degree-k block's contribution
    for i in range(0, len(z), step):
        phi = design_matrix(z[i : i + step], alpha, basis, plan)
        for k in range(p + 1):
            blocks[k, i : i + step] = phi[:, deg == k] @ coef[:, deg == k].T
    return np.cumsum(blocks, axis=0)


def truncation_r2(z: np.ndarray, y: np.ndarray, alpha: np.ndarray, coef: np.ndarray, basis: BasisName) -> np.ndarray:
    """R^2 of the degree-<=k truncation for k = 1..p: (K, p) (spec B3.5). Column 0 is the strictly linear
    surrogate R2 of B3.4."""
    cumulative = truncation_predictions(z, alpha, coef, basis)
    return np.stack([r2_per_output(y, cumulative[k]) for k in range(1, len(cumulative))], axis=1)
