"""Explanation-quality metrics shared by every attribution method, so all methods are measured alike.

Each metric is generic over an attribution function; nothing here knows a particular method.

* :func:`deletion_insertion`: the causal deletion and insertion games with their AUCs
  (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018).
* :func:`max_sensitivity`: the largest change of an explanation under small input perturbations
  (Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019).
* :func:`randomisation_sanity_check`: the model-parameter randomisation test
  (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018).
* :func:`seed_stability`: agreement of a stochastic explainer with itself across random seeds.

Conventions: ``X`` is a numpy batch ``(n, *sample_shape)``; attributions have the same shape; targets are
class indices ``(n,)``. An *attribution function* is ``attr_fn(X, targets) -> attributions`` (numpy in,
numpy out). Model outputs may be logits or probabilities (:func:`target_probabilities` tells them apart).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

AttributionFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
ModelFn = Callable[[np.ndarray], np.ndarray]

#: rows of perturbed inputs per model call are capped so one call holds at most this many input elements.
_ELEMENTS_PER_CALL = 1 << 24


# --------------------------------------------------------------------------------------------- helpers
def outputs_are_probabilities(outputs: np.ndarray, atol: float = 1e-4) -> bool:
    """True when every row is a probability vector (non-negative, sums to one): a model ending in softmax."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if out.shape[1] < 2 or not np.all(np.isfinite(out)):
        return False
    return bool(np.all(out >= -atol) and np.allclose(out.sum(axis=1), 1.0, atol=atol))


def target_probabilities(outputs: np.ndarray, targets: np.ndarray,
                         kind: Literal["auto", "logits", "probabilities"] = "auto") -> np.ndarray:
    """Probability of each row's target class. Logits go through a softmax; a single output column is a
    binary logit (class 1 = sigmoid). ``kind="auto"`` detects probability rows."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if out.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-out[:, 0]))
        return np.where(targets == 1, p1, 1.0 - p1)
    if kind == "probabilities" or (kind == "auto" and outputs_are_probabilities(out)):
        probs = out
    else:
        z = out - out.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs = e / e.sum(axis=1, keepdims=True)
    return probs[np.arange(len(out)), targets]


def _rank_rows(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation; NaN for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    num = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b`` (samples flattened).
    NaN where a row is constant (no ranking exists)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return _pearson_rows(_rank_rows(a), _rank_rows(b))


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return _pearson_rows(a, b)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.any(np.isfinite(x)) else float("nan")


# --------------------------------------------------------------------------------- deletion / insertion
@dataclass
class DeletionInsertion:
    """Curves and AUCs of the deletion and insertion games, one row per explained input."""

    fractions: np.ndarray  # (steps+1,) share of units removed / restored (counts / units, see step_counts)
    deletion: np.ndarray  # (n, steps+1) target-class probability while deleting
    insertion: np.ndarray  # (n, steps+1) target-class probability while inserting
    deletion_auc: np.ndarray  # (n,) lower is better
    insertion_auc: np.ndarray  # (n,) higher is better

    @property
    def mean_deletion_auc(self) -> float:
        return float(np.mean(self.deletion_auc))

    @property
    def mean_insertion_auc(self) -> float:
        return float(np.mean(self.insertion_auc))

    @property
    def mean_difference_auc(self) -> float:
        """AUC of insertion − deletion (the NeFLAG paper's headline score; higher is better)."""
        return float(np.mean(self.insertion_auc - self.deletion_auc))


def step_counts(n_units: int, steps: int) -> np.ndarray:
    """Units moved after each of ``steps`` equal steps: ``floor(k * n_units / steps)`` for k = 0..steps, in exact
    integer arithmetic. (Rounding the float shares instead made 30 features in 20 steps move 5, 11, 29 units
    where 4.5, 10.5, 28.5 were meant, depending on the last bit of ``k / steps``.) When units do not divide
    evenly the steps are unequal; the curves' x-axis is then the share actually moved, ``counts / n_units``."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (k * int(n_units)) // int(steps)


def _auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Normalised trapezoid (fractions run from 0 to 1)."""
    dx = np.diff(fractions)
    return ((curves[:, 1:] + curves[:, :-1]) * 0.5 * dx).sum(axis=1)


def deletion_insertion(
    model_fn: ModelFn,
    X: np.ndarray,
    attributions: np.ndarray,
    baseline: np.ndarray | float,
    target: np.ndarray | int,
    *,
    steps: int = 20,
    channel_axis: int | None = None,
    outputs: Literal["auto", "logits", "probabilities"] = "auto",
    rng: np.random.Generator | None = None,
) -> DeletionInsertion:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE's causal metric).

    Units (features, or pixels when ``channel_axis`` names the channel axis of one sample: then the
    attribution is summed over channels and a pixel is removed in every channel) are ranked by attribution,
    largest first; ties are broken at random. Deletion moves the top ``floor(k * units / steps)`` units to
    ``baseline`` (the substrate: zeros for images, feature means for tabular data); insertion starts from
    the baseline and restores them. The curve is the softmax probability of the target class; the AUC is
    the normalised trapezoid over the share in [0, 1]. All steps of all inputs go through ``model_fn`` in
    a few large batches.
    """
    X = np.asarray(X)
    A = np.asarray(attributions, dtype=np.float64)
    if A.shape != X.shape:
        raise ValueError(f"attributions {A.shape} must have the inputs' shape {X.shape}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    n = len(X)
    sample_shape = X.shape[1:]
    base = np.broadcast_to(np.asarray(baseline, dtype=X.dtype), sample_shape)
    targets = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    rng = rng if rng is not None else np.random.default_rng(0)

    if channel_axis is not None:
        score = A.sum(axis=1 + channel_axis)  # (n, *unit_shape)
        unit_shape = score.shape[1:]
    else:
        score = A
        unit_shape = sample_shape
    score = score.reshape(n, -1)
    n_units = score.shape[1]
    tiebreak = rng.random(score.shape)
    order = np.lexsort((tiebreak, -score), axis=1)  # last key is primary: highest score first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n_units)[None, :].repeat(n, 0), axis=1)

    counts = step_counts(n_units, steps)
    fractions = counts / n_units  # the share actually moved at each step (the AUC's x-axis)

    d = int(np.prod(sample_shape)) if sample_shape else 1
    rows_per_sample = 2 * (steps + 1)
    per_call = max(1, _ELEMENTS_PER_CALL // max(1, d * rows_per_sample))
    deletion = np.empty((n, steps + 1))
    insertion = np.empty((n, steps + 1))
    for lo in range(0, n, per_call):
        hi = min(n, lo + per_call)
        mask = ranks[lo:hi, None, :] < counts[None, :, None]  # (b, K, units): unit already moved
        mask = mask.reshape(hi - lo, steps + 1, *unit_shape)
        if channel_axis is not None:
            mask = np.expand_dims(mask, axis=2 + channel_axis)
        mask = np.broadcast_to(mask, (hi - lo, steps + 1, *sample_shape))
        x = X[lo:hi, None]
        deleted = np.where(mask, base, x)
        inserted = np.where(mask, x, base)
        batch = np.concatenate([deleted, inserted], axis=1).reshape(-1, *sample_shape).astype(X.dtype, copy=False)
        probs = target_probabilities(model_fn(batch), np.repeat(targets[lo:hi], rows_per_sample), outputs)
        probs = probs.reshape(hi - lo, 2, steps + 1)
        deletion[lo:hi] = probs[:, 0]
        insertion[lo:hi] = probs[:, 1]
    return DeletionInsertion(fractions, deletion, insertion, _auc(deletion, fractions), _auc(insertion, fractions))


# ------------------------------------------------------------------------------------- max-sensitivity
def max_sensitivity(
    attr_fn: AttributionFn,
    X: np.ndarray,
    targets: np.ndarray,
    *,
    radius: float,
    n_samples: int,
    rng: np.random.Generator,
    scale: np.ndarray | float | None = None,
    attributions: np.ndarray | None = None,
) -> np.ndarray:
    """Max-sensitivity of an explanation (Yeh et al. 2019), estimated by Monte Carlo, per input.

    ``max_j ‖Φ(x + δ_j) − Φ(x)‖ / ‖Φ(x)‖`` over ``n_samples`` perturbations ``δ_j`` drawn uniformly from the
    L∞ ball of ``radius`` (times ``scale`` per feature, e.g. the feature standard deviations of tabular
    data). Divided by ‖Φ(x)‖ (Captum's convention, with 0 norms read as 1) so that methods whose
    attributions live on different scales can be compared. All perturbed copies are explained in one
    ``attr_fn`` call. Lower is better.

    The batch ``attr_fn`` receives is perturbation-major: row ``j * n + i`` is a perturbed copy of input ``i``
    (:func:`perturbed_sources` gives ``i`` for every row). A stochastic explainer must explain each copy with
    the random numbers it used for input ``i`` itself (common random numbers); with fresh draws the figure
    measures its Monte-Carlo noise, not its sensitivity to the input (it stays large as ``radius`` -> 0).
    """
    X = np.asarray(X)
    targets = np.asarray(targets)
    if attributions is None:
        attributions = attr_fn(X, targets)
    base = np.asarray(attributions, dtype=np.float64).reshape(len(X), -1)
    delta = rng.uniform(-radius, radius, size=(n_samples, *X.shape))
    if scale is not None:
        delta = delta * np.asarray(scale)
    Xp = (X[None] + delta).astype(X.dtype).reshape(-1, *X.shape[1:])
    Ap = np.asarray(attr_fn(Xp, np.tile(targets, n_samples)), dtype=np.float64).reshape(n_samples, len(X), -1)
    norms = np.linalg.norm(base, axis=1)
    norms = np.where(norms > 0, norms, 1.0)
    return (np.linalg.norm(Ap - base[None], axis=2) / norms[None]).max(axis=0)


def perturbed_sources(n_inputs: int, n_samples: int) -> np.ndarray:
    """For each row of the batch :func:`max_sensitivity` explains, the index of the input it perturbs."""
    return np.tile(np.arange(n_inputs), n_samples)


# ---------------------------------------------------------------------------- randomisation sanity check
@dataclass
class RandomisationResult:
    """Rank agreement between attributions of the trained model and of randomised copies.

    ``spearman`` is per input (signed attributions); ``spearman_abs`` uses |attribution| as Adebayo et al.
    also report. For ``mode="cascading"``, ``layers`` lists the cumulative steps (top layer first) with
    their mean correlations; the headline values are those of the last (fully randomised) step.
    """

    mode: str
    spearman: np.ndarray
    spearman_abs: np.ndarray
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_spearman(self) -> float:
        return _nanmean(self.spearman)

    @property
    def mean_spearman_abs(self) -> float:
        return _nanmean(self.spearman_abs)


def _parameter_groups(module: Any) -> list[tuple[str, list[str]]]:
    """Floating-point parameters grouped by owning layer, in registration order (input to output).

    A module tree groups by owner (``4.weight`` and ``4.bias`` are layer ``4``). A flat list of parameters (the
    torch view of an ONNX graph holds its initialisers as ``p0, p1, ...``) groups by shape instead: a weight
    (2-D or more) starts a layer and the 1-D parameters after it (its bias, a norm's scale) join it, so that a
    cascade never randomises a bias alone (an output bias does not change any input gradient)."""
    named = [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
    if len(named) > 1 and all("." not in n for n, _ in named):
        flat: list[list[str]] = []
        for name, p in named:
            if p.ndim >= 2 or not flat:
                flat.append([name])
            else:
                flat[-1].append(name)
        return [("+".join(names), names) for names in flat]
    groups: dict[str, list[str]] = {}
    for name, _ in named:
        key = name.rsplit(".", 1)[0] if "." in name else name
        groups.setdefault(key, []).append(name)
    return list(groups.items())


def _shuffle_(tensor: Any, gen: Any) -> None:
    """Re-initialise in place by permuting the entries: the learned structure is destroyed while each
    tensor keeps its value distribution (so scales stay sane and variances stay positive)."""
    import torch

    flat = tensor.data.reshape(-1)
    perm = torch.randperm(flat.numel(), generator=gen).to(flat.device)
    tensor.data.copy_(flat[perm].reshape(tensor.shape))


@dataclass
class RandomisedModel:
    """A deep copy of a torch module with some of its layers' weights randomised (Adebayo et al. 2018).

    ``mode`` is ``"full"`` (every layer at once) or ``"cascading"`` (cumulatively from the output layer down);
    ``layers`` names the layer groups randomised so far, top first; ``label`` says it in words."""

    mode: str
    label: str
    layers: list[str]
    module: Any


def _cascade_checkpoints(n_groups: int, max_steps: int | None) -> list[int]:
    """How many top layer groups are randomised at each reported cascading step: every count 1..n, or at most
    ``max_steps`` of them spread evenly, always with the top layer alone first and all layers last."""
    if max_steps is None or n_groups <= max_steps:
        return list(range(1, n_groups + 1))
    if max_steps < 2:
        return [n_groups]
    return sorted({int(round(v)) for v in np.linspace(1, n_groups, max_steps)})


def randomised_models(module: Any, *, mode: Literal["full", "cascading"] = "full", draws: int = 1, seed: int = 0,
                      max_steps: int | None = None) -> Iterator[RandomisedModel]:
    """Randomised deep copies of ``module`` (the user's model is never touched), one at a time.

    ``mode="full"``: ``draws`` copies, copy ``j`` with every layer randomised from seed ``seed + j``.
    ``mode="cascading"``: one copy randomised layer group by layer group from the output back to the input,
    yielded after each group (or at ``max_steps`` evenly spread checkpoints). Randomisation permutes each weight
    tensor's entries (see :func:`_shuffle_`). Each yielded module is a copy of its own: keeping it is safe."""
    import torch

    if mode not in ("full", "cascading"):
        raise ValueError(f"mode must be 'full' or 'cascading', not {mode!r}")
    if not _parameter_groups(module):
        raise ValueError("the module has no floating-point parameters to randomise")
    if mode == "full":
        for j in range(int(draws)):
            clone = copy.deepcopy(module)
            groups = _parameter_groups(clone)
            params = dict(clone.named_parameters())
            gen = torch.Generator().manual_seed(int(seed) + j)
            with torch.no_grad():
                for _, names in groups:
                    for name in names:
                        _shuffle_(params[name], gen)
            yield RandomisedModel("full", f"all layers randomised (seed {int(seed) + j})",
                                  [g for g, _ in reversed(groups)], clone)
        return
    clone = copy.deepcopy(module)
    top_first = list(reversed(_parameter_groups(clone)))
    params = dict(clone.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    done = 0
    for upto in _cascade_checkpoints(len(top_first), max_steps):
        with torch.no_grad():
            for _, names in top_first[done:upto]:
                for name in names:
                    _shuffle_(params[name], gen)
        done = upto
        layers = [g for g, _ in top_first[:upto]]
        label = (f"layers {', '.join(layers)} randomised (top first)" if upto < len(top_first)
                 else "all layers randomised (cascade complete)")
        yield RandomisedModel("cascading", label, layers, copy.deepcopy(clone))


def randomisation_sanity_check(
    module: Any,
    attr_fn: Callable[[Any, np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    targets: np.ndarray,
    *,
    mode: Literal["full", "cascading"] = "full",
    seed: int = 0,
    attributions: np.ndarray | None = None,
) -> RandomisationResult:
    """Model-parameter randomisation test (Adebayo et al. 2018).

    Works on deep COPIES of the torch module (see :func:`randomised_models`). ``attr_fn(module, X, targets)``
    explains with the given module. ``mode="full"`` randomises every layer at once; ``"cascading"``
    randomises layer groups from the output back to the input, explaining after each. Low rank correlation
    with the trained model's attributions means the explanation depends on what the model learned: the
    method passes. High correlation means it would look the same for an untrained model.
    """
    X = np.asarray(X)
    targets = np.asarray(targets)
    if attributions is None:
        attributions = attr_fn(module, X, targets)
    ref = np.asarray(attributions, dtype=np.float64)
    layers: list[dict[str, Any]] = []
    rho = rho_abs = np.full(len(X), np.nan)
    for rm in randomised_models(module, mode=mode, seed=seed):
        got = np.asarray(attr_fn(rm.module, X, targets), dtype=np.float64)
        rho = spearman_rows(ref, got)
        rho_abs = spearman_rows(np.abs(ref), np.abs(got))
        if mode == "cascading":
            layers.append({"layer": rm.layers[-1], "spearman": _nanmean(rho), "spearman_abs": _nanmean(rho_abs)})
    return RandomisationResult(mode, rho, rho_abs, layers)


# ---------------------------------------------------------------------------------------- seed stability
@dataclass
class SeedStability:
    """Mean pairwise agreement of attributions computed with different seeds, per input."""

    seeds: list[int]
    spearman: np.ndarray
    pearson: np.ndarray

    @property
    def mean_spearman(self) -> float:
        return _nanmean(self.spearman)

    @property
    def mean_pearson(self) -> float:
        return _nanmean(self.pearson)


def seed_stability(
    attr_fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    X: np.ndarray,
    targets: np.ndarray,
    seeds: Sequence[int],
) -> SeedStability:
    """Explain ``X`` once per seed (``attr_fn(X, targets, seed)``) and average the Spearman and Pearson
    correlations over all seed pairs. 1 means the seed does not matter; a deterministic method scores 1."""
    if len(seeds) < 2:
        raise ValueError("seed stability needs at least two seeds")
    runs = [np.asarray(attr_fn(np.asarray(X), np.asarray(targets), int(s)), dtype=np.float64) for s in seeds]
    sp = [spearman_rows(a, b) for a, b in itertools.combinations(runs, 2)]
    pe = [pearson_rows(a, b) for a, b in itertools.combinations(runs, 2)]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return SeedStability([int(s) for s in seeds], np.nanmean(np.stack(sp), axis=0),
                                 np.nanmean(np.stack(pe), axis=0))
