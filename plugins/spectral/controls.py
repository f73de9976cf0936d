"""Controls for the surrogate's headline figures (see governance.contract.evidence).

A fidelity figure says "this formula reproduces the network". It is evidence only if it beats surrogates that
know less: the best constant (or the majority class), the surrogate's own degree-1 truncation (is the
non-linear part worth having?), and the same surrogate fitted to the network with its weights randomised and
scored against this network (does the fit reflect what the network learned, or only the box and the
architecture?). The readable formula's fidelity is compared with formulas of as many terms drawn at random.

Margins: a figure must beat a control by more than twice the standard deviation of its advantage over paired
bootstrap resamples of the scored points (the comparison's own sampling error), and by at least a floor of 0.01
(1 % of the output variance, or 1 percentage point of class agreement).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np

from governance import Explanation, MethodContext
from governance.quality import spread_margin

from governance_plugins.spectral import fit as F
from governance_plugins.spectral.problem import Problem, RunModel, transform_outputs
from governance_plugins.spectral.readable import ReadableFormula
from governance_plugins.spectral.scoring import PointSet, Scores
from governance_plugins.spectral.surrogate import Surrogate, build_surrogate

BOOTSTRAP_DRAWS = 200
RANDOM_TERM_DRAWS = 20
FLOOR = 0.01
MARGIN_TEXT = ("A figure counts as informative when it beats a control by more than twice the standard deviation "
               f"of its advantage over {BOOTSTRAP_DRAWS} paired bootstrap resamples of the scored points (the "
               "sampling error of the comparison itself), and by at least 0.01 (1 % of the output variance, or one "
               "percentage point of class agreement): smaller gains change with another draw of test points. "
               f"Against formulas of randomly drawn terms ({RANDOM_TERM_DRAWS} draws) the margin is twice the "
               "spread of those draws, with the same floor.")

WORDS = {
    "mean": "the best constant predictor (the network's mean output on the same points; R² 0 by definition)",
    "majority": "always predicting the class the network predicts most often on the same points",
    "degree1": "the surrogate's own degree-1 truncation (the strictly linear formula)",
    "randomised_model": ("the same surrogate (same degree, coordinates, box and fit points) fitted to a copy of the "
                         "network whose weight entries were permuted within each tensor, scored against this network"),
    "random_terms": ("formulas with as many terms drawn at random from the surrogate's non-constant terms (exact "
                     "coefficients, not rounded)"),
}


# ------------------------------------------------------------------------------------------ randomised copy
def randomised_runner(ctx: MethodContext) -> tuple[RunModel | None, int, str | None]:
    """A forward pass of the network with every weight tensor's entries permuted (seeded), as flattened inputs
    -> transformed outputs; or (None, 0, why not) when the model has no torch view or no weights."""
    cfg, model = ctx.config, ctx.model
    if not cfg.randomised_control:  # type: ignore[attr-defined]
        return None, 0, "switched off (randomised_control=false)"
    try:
        module = model.torch_module()
    except Exception as exc:  # a broken torch view must not fail the explanation: the control is just missing
        return None, 0, f"building the model's torch view failed ({type(exc).__name__}: {exc})"
    if module is None:
        return None, 0, ("the model runs forward-only, so its weights cannot be randomised"
                         + (f" ({model.torch_unavailable_reason})" if model.torch_unavailable_reason else ""))
    import torch

    clone = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(int(ctx.seed))
    params = [p for p in clone.parameters() if p.is_floating_point() and p.numel() > 1]
    if not params:
        return None, 0, "the model's torch view has no weight tensors to randomise"
    with torch.no_grad():
        for p in params:
            flat = p.data.reshape(-1)
            p.data.copy_(flat[torch.randperm(flat.numel(), generator=gen).to(flat.device)].reshape(p.shape))
    device = params[0].device
    shape = tuple(ctx.data.sample_shape)

    def run(x_flat: np.ndarray) -> np.ndarray:
        x = model.check_input(np.asarray(x_flat).reshape(len(x_flat), *shape))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), cfg.batch_size):  # type: ignore[attr-defined]
                outs.append(clone(torch.from_numpy(np.ascontiguousarray(x[i : i + cfg.batch_size])).to(device))
                            .detach().cpu().numpy())
        return transform_outputs(np.concatenate(outs), cfg.output)  # type: ignore[attr-defined]

    return run, sum(p.numel() for p in params), None


@dataclass
class RandomisedControl:
    """The surrogate of the randomised network, and its predictions at the scored points."""

    surrogate: Surrogate | None
    heldout: np.ndarray | None
    data: np.ndarray | None
    reason: str | None  # why it was not computed
    n_evaluations: int = 0
    n_weights: int = 0  # weight entries permuted

    @property
    def linear_share(self) -> np.ndarray | None:
        if self.surrogate is None:
            return None
        spectrum = F.spectrum_by_degree(self.surrogate.coef, self.surrogate.alpha, self.surrogate.gamma)
        total = spectrum[:, 1:].sum(axis=1)
        return np.where(total > 0, spectrum[:, 1] / np.where(total > 0, total, 1.0), np.nan)


def randomised_control(ctx: MethodContext, problem: Problem, scores: Scores, trained: Surrogate) -> RandomisedControl:
    """The same surrogate (same points, so the factorised normal equations are reused) of the randomised copy."""
    run, n_weights, reason = randomised_runner(ctx)
    if run is None:
        return RandomisedControl(None, None, None, reason)
    surrogate = build_surrogate(problem.with_model(run), same_points_as=trained.fit)
    return RandomisedControl(surrogate, surrogate.predict(scores.heldout.z), surrogate.predict(scores.data.z), None,
                             surrogate.fit.n_evaluations, n_weights)


# ------------------------------------------------------------------------------------------ bootstrap
@dataclass
class Comparison:
    value: float
    control: float
    sd_advantage: float
    sd_control: float
    n_points: int


#: a statistic of the scored points, given resampling counts W (draws, n): one value per row of W
Statistic = Callable[[np.ndarray], np.ndarray]


def resample_counts(n: int, rng: np.random.Generator, draws: int = BOOTSTRAP_DRAWS) -> np.ndarray:
    """(draws, n): how often each of n points appears in each resample with replacement."""
    idx = rng.integers(0, n, size=(draws, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def paired_bootstrap(figure: Statistic, control: Statistic, counts: np.ndarray) -> Comparison:
    """Figure and control on all points, and the spread of (figure - control) and of the control over the
    resamples ``counts`` (the same resamples for both: a paired comparison). A resample is given as counts per
    point, so every statistic is a weighted sum (vectorised)."""
    every = np.ones((1, counts.shape[1]))
    f, c = figure(counts), control(counts)
    adv = (f - c)[np.isfinite(f - c)]
    c = c[np.isfinite(c)]
    return Comparison(float(figure(every)[0]), float(control(every)[0]),
                      float(adv.std(ddof=1)) if len(adv) > 1 else float("nan"),
                      float(c.std(ddof=1)) if len(c) > 1 else float("nan"), counts.shape[1])


def _mean_over_outputs(r2: np.ndarray) -> np.ndarray:
    """(draws, K) -> (draws,): mean over the outputs where R² is defined (all-nan rows give nan)."""
    finite = np.isfinite(r2)
    count = finite.sum(axis=1)
    return np.where(count > 0, np.where(finite, r2, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)


def _r2(y: np.ndarray, pred: np.ndarray) -> Statistic:
    """Mean R² over the outputs, on resampled points (undefined for outputs constant on the points)."""
    n, constant = len(y), F.constant_outputs(y)
    sq_err, y1, y2 = (y - pred) ** 2, y, y**2

    def stat(W: np.ndarray) -> np.ndarray:
        sse = W @ sq_err
        sst = W @ y2 - (W @ y1) ** 2 / n
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = 1.0 - sse / sst
        return _mean_over_outputs(np.where(constant[None, :] | ~(sst > 0), np.nan, r2))

    return stat


def _best_constant(y: np.ndarray) -> Statistic:
    """R² of predicting the mean of the (resampled) points: 0 wherever R² is defined."""
    constant = F.constant_outputs(y)
    return lambda W: _mean_over_outputs(np.where(constant[None, :], np.nan, np.zeros((len(W), y.shape[1]))))


def _agree(y: np.ndarray, pred: np.ndarray) -> Statistic:
    correct = (y.argmax(axis=1) == pred.argmax(axis=1)).astype(np.float64)
    return lambda W: W @ correct / len(y)


def _majority(y: np.ndarray) -> Statistic:
    onehot = np.eye(y.shape[1])[y.argmax(axis=1)]
    return lambda W: (W @ onehot).max(axis=1) / len(y)


def _record(explanation: Explanation, metric: str, key: str, cmp: Comparison, label: str) -> None:
    sd = cmp.sd_advantage if np.isfinite(cmp.sd_advantage) else 0.0
    margin = max(2.0 * sd, FLOOR)
    rule = (f"max(2 x SD of the advantage over {BOOTSTRAP_DRAWS} paired bootstrap resamples of the "
            f"{cmp.n_points:,} points = {2 * sd:.3g}, floor {FLOOR:g})")
    explanation.add_control(metric, cmp.control, key=key, control=WORDS[key], better="higher", margin=margin,
                            margin_rule=rule, control_spread=cmp.sd_control if np.isfinite(cmp.sd_control) else None,
                            draws=BOOTSTRAP_DRAWS, label=label, value=cmp.value)


# ------------------------------------------------------------------------------------------ the figures
def add_fidelity_controls(explanation: Explanation, scores: Scores, randomised: RandomisedControl, p: int,
                          rng: np.random.Generator) -> None:
    """Controls of r2_heldout, r2_data, agreement_heldout and agreement_data (those that exist)."""
    for points, where, random_pred in ((scores.heldout, "heldout", randomised.heldout),
                                       (scores.data, "data", randomised.data)):
        _point_controls(explanation, points, where, random_pred, p, rng)


def _point_controls(explanation: Explanation, points: PointSet, where: str, random_pred: np.ndarray | None, p: int,
                    rng: np.random.Generator) -> None:
    y, counts = points.y, resample_counts(len(points.y), rng)  # one set of resamples: every comparison is paired
    place = "held-out box points" if where == "heldout" else "dataset rows"
    figure = _r2(y, points.yhat)
    controls: list[tuple[str, Statistic]] = [("mean", _best_constant(y))]
    if p > 1:
        controls.append(("degree1", _r2(y, points.truncations[1])))
    if random_pred is not None:
        controls.append(("randomised_model", _r2(y, random_pred)))
    for key, control in controls:
        _record(explanation, f"r2_{where}", key, paired_bootstrap(figure, control, counts), f"surrogate R² on {place}")
    if y.shape[1] < 2:
        return
    figure = _agree(y, points.yhat)
    controls = [("majority", _majority(y))]
    if p > 1:
        controls.append(("degree1", _agree(y, points.truncations[1])))
    if random_pred is not None:
        controls.append(("randomised_model", _agree(y, random_pred)))
    for key, control in controls:
        _record(explanation, f"agreement_{where}", key, paired_bootstrap(figure, control, counts),
                f"class agreement on {place}")


def add_formula_controls(explanation: Explanation, formulas: list[ReadableFormula], scores: Scores,
                         surrogate: Surrogate, rng: np.random.Generator) -> None:
    """The printed formulas' R² against formulas of as many randomly drawn terms, on both point sets."""
    shown = [f.index for f in formulas]
    sizes = [len(f.terms) for f in formulas]
    L = surrogate.coef.shape[1]
    if L < 2 or not shown or not has_choice(formulas, surrogate):
        return
    for points, where in ((scores.heldout, "heldout"), (scores.data, "data")):
        metric = f"r2_formula_{where}"
        if metric not in explanation.metrics:
            continue
        draws = _random_terms_r2(points, surrogate, shown, sizes, rng)
        mean, margin, rule = spread_margin(draws, k=2.0, floor=FLOOR)
        spread = float(np.std(draws, ddof=1)) if np.isfinite(draws).sum() > 1 else None
        explanation.add_control(metric, mean, key="random_terms", control=WORDS["random_terms"], better="higher",
                                margin=margin, margin_rule=rule, control_spread=spread, draws=RANDOM_TERM_DRAWS,
                                label="readable formula R² on " + ("held-out box points" if where == "heldout"
                                                                   else "dataset rows"))


def has_choice(formulas: list[ReadableFormula], surrogate: Surrogate) -> bool:
    """Whether some formula leaves out a term of its surrogate: otherwise random terms are the same terms."""
    return any(len(f.terms) < np.count_nonzero(surrogate.coef[f.index, 1:]) for f in formulas)


def _random_terms_r2(points: PointSet, surrogate: Surrogate, shown: list[int], sizes: list[int],
                     rng: np.random.Generator) -> list[float]:
    """Mean R² over the shown outputs of formulas with as many random terms, one value per draw (all draws are
    evaluated in one pass over the design matrix)."""
    L = surrogate.coef.shape[1]
    coef = np.zeros((RANDOM_TERM_DRAWS, len(shown), L))
    for draw in range(RANDOM_TERM_DRAWS):
        for row, (k, size) in enumerate(zip(shown, sizes)):
            candidates = 1 + np.flatnonzero(surrogate.coef[k, 1:])  # the surrogate's own non-constant terms
            pick = rng.choice(candidates, size=min(size, len(candidates)), replace=False)
            coef[draw, row, 0] = surrogate.coef[k, 0]
            coef[draw, row, pick] = surrogate.coef[k, pick]
    pred = F.predict(points.z, surrogate.alpha, coef.reshape(-1, L), surrogate.fit.basis)
    pred = pred.reshape(len(points.z), RANDOM_TERM_DRAWS, len(shown))
    return [F.nanmean(F.r2_per_output(points.y[:, shown], pred[:, draw])) for draw in range(RANDOM_TERM_DRAWS)]
