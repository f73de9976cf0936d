"""Comparing model versions: layer by layer, and in one plain sentence, what Bort bought and what it cost.

When one of two compared versions is tagged as Bort-trained (``governance retrain`` writes the tags) the finding
names what the constraint changed on the layers it constrains (D_orth, D_abs, the input reconstruction error) and
what it cost in accuracy on the run's labelled samples, with the accuracy difference's sampling error (paired on
the same samples), so a difference inside the noise is called that. Without a Bort tag the same figures are
stated without attributing them to Bort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from governance_plugins.bort.constants import TAG_GAMMA, TAG_OPTIMIZER

#: samples scored for the accuracy comparison
ACCURACY_CAP = 2048


@dataclass
class VersionFigures:
    """The figures of one version that enter the comparison."""

    label: str
    tags: dict[str, str]
    summary: dict[str, float]
    correct: np.ndarray | None = None  # per-sample correctness on the shared labelled samples
    evidence: dict[str, float] = field(default_factory=dict)

    @property
    def bort(self) -> str | None:
        """"BortAdamW, gamma 60" when the version is tagged as Bort-trained, else None."""
        opt = self.tags.get(TAG_OPTIMIZER)
        if not opt:
            return None
        gamma = self.tags.get(TAG_GAMMA)
        return f"{opt}, gamma {gamma}" if gamma else opt

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct is not None and len(self.correct) else math.nan


def correctness(model: Any, X: np.ndarray, y: np.ndarray | None) -> np.ndarray | None:
    """Per-sample correctness of a classifier's argmax on (X, y); None when there are no integer labels or the
    model does not output one score per class."""
    if y is None or not np.issubdtype(np.asarray(y).dtype, np.integer) or not model.outputs_score_vector:
        return None
    if model.n_outputs < 2 or int(np.max(y)) >= model.n_outputs or int(np.min(y)) < 0:
        return None
    scores = np.asarray(model.predict(X)).reshape(len(X), -1)
    return (np.argmax(scores, axis=1) == np.asarray(y)).astype(np.float64)


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(a) - mean(b) for outcomes on the same samples (paired: the spread of the
    per-sample differences, which only the discordant pairs make non-zero)."""
    n = len(a)
    d = a - b
    return float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def _ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return "compared"
    r = b / a
    if 0.9 <= r <= 1 / 0.9:
        return f"about as far from bounded-orthogonal (ratio {r:.3g})"
    return f"{r:.3g}x closer to bounded-orthogonal" if r >= 1 else f"{1 / r:.3g}x further from bounded-orthogonal"


def _accuracy_words(bort: VersionFigures, base: VersionFigures) -> str:
    if bort.correct is None or base.correct is None:
        return "Accuracy not compared: the run's data has no class labels these models can be scored on."
    diff = bort.accuracy - base.accuracy
    se = paired_se(bort.correct, base.correct)
    n = len(bort.correct)
    words = (f"Accuracy {bort.accuracy:.3f} against {base.accuracy:.3f} on the run's {n} labelled samples "
             f"({100 * diff:+.1f} points; 2 standard errors of the paired difference = {200 * se:.1f} points): ")
    if not math.isfinite(se) or abs(diff) <= 2 * se:
        return words + "no difference these samples can show."
    return words + ("a cost." if diff < 0 else "no accuracy cost, a gain.")


def bought_and_cost(bort: VersionFigures, base: VersionFigures, random_d_orth: float | None) -> str:
    """One finding: what the Bort-trained version gained on the layers Bort constrains, and what it cost."""
    s, t = bort.summary, base.summary
    a, b = s.get("d_orth_constrained_mean", math.nan), t.get("d_orth_constrained_mean", math.nan)
    ref = f"; random weights {random_d_orth:.3g}" if random_d_orth is not None and math.isfinite(random_d_orth) else ""
    attributed = bool(bort.bort) and not base.bort
    head = (f"What Bort bought, what it cost ({bort.label}, trained with {bort.bort}, against {base.label}): "
            if attributed else f"{bort.label} against {base.label}: ")
    parts = [f"the layers Bort constrains are {_ratio(a, b)} (D_orth {a:.3g} against {b:.3g}{ref}; "
             f"D_abs {s.get('d_abs_constrained_mean', math.nan):.3g} against "
             f"{t.get('d_abs_constrained_mean', math.nan):.3g})"]
    ea, eb = bort.evidence.get("traced_rel_error"), base.evidence.get("traced_rel_error")
    if ea is not None and eb is not None:
        parts.append(f"the input traced back from the hidden features has relative error {ea:.3g} against {eb:.3g} "
                     f"({'lower' if ea < eb else 'not lower'}; lower is better)")
    text = head + "; ".join(parts) + ". " + _accuracy_words(bort, base)
    if "d_orth_classifier" in s and "d_orth_classifier" in t:
        text += (f" The classifier, which Bort leaves free by default, has D_orth {s['d_orth_classifier']:.3g} "
                 f"against {t['d_orth_classifier']:.3g}.")
    if not a < b:
        text += " The constrained layers are not closer to bounded-orthogonal than in the other version."
    if not attributed:
        text += (" Neither version alone is tagged as Bort-trained, so these differences are not attributed to Bort."
                 if not (bort.bort or base.bort) else " Both versions are tagged as Bort-trained.")
    return text


def order(ours: VersionFigures, peer: VersionFigures) -> tuple[VersionFigures, VersionFigures]:
    """(the Bort-trained side, the other) when exactly one is tagged; else (ours, peer)."""
    return (peer, ours) if peer.bort and not ours.bort else (ours, peer)


def comparison_table(ours: VersionFigures, peer: VersionFigures) -> list[dict[str, Any]]:
    """Rows of the "what Bort bought, what it cost" table: one figure per row, this version against the peer."""
    rows = []
    for key, label, better in (
        ("d_orth_constrained_mean", "D_orth, layers Bort constrains", "lower"),
        ("d_abs_constrained_mean", "D_abs, layers Bort constrains", "lower"),
        ("fraction_within_bounds_constrained", "share of constrained layers within the norm bound", "higher"),
        ("d_orth_classifier", "D_orth, free classifier", "lower"),
    ):
        if key in ours.summary and key in peer.summary:
            rows.append({"peer": peer.label, "figure": label, "here": ours.summary[key], "there": peer.summary[key],
                         "better": better})
    for key, label, better in (("traced_rel_error", "input trace-back relative error", "lower"),
                               ("deletion_auc", "saliency deletion AUC", "lower"),
                               ("insertion_auc", "saliency insertion AUC", "higher")):
        if key in ours.evidence and key in peer.evidence:
            rows.append({"peer": peer.label, "figure": label, "here": ours.evidence[key], "there": peer.evidence[key],
                         "better": better})
    if ours.correct is not None and peer.correct is not None:
        rows.append({"peer": peer.label, "figure": f"accuracy on {len(ours.correct)} labelled samples",
                     "here": ours.accuracy, "there": peer.accuracy, "better": "higher"})
    return rows
