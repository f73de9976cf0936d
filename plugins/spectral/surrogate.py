"""The fitted surrogate: coefficients from the fit, optionally sparsified (spec B3.2, B3.4), with every fallback
taken on the way kept as a note for the explanation's warnings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from governance.errors import MethodError

from governance_plugins.spectral import fit as F
from governance_plugins.spectral.problem import Problem, fit


@dataclass
class Surrogate:
    """Coefficients ``coef[k, n]`` (after sparsification) of output k on basis function ``alpha[n]``."""

    fit: F.SpectralFit
    coef: np.ndarray  # (K, L), zeros where sparsification dropped a term
    fit_seconds: float
    notes: list[str] = field(default_factory=list)  # fallbacks, for the warnings

    @property
    def alpha(self) -> np.ndarray:
        return self.fit.alpha

    @property
    def gamma(self) -> np.ndarray:
        return self.fit.gamma

    @property
    def coef_full(self) -> np.ndarray:
        return self.fit.coef

    @property
    def kept(self) -> np.ndarray:
        kept = self.coef != 0
        kept[:, 0] = True
        return kept

    def predict(self, z: np.ndarray) -> np.ndarray:
        return F.predict(z, self.alpha, self.coef, self.fit.basis)


def build_surrogate(problem: Problem, output_names: list[str] | None = None,
                    same_points_as: F.SpectralFit | None = None) -> Surrogate:
    """Fit the coefficients and apply the configured sparsification (``same_points_as``: see :func:`fit`)."""
    cfg = problem.cfg
    t0 = time.perf_counter()
    result = fit(problem, same_points_as)
    seconds = time.perf_counter() - t0
    notes = list(result.notes)
    if cfg.sparsify == "energy":
        coef = np.where(F.energy_mask(result.coef, result.gamma, cfg.energy_fraction), result.coef, 0.0)
    elif cfg.sparsify == "omp":
        if result.gram is None:
            raise MethodError("sparsify='omp' needs a least-squares fit, but the coefficients came from quadrature",
                              hint="set coefficients='least_squares' or use sparsify='energy'")
        sparse = F.omp_bic(result, cfg.omp_max_terms)
        coef = sparse.coef
        if sparse.empty_outputs:
            K = result.coef.shape[0]
            names = output_names if output_names and len(output_names) == K else [f"output {k}" for k in range(K)]
            shown = ", ".join(names[k] for k in sparse.empty_outputs)
            notes.append(f"OMP selected no term for {shown}: on the fit points no basis function explains its output "
                         "better than predicting 0 (BIC), so its sparse surrogate is the constant 0. Use "
                         "sparsify='off' or 'energy' for a dense fit of that output.")
    else:
        coef = result.coef
    return Surrogate(fit=result, coef=np.ascontiguousarray(coef), fit_seconds=seconds, notes=notes)
