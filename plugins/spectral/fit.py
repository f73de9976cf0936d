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


def normal_equations(z: np.ndarray, y: np.ndarray, alpha: np.ndarray,
                     basis: BasisName) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phi^T Phi (L, L), Phi^T y (L, K) and y^T y (K,), accumulated over row chunks."""
    plan = TermPlan.from_alpha(alpha, int(np.max(alpha, initial=0)))
    from scipy.linalg.blas import dsyrk

    L = len(alpha)
    gram = np.zeros((L, L), order="F")
    phi_y = np.zeros((L, y.shape[1]))
    step = _chunk_rows(L)
    for i in range(0, len(z), step):
        phi = design_matrix(z[i : i + step], alpha, basis, plan)
        # upper triangle of gram += phi^T phi (half the flops of a full product; phi.T is Fortran-ordered)
        gram = dsyrk(1.0, phi.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
        phi_y += phi.T @ y[i : i + step]
    gram = np.triu(gram) + np.triu(gram, 1).T
    return np.ascontiguousarray(gram), phi_y, np.einsum("mk,mk->k", y, y)


def solve_ridge(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    """(G + lambda I)^{-1} rhs by Cholesky; least squares on G when it is singular (lambda = 0)."""
    import scipy.linalg

    a = gram + ridge * np.eye(len(gram))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=False, check_finite=False), rhs)
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(a, rhs, check_finite=False)[0]


def fit_least_squares(evaluate: Evaluate, alpha: np.ndarray, basis: BasisName, z: np.ndarray,
                      ridge: float | None = None, y: np.ndarray | None = None) -> SpectralFit:
    """Coefficients by ridge regression on the points ``z`` (spec B3.2 "LS"); ``ridge=None`` is the B3.6
    default. ``y`` may be given when the values at ``z`` are already known."""
    alpha = np.asarray(alpha)
    values = np.asarray(evaluate(z) if y is None else y, dtype=np.float64)
    values = values.reshape(len(values), -1)
    gram, phi_y, y_sq = normal_equations(z, values, alpha, basis)
    lam = default_ridge(gram) if ridge is None else float(ridge)
    coef = solve_ridge(gram, phi_y, lam).T
    return SpectralFit(alpha=alpha, coef=np.ascontiguousarray(coef), basis=basis, method="least_squares",
                       n_evaluations=len(z), ridge=lam, gram=gram, phi_y=phi_y, y_sq=y_sq)


# ------------------------------------------------------------------------------------------- sparsify
def energy_mask(coef: np.ndarray, gamma: np.ndarray, fraction: float = 0.99) -> np.ndarray:
    """Per output, the smallest set of terms holding >= ``fraction`` of the variance sum c^2 gamma over
    non-constant terms, plus the constant term (spec B3.4 "energy99"). Returns a (K, L) boolean mask."""
    energy = coef**2 * gamma[None, :]
    energy[:, 0] = 0.0  # row 0 is the constant term: always kept, never counted
    mask = np.zeros(coef.shape, dtype=bool)
    mask[:, 0] = True
    for k in range(coef.shape[0]):
        order = np.argsort(-energy[k])
        total = energy[k].sum()
        if total <= 0:
            continue
        need = int(np.searchsorted(np.cumsum(energy[k, order]) / total, fraction - 1e-12) + 1)
        mask[k, order[: min(need, len(order))]] = True
    return mask


def omp_bic(fit: SpectralFit, max_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal matching pursuit on the normal equations, with the number of terms chosen by BIC
    (spec B3.2 sparse option). Needs a least-squares fit (it reuses Phi^T Phi). Returns (coef, mask)."""
    from sklearn.linear_model import orthogonal_mp_gram

    if fit.gram is None or fit.phi_y is None or fit.y_sq is None:
        raise ValueError("OMP needs the normal equations of a least-squares fit")
    M = fit.n_evaluations
    scale = 1.0 / np.sqrt(np.maximum(np.diag(fit.gram), 1e-300))
    gram_n = fit.gram * scale[:, None] * scale[None, :]
    coef = np.zeros_like(fit.coef)
    for k in range(fit.coef.shape[0]):
        xy = fit.phi_y[:, k] * scale
        n_max = int(min(max_terms, len(gram_n), max(1, M - 1)))
        with warnings.catch_warnings():  # "ended prematurely": the residual reached zero (exact fit)
            warnings.simplefilter("ignore", RuntimeWarning)
            path = orthogonal_mp_gram(gram_n, xy, n_nonzero_coefs=n_max, norms_squared=[fit.y_sq[k]],
                                      return_path=True, copy_Gram=True, copy_Xy=True)
        path = np.asarray(path).reshape(len(gram_n), -1)
        best, best_bic = None, np.inf
        for j in range(path.shape[1]):
            c = path[:, j]
            sse = max(float(fit.y_sq[k] - 2 * c @ xy + c @ gram_n @ c), 1e-300 * max(1.0, fit.y_sq[k]))
            bic = M * np.log(sse / M) + np.count_nonzero(c) * np.log(M)
            if bic < best_bic:
                best, best_bic = c, bic
        coef[k] = (best if best is not None else 0.0) * scale
    return coef, coef != 0


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
def r2_per_output(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """R^2 = 1 - SSE/SST per output column (1 when both SSE and SST are 0; -inf-safe)."""
    sse = ((y - y_hat) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst
    return np.where(sst > 0, r2, np.where(sse <= 1e-24 * max(1.0, float(len(y))), 1.0, 0.0))


@dataclass
class Fidelity:
    r2: np.ndarray  # (K,)
    rmse: np.ndarray  # (K,)
    max_abs_error: np.ndarray  # (K,)
    agreement: float | None  # argmax agreement (None for a single output)
    n_points: int

    def summary(self) -> dict[str, float]:
        out = {"r2": float(np.mean(self.r2)), "r2_min": float(np.min(self.r2)), "rmse": float(np.mean(self.rmse)),
               "max_abs_error": float(np.max(self.max_abs_error)), "n_points": float(self.n_points)}
        if self.agreement is not None:
            out["agreement"] = float(self.agreement)
        return out


def fidelity(y: np.ndarray, y_hat: np.ndarray) -> Fidelity:
    """R^2, RMSE, max |error| per output, and how often argmax of the surrogate equals the network's."""
    err = y_hat - y
    agreement = float(np.mean(y.argmax(axis=1) == y_hat.argmax(axis=1))) if y.shape[1] > 1 else None
    return Fidelity(r2=r2_per_output(y, y_hat), rmse=np.sqrt((err**2).mean(axis=0)),
                    max_abs_error=np.abs(err).max(axis=0), agreement=agreement, n_points=len(y))


def truncation_r2(z: np.ndarray, y: np.ndarray, alpha: np.ndarray, coef: np.ndarray, basis: BasisName) -> np.ndarray:
    """R^2 of the degree-<=k truncation for k = 1..p: (K, p) (spec B3.5). Column 0 is the strictly linear
    surrogate R2 of B3.4."""
    deg = np.asarray(alpha, dtype=np.int64).sum(axis=1)
    p = int(deg.max(initial=0))
    plan = TermPlan.from_alpha(alpha, p)
    step = _chunk_rows(len(alpha))
    partial = np.zeros((p, *y.shape))  # predictions of each degree-k block, k = 1..p (constant added below)
    const = np.zeros(y.shape)
    for i in range(0, len(z), step):
        phi = design_matrix(z[i : i + step], alpha, basis, plan)
        const[i : i + step] = phi[:, deg == 0] @ coef[:, deg == 0].T
        for k in range(1, p + 1):
            partial[k - 1, i : i + step] = phi[:, deg == k] @ coef[:, deg == k].T
    cumulative = const[None] + np.cumsum(partial, axis=0)
    return np.stack([r2_per_output(y, cumulative[k]) for k in range(p)], axis=1)
