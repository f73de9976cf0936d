"""A headline figure is evidence only if it beats a control: the same figure computed where there is nothing to
find (random attributions, a model with randomised weights, an untrained interpreter, a random reference of the
same shapes). A method records each such comparison as a :class:`Control` on its Explanation
(:meth:`governance.Explanation.add_control`); the host logs it as MLflow metrics
(``<method>.<metric>.control[.<key>]``, ``<method>.<metric>.informative``), the report prints it beside the figure
with its verdict, and a policy can require ``informative``.

The verdict is deliberately simple and explicit: the figure must be better than the control by more than
``margin`` in the figure's own direction (``better``). How the margin is chosen (a fixed share of the metric's
range, a multiple of the control's spread over draws) is the method's call and is printed with the verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

INFORMATIVE = "informative"
NOT_INFORMATIVE = "not informative"
_KEY = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class Control:
    """One headline figure compared with the same figure on a control.

    ``metric`` is the method's metric name (a key of ``Explanation.metrics``); ``key`` a short identifier of the
    control (``random``, ``randomised_model``, ``untrained``) used in metric names; ``control`` says in words
    what the control is. ``control_value`` is the control's figure (the mean when there are ``draws`` > 1, with
    their standard deviation in ``control_spread``). ``margin`` is the advantage over the control the figure
    needs to count as informative; ``margin_rule`` says how it was chosen.
    """

    metric: str
    value: float
    control_value: float
    key: str
    control: str
    better: Literal["higher", "lower"]
    margin: float
    margin_rule: str = ""
    control_spread: float | None = None
    draws: int = 1
    label: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"Control.better must be 'higher' or 'lower', not {self.better!r}")
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"Control.key {self.key!r} must be a lowercase identifier (it goes into metric names)")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"Control.margin must be a number >= 0, not {self.margin!r}")
        self.value, self.control_value, self.margin = float(self.value), float(self.control_value), float(self.margin)

    @property
    def advantage(self) -> float:
        """How much better than the control the figure is, in the figure's own units (negative: worse)."""
        diff = self.value - self.control_value
        return diff if self.better == "higher" else -diff

    @property
    def informative(self) -> bool:
        return math.isfinite(self.value) and math.isfinite(self.control_value) and self.advantage > self.margin

    @property
    def verdict(self) -> str:
        return INFORMATIVE if self.informative else NOT_INFORMATIVE

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "metric", "value", "control_value", "key", "control", "better", "margin", "margin_rule",
            "control_spread", "draws", "label", "note")}
        d.update(advantage=self.advantage, verdict=self.verdict)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Control":
        fields = ("metric", "value", "control_value", "key", "control", "better", "margin", "margin_rule",
                  "control_spread", "draws", "label", "note")
        return cls(**{k: d[k] for k in fields if d.get(k) is not None})


def figure_verdicts(controls: list[Control]) -> dict[str, str]:
    """One verdict per figure: informative only if it beats every control it was compared with."""
    out: dict[str, str] = {}
    for c in controls:
        if out.get(c.metric) == NOT_INFORMATIVE:
            continue
        out[c.metric] = c.verdict
    return out
