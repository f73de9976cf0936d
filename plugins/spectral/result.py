"""Everything one explain call computed, in one place, so the report code takes one argument instead of dozens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance_plugins.spectral import fit as F
from governance_plugins.spectral.config import SpectralConfig
from governance_plugins.spectral.controls import RandomisedControl
from governance_plugins.spectral.problem import Problem
from governance_plugins.spectral.readable import ReadableFormula
from governance_plugins.spectral.scoring import PointSet, Scores
from governance_plugins.spectral.surrogate import Surrogate


@dataclass
class Analysis:
    """Spectrum and variance decomposition of the surrogate (spec B3.3), and which outputs are shown. Outputs that
    are constant on the held-out points have no variance to share out: their spectra are float noise, so they are
    left out of every share (and their R² is undefined)."""

    spectrum: np.ndarray  # (K, p + 1) energy per total degree
    vd: F.VarianceDecomposition
    out_names: list[str]
    shown: list[int]
    constant: np.ndarray  # (K,) bool

    @classmethod
    def of(cls, surrogate: Surrogate, out_names: list[str], shown: list[int], constant: np.ndarray) -> "Analysis":
        coef, alpha, gamma = surrogate.coef, surrogate.alpha, surrogate.gamma
        return cls(F.spectrum_by_degree(coef, alpha, gamma), F.variance_decomposition(coef, alpha, gamma),
                   out_names, shown, np.asarray(constant, dtype=bool))

    @property
    def pooled(self) -> list[int]:
        """The shown outputs that vary: the ones whose shares are pooled."""
        return [k for k in self.shown if not self.constant[k]]

    @property
    def linear_share(self) -> np.ndarray:
        """(K,) share of each output's variance at degree 1; nan for a constant output."""
        v = self.vd.variance
        share = np.where(v > 0, self.spectrum[:, 1] / np.where(v > 0, v, 1.0), np.nan)
        return np.where(self.constant, np.nan, share)

    @property
    def energy_coord(self) -> np.ndarray:
        """Per coordinate, variance carried (total index x variance), pooled over the shown varying outputs."""
        return self.vd.feature_energy[self.pooled].sum(axis=0)

    @property
    def main_coord(self) -> np.ndarray:
        return self.vd.main_energy[self.pooled].sum(axis=0)

    @property
    def total_var(self) -> float:
        return float(self.vd.variance[self.pooled].sum())


@dataclass
class FormulaScores:
    """R^2 of each printed formula (one per shown output) against the network."""

    heldout: np.ndarray  # (n_shown,)
    data: np.ndarray

    @classmethod
    def of(cls, formulas: list[ReadableFormula], scores: Scores) -> "FormulaScores":
        def r2(points: PointSet) -> np.ndarray:
            return np.array([F.r2_per_output(points.y[:, [f.index]], f.evaluate(points.U)[:, None])[0]
                             for f in formulas])

        return cls(r2(scores.heldout), r2(scores.data))


@dataclass
class Result:
    cfg: SpectralConfig
    problem: Problem
    surrogate: Surrogate
    scores: Scores
    randomised: RandomisedControl
    analysis: Analysis
    formulas: list[ReadableFormula]
    formula_scores: FormulaScores
    n_evaluations: int  # every model evaluation of the call (fit, screen, scoring, controls)
    output_words: str  # "logits", "raw outputs", "softmax probabilities", ...
    regression: bool = False  # the model is a regressor: the surrogate explains the predicted value
