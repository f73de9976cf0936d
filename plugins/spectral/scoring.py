"""Fidelity of the surrogate to the network on points it was not fitted on (spec B3.5): fresh points of the box
(the basis measure) and dataset rows, with the degree-<=k truncations scored on the same points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance import MethodContext

from governance_plugins.spectral import basis as B
from governance_plugins.spectral import fit as F
from governance_plugins.spectral.problem import Problem
from governance_plugins.spectral.surrogate import Surrogate


@dataclass
class PointSet:
    """One set of scored points: where they are, what the network and the truncated surrogates say there."""

    label: str
    z: np.ndarray  # (M, d) reference coordinates (dataset rows clipped to the box)
    U: np.ndarray  # (M, d) the same points in the coordinates' own units
    y: np.ndarray  # (M, K) the network
    truncations: np.ndarray  # (p + 1, M, K) surrogate truncated to degree <= k, k = 0..p

    @property
    def yhat(self) -> np.ndarray:
        return self.truncations[-1]

    @property
    def fidelity(self) -> F.Fidelity:
        return F.fidelity(self.y, self.yhat)

    def truncation_r2(self) -> np.ndarray:
        """(K, p): R^2 of the degree-<=k truncation, k = 1..p."""
        return np.stack([F.r2_per_output(self.y, t) for t in self.truncations[1:]], axis=1)

    def truncation_agreement(self) -> list[float | None]:
        return [F.agreement(self.y, t) for t in self.truncations[1:]]


@dataclass
class Scores:
    heldout: PointSet
    data: PointSet
    rows: np.ndarray  # dataset rows scored
    outside: np.ndarray  # (len(rows),) rows outside the box in some coordinate (clipped)
    inside: F.Fidelity | None  # fidelity on the rows inside the box
    reduction: F.Fidelity | None  # the network on reconstructed rows vs on rows (reduced coordinates only)
    data_held_out: bool  # no scored row was used for the fit
    n_evaluations: int  # model evaluations spent here


def _points(label: str, z: np.ndarray, y: np.ndarray, problem: Problem, surrogate: Surrogate) -> PointSet:
    return PointSet(label=label, z=z, U=B.from_reference(z, problem.box), y=y,
                    truncations=F.truncation_predictions(z, surrogate.alpha, surrogate.coef, problem.cfg.basis))


def score(ctx: MethodContext, problem: Problem, surrogate: Surrogate) -> Scores:
    """Held-out box points from the basis measure and dataset rows not used for the fit."""
    cfg = problem.cfg
    z_test = F.sample_reference(cfg.n_test, problem.d, cfg.basis, ctx.rng)
    heldout = _points(f"held-out, {B.MEASURE[cfg.basis]}", z_test, problem.evaluate(z_test), problem, surrogate)
    n_rows = len(problem.X)
    pool = np.setdiff1d(np.arange(n_rows), problem.train_rows) if problem.train_rows is not None else np.arange(n_rows)
    if len(pool) < 10:  # sampling='data' used (nearly) every row for the fit: nothing is held out
        pool = np.arange(n_rows)
    rows = np.sort(ctx.rng.choice(pool, size=min(cfg.max_data_points, len(pool)), replace=False))
    U_data, box = problem.U[rows], problem.box
    outside = np.any((U_data < box[:, 0]) | (U_data > box[:, 1]), axis=1)
    y_data = problem.run_model(problem.X[rows])
    data = _points("dataset rows", np.clip(B.to_reference(U_data, box), -1.0, 1.0), y_data, problem, surrogate)
    inside = F.fidelity(y_data[~outside], data.yhat[~outside]) if (~outside).sum() >= 10 else None
    reduction = None
    if problem.reduction.kind != "none":  # how much of the network the chosen coordinates can see at all
        reduction = F.fidelity(y_data, problem.run_model(problem.reduction.decode(np.clip(U_data, box[:, 0], box[:, 1]))))
    held_out = problem.train_rows is None or not np.isin(rows, problem.train_rows).any()
    n_eval = len(z_test) + len(rows) * (2 if reduction is not None else 1)
    return Scores(heldout=heldout, data=data, rows=rows, outside=outside, inside=inside, reduction=reduction,
                  data_held_out=bool(held_out), n_evaluations=n_eval)
