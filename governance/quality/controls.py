"""Controls for headline figures, shared by every method (the record itself, :class:`~governance.Control`, is part
of the contract: :mod:`governance.contract.evidence`).

A figure is evidence only if it beats the same figure computed where there is nothing to find. For attribution
maps scored by the deletion/insertion game (:func:`~governance.quality.deletion_insertion`) this module builds
two kinds of control, generic over the attribution method:

* **random attributions**: i.i.d. Gaussian maps of the inputs' shape, several draws (:func:`random_maps`);
* **randomised model**: the same method run on deep copies of the model with its weights randomised, full and
  cascading from the top layer (Adebayo et al. 2018; :func:`~governance.quality.randomised_models`), the maps
  then scored on the real model.

:func:`deletion_insertion_controls` turns the games into :class:`Control` records, and
:func:`record_controls` adds them to an :class:`~governance.Explanation`. The margin a figure must beat each
control by is :func:`control_margin`: ``k`` standard deviations of the control's draws, but never less than a
share of the model's output span on these curves, nor than an absolute floor in probability units, so that a
model whose class probability barely moves (an untrained network) cannot pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from governance.contract.evidence import Control

#: default margin rule for deletion/insertion AUCs (probability units, in [0, 1])
K_SPREAD = 2.0
SPAN_SHARE = 0.05
ABS_FLOOR = 0.02


def spread_margin(control_draws: Iterable[float], *, k: float = 2.0, floor: float = 0.0) -> tuple[float, float, str]:
    """``(mean, margin, rule)`` for a control measured over several draws (seeds, random models): the figure
    must beat the control's mean by ``k`` standard deviations of the draws, and by at least ``floor``."""
    vals = _finite(control_draws)
    if not vals:
        return float("nan"), float(floor), f"no finite control draw; margin {floor:g}"
    mean = sum(vals) / len(vals)
    sd = _sd(vals)
    margin = max(k * sd, floor)
    rule = f"max({k:g} x sd of {len(vals)} control draw(s) = {k * sd:.3g}, floor {floor:g})"
    return mean, margin, rule


def control_margin(spread: float, span: float, *, draws: int, k: float = K_SPREAD, span_share: float = SPAN_SHARE,
                   floor: float = ABS_FLOOR, spread_of: str = "control draws") -> tuple[float, str]:
    """``(margin, rule)`` for an AUC figure against a control: ``max(k * spread, span_share * span, floor)``.

    ``spread`` is the standard deviation of the control's draws (the noise a single comparison carries);
    ``span`` the model's output span on these curves (:func:`output_span`): a figure cannot beat any control
    by more than the span, so a model whose class probability moves less than ``floor`` fails every control.
    """
    parts = [(k * spread if math.isfinite(spread) else 0.0, f"{k:g} x sd of {draws} {spread_of} = {{:.3g}}"),
             (span_share * span if math.isfinite(span) else 0.0,
              f"{span_share:.0%} of the model's output span {span:.3g} = {{:.3g}}"),
             (floor, "absolute floor {:.3g}")]
    margin = max(v for v, _ in parts)
    rule = "max(" + ", ".join(text.format(v) for v, text in parts) + ")"
    return margin, rule


def random_maps(shape: Sequence[int], draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``draws`` i.i.d. standard-normal attribution maps of ``shape``: random rankings, without ties."""
    return [rng.standard_normal(tuple(shape)) for _ in range(int(draws))]


def output_span(games: Iterable[Any]) -> float:
    """Mean over inputs of how far the target-class probability moves across all the given games' curves
    (max − min of every deletion and insertion point of that input)."""
    curves = [np.concatenate([g.deletion, g.insertion], axis=1) for g in games]
    if not curves:
        return float("nan")
    allc = np.concatenate(curves, axis=1)
    return float(np.mean(allc.max(axis=1) - allc.min(axis=1)))


@dataclass
class RandomisedGame:
    """The deletion/insertion game of one method's maps from one randomised copy of the model."""

    mode: str  # "full" | "cascading"
    label: str  # what was randomised, in words
    game: Any  # DeletionInsertion


_FIGURES = (("deletion_auc", "mean_deletion_auc", "lower", "deletion AUC"),
            ("insertion_auc", "mean_insertion_auc", "higher", "insertion AUC"))


def deletion_insertion_controls(figure: Any, *, random: Sequence[Any], randomised: Sequence[RandomisedGame] = (),
                                prefix: str = "", method_label: str = "", k: float = K_SPREAD,
                                span_share: float = SPAN_SHARE, floor: float = ABS_FLOOR) -> list[Control]:
    """Controls for a method's deletion and insertion AUCs (metrics ``<prefix>deletion_auc`` and
    ``<prefix>insertion_auc``).

    ``figure`` is the method's own :class:`~governance.quality.DeletionInsertion`; ``random`` the games of
    :func:`random_maps` on the same inputs, model and substrate; ``randomised`` the games of the method's maps
    from randomised copies of the model, scored on the real model. Keys: ``random``, ``randomised_model``
    (full randomisation, mean over draws) and ``cascading`` (the cascading step that comes closest to the
    figure; its noise allowance is the random draws' spread, as a cascade has one draw per step).
    """
    span = output_span([figure, *random, *(r.game for r in randomised)])
    rule = dict(span=span, k=k, span_share=span_share, floor=floor)
    full = [r for r in randomised if r.mode == "full"]
    cascade = [r for r in randomised if r.mode == "cascading"]
    out: list[Control] = []
    for metric, attr, better, words in _FIGURES:
        fig = dict(metric=prefix + metric, value=getattr(figure, attr), better=better,
                   label=f"{method_label} {words}".strip())
        rand = [getattr(g, attr) for g in random]
        if rand:
            margin, text = control_margin(_sd(rand), draws=len(rand), spread_of="random draws", **rule)
            out.append(Control(**fig, control_value=_mean(rand), key="random", margin=margin, margin_rule=text,
                               control=f"random attributions ({len(rand)} draws of i.i.d. Gaussian maps, same "
                                       "inputs and game)", control_spread=_sd(rand), draws=len(rand)))
        if full:
            vals = [getattr(r.game, attr) for r in full]
            own = len(vals) > 1  # a single randomised copy has no spread of its own: use the random draws'
            margin, text = control_margin(_sd(vals) if own else _sd(rand), draws=len(vals) if own else len(rand),
                                          spread_of="randomised models" if own else "random draws", **rule)
            out.append(Control(**fig, control_value=_mean(vals), key="randomised_model", margin=margin,
                               margin_rule=text, control_spread=_sd(vals) if own else None, draws=len(vals),
                               control=f"the same method on {len(vals)} cop{'ies' if own else 'y'} of the model "
                                       "with every layer's weights randomised, its maps scored on the real model "
                                       "(Adebayo et al. 2018)"))
        if cascade:
            vals = [getattr(r.game, attr) for r in cascade]
            margin, text = control_margin(_sd(rand), draws=len(rand), spread_of="random draws", **rule)
            out.append(Control(**fig, control_value=min(vals) if better == "lower" else max(vals), key="cascading",
                               margin=margin, margin_rule=text, draws=len(vals),
                               control=f"the same method on the model randomised layer by layer from the top "
                                       f"({len(vals)} steps; the step that comes closest to the figure)",
                               note="; ".join(f"{r.label}: {v:.3f}" for r, v in zip(cascade, vals))))
    return out


def record_controls(explanation: Any, controls: Iterable[Control]) -> list[Control]:
    """Add each control to ``explanation`` through :meth:`~governance.Explanation.add_control`. The figure's value
    is read from ``explanation.metrics`` (a KeyError names a figure that is not one of its metrics), so the
    verdict is about exactly the number that is logged; returns the recorded controls."""
    return [explanation.add_control(c.metric, c.control_value, key=c.key, control=c.control, better=c.better,
                                    margin=c.margin, margin_rule=c.margin_rule, control_spread=c.control_spread,
                                    draws=c.draws, label=c.label, note=c.note) for c in controls]


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: Iterable[Any]) -> float:
    vals = _finite(values)
    return sum(vals) / len(vals) if vals else float("nan")


def _sd(values: Iterable[Any]) -> float:
    vals = _finite(values)
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
