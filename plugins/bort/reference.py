"""The random reference every Bort figure is judged against: weights of the same shapes, drawn like torch's default
initialisation, over several seeds, with a tolerance band.

An absolute threshold cannot tell "bounded-orthogonal" from "untrained": D_orth of random weights depends on the
shapes alone (0.18 for a 1024-32-10 MLP, 0.70 for a 64-32-16-10 one, 0.45 for a small CNN), so a fixed 0.25 calls
an untrained wide MLP "near bounded-orthogonal". Every verdict here is relative instead:

* the reference is the mean of the same figure over ``draws`` random weight sets (different seeds);
* the tolerance band is the larger of the 99.9 % prediction interval for one more random draw (``t * sd *
  sqrt(1 + 1/n)`` with Student's t for ``n - 1`` degrees of freedom, so few draws widen it instead of
  under-estimating the spread) and 10 % of the mean: another seed of the same random architecture falls inside it
  so it is "within the band", never "closer" or "further". Small layers, whose D_orth varies most between seeds
  (sd 0.075 for a 10x16 weight, 0.003 for 128x576), get 50 draws for their own band, since a few draws can
  under-estimate a spread (measured on untrained 64-32-16-10 MLPs: 6 of 120 layers outside ``3 sd`` of 5 draws,
  2 of 360 outside the prediction interval of 10, 0 of 360 with 50 draws for the small layers);
* a figure is *closer* to bounded-orthogonal than random weights when it is below ``mean - band``, *further* when
  above ``mean + band``, and *near bounded-orthogonal* when it is also at most ``near_fraction`` of the mean.

The reconstruction evidence asks a one-sided question (is the figure better than its control?), so its figures
must clear a one-sided 99 % prediction bound of the control's draws (``EVIDENCE_CONFIDENCE``), also at least 10 %
of the control's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from governance.quality import spread_margin
from governance_plugins.bort.audit import LayerAudit, Split, audit_matrix, summarize
from governance_plugins.bort.layers import LayerWeight

#: the band is this prediction interval for one more random draw ...
BAND_CONFIDENCE = 0.999
#: ... and at least this share of the reference mean
BAND_FLOOR = 0.10
#: evidence figures (trace-back, saliency) beat their controls beyond this one-sided prediction bound
EVIDENCE_CONFIDENCE = 0.99
#: random weight sets drawn before drawing may stop early
MIN_DRAWS = 5
#: the summary figures whose bands decide when enough sets are drawn
FIGURES = ("d_orth_constrained_mean", "d_abs_constrained_mean", "d_orth_mean", "fraction_within_bounds_constrained")
#: small layers, whose D_orth varies most from seed to seed, get this many draws for their own band ...
LAYER_DRAWS = 50
#: ... when one draw costs at most this many multiply-adds (m * n * min(m, n)); a whole model this cheap gets
#: ``LAYER_DRAWS`` full draws (for its summary figures too)
CHEAP_LAYER = 2_000_000
CHEAP_MODEL = 20_000_000


def band_factor(n: int, confidence: float = BAND_CONFIDENCE, sides: int = 2) -> float:
    """Half-width of the ``confidence`` prediction interval of one more draw (two-sided, or a one-sided bound), in
    units of the sample standard deviation of ``n`` draws: ``t_{n-1} * sqrt(1 + 1/n)``."""
    if n < 2:
        return 0.0
    from scipy.special import stdtrit  # Student's t quantile (lighter to import than scipy.stats)

    q = 0.5 + confidence / 2 if sides == 2 else confidence
    return float(stdtrit(n - 1, q) * math.sqrt(1.0 + 1.0 / n))


Position = Literal["closer", "within", "further"]


@dataclass(frozen=True)
class Band:
    """A control figure measured over random draws, and the margin a figure must clear to differ from it."""

    mean: float
    sd: float
    margin: float
    rule: str
    draws: int

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = BAND_CONFIDENCE, sides: int = 2) -> "Band":
        """The band of ``values`` (the control's draws): a ``confidence`` prediction interval of one more draw
        (``sides=1``: a one-sided bound, for "is the figure better than the control"), at least ``BAND_FLOOR`` of
        the mean."""
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        centre = float(np.mean(vals)) if vals else math.nan
        floor = BAND_FLOOR * abs(centre) if vals else 0.0
        k = band_factor(len(vals), confidence, sides)
        mean, margin, _ = spread_margin(vals, k=k, floor=floor)
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        kind = "prediction interval" if sides == 2 else "one-sided prediction bound"
        rule = (f"max({confidence:.1%} {kind} of one more draw from {len(vals)} draws = {k:.3g} sd = {k * sd:.3g}, "
                f"{BAND_FLOOR:.0%} of their mean = {floor:.3g})")
        return cls(mean=mean, sd=sd, margin=float(margin), rule=rule, draws=len(vals))

    def position(self, value: float, better: Literal["lower", "higher"] = "lower") -> Position:
        """Where ``value`` sits against the band, in the figure's own direction."""
        if not (math.isfinite(value) and math.isfinite(self.mean)):
            return "within"
        advantage = (self.mean - value) if better == "lower" else (value - self.mean)
        if advantage > self.margin:
            return "closer"
        if advantage < -self.margin:
            return "further"
        return "within"


def _cost(layer: LayerWeight) -> int:
    m, n = layer.matrix.shape
    return m * n * min(m, n)


def draw_seeds(seed: int, draws: int) -> list[int]:
    """``draws`` independent seeds derived from the run seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(int(seed)).spawn(draws)]


def random_matrices(layers: Sequence[LayerWeight], seed: int) -> Iterator[np.ndarray]:
    """One random matrix per layer, shaped like the layer's ``m x n`` matrix and drawn like torch's default
    initialisation of Linear/Conv layers (uniform with bound ``1/sqrt(fan_in)``, ``fan_in = n``)."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        m, n = layer.matrix.shape
        yield rng.uniform(-1.0, 1.0, size=(m, n)) / math.sqrt(n)


@dataclass
class RandomReference:
    """The audit of ``len(seeds)`` random weight sets of the model's shapes."""

    seeds: list[int]
    audits: list[list[LayerAudit]]  # one list of layer audits per draw
    split: Split
    extra: dict[int, list[float]] = field(default_factory=dict)  # more D_orth draws of small layers

    @classmethod
    def build(cls, layers: Sequence[LayerWeight], split: Split, *, seed: int, draws: int, amplitude: float,
              row_tolerance: float) -> "RandomReference":
        """Up to ``draws`` random weight sets (``LAYER_DRAWS`` for a cheap model; at least ``MIN_DRAWS``): drawing
        stops early once the band of every summary figure is set by its floor (its spread term is below half the
        floor), which is where large models, whose D_orth hardly varies between seeds, end. Float32 Gram matrices:
        ample for random weights."""
        if sum(_cost(layer) for layer in layers) <= CHEAP_MODEL:
            draws = max(draws, LAYER_DRAWS)
        seeds = draw_seeds(seed, draws + 1)
        ref = cls(seeds=[], audits=[], split=split)
        for s in seeds[:-1]:
            ref.seeds.append(s)
            ref.audits.append([audit_matrix(W, name=layer.name, kind=layer.kind, shape=layer.shape,
                                            amplitude=amplitude, row_tolerance=row_tolerance, dtype=np.float32)
                               for layer, W in zip(layers, random_matrices(layers, s))])
            if len(ref.seeds) >= min(MIN_DRAWS, draws) and ref._floor_bound():
                break
        cheap = [i for i, layer in enumerate(layers) if _cost(layer) <= CHEAP_LAYER]
        ref.extra = {i: [] for i in cheap}
        rng = np.random.default_rng(seeds[-1])
        for _ in range(max(0, LAYER_DRAWS - len(ref.seeds))):
            for i in cheap:
                m, n = layers[i].matrix.shape
                W = rng.uniform(-1.0, 1.0, size=(m, n)) / math.sqrt(n)
                ref.extra[i].append(audit_matrix(W, dtype=np.float32).d_orth)
        return ref

    def _floor_bound(self) -> bool:
        summaries = self.summaries()
        for key in FIGURES:
            vals = [s[key] for s in summaries if key in s and math.isfinite(s[key])]
            if len(vals) > 1 and band_factor(len(vals)) * float(np.std(vals, ddof=1)) > 0.5 * BAND_FLOOR * abs(
                    float(np.mean(vals))):
                return False
        return True

    def summaries(self) -> list[dict[str, float]]:
        if len(getattr(self, "_summaries", [])) != len(self.audits):
            self._summaries = [summarize(a, self.split) for a in self.audits]
        return self._summaries

    def band(self, metric: str) -> Band:
        """The band of a summary figure (a key of :func:`~governance_plugins.bort.audit.summarize`); the
        classifier's D_orth is one layer's, so it takes that layer's band."""
        if metric == "d_orth_classifier" and self.split.classifier is not None:
            return self.layer_band(self.split.classifier)
        return Band.of([s.get(metric, math.nan) for s in self.summaries()])

    def layer_band(self, index: int) -> Band:
        """The band of one layer's D_orth (small layers: over ``LAYER_DRAWS`` draws)."""
        return Band.of([draw[index].d_orth for draw in self.audits] + self.extra.get(index, []))

    def describe(self) -> dict[str, Any]:
        return {"draws": len(self.seeds), "seeds": self.seeds, "band_confidence": BAND_CONFIDENCE,
                "band_factor": band_factor(len(self.seeds)), "band_floor": BAND_FLOOR,
                "init": "uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's default for Linear/Conv"}


def randomised_copy(module: Any, seed: int) -> Any:
    """A deep copy of a torch module (or ``torch.export`` graph) whose Linear/Conv weights and their biases are
    redrawn like torch's default initialisation: the same architecture, untrained. Everything else (batch-norm
    statistics, embeddings) is kept."""
    import copy

    import torch

    from governance_plugins.bort.layers import roles_from_torch

    clone = copy.deepcopy(module)
    roles = roles_from_torch(clone)
    params = dict(clone.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, role in roles.items():
            w = params.get(name)
            if role.kind not in ("linear", "conv") or w is None or w.ndim < 2:
                continue
            bound = 1.0 / math.sqrt(max(1, w[0].numel()))
            w.copy_((torch.rand(w.shape, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).to(w.dtype))
            bias = params.get(name[: -len("weight")] + "bias") if name.endswith("weight") else None
            if bias is not None:
                bias.copy_((torch.rand(bias.shape, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).to(bias.dtype))
    return clone
