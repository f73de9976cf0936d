"""Options of the spectral surrogate (defaults follow spec B3.6 of methods-specxai-neflag.md)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from governance import MethodConfig


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
    formula_share: float = Field(
        0.9, gt=0.0, le=1.0, description="the readable formula keeps the fewest terms that explain this share of "
        "the surrogate's variance on the box")
    formula_max_terms: int = Field(40, ge=1, description="longest readable formula printed (terms of the expansion)")
    randomised_control: bool = Field(
        True, description="fit the same surrogate to a copy of the network with permuted weights, as a control "
        "(needs a torch view of the model)")
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
