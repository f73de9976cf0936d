"""Helpers for choosing a control's margin, shared by every method (see :mod:`governance.contract.evidence`)."""

from __future__ import annotations

import math
from typing import Iterable


def spread_margin(control_draws: Iterable[float], *, k: float = 2.0, floor: float = 0.0) -> tuple[float, float, str]:
    """``(mean, margin, rule)`` for a control measured over several draws (seeds, random models): the figure
    must beat the control's mean by ``k`` standard deviations of the draws, and by at least ``floor``."""
    vals = [float(v) for v in control_draws if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float(floor), f"no finite control draw; margin {floor:g}"
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    margin = max(k * sd, floor)
    rule = f"max({k:g} x sd of {len(vals)} control draw(s) = {k * sd:.3g}, floor {floor:g})"
    return mean, margin, rule
