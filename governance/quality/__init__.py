"""Explanation-quality metrics and controls shared by every method, so all methods are measured alike.

* :mod:`governance.quality.attribution`: deletion/insertion AUCs, max-sensitivity, the parameter-randomisation
  sanity check, seed stability (generic over an attribution function).
* :mod:`governance.quality.controls`: how a control's margin is chosen; the :class:`~governance.Control`
  record itself is part of the contract (:mod:`governance.contract.evidence`).
"""

from governance.contract.evidence import INFORMATIVE, NOT_INFORMATIVE, Control, figure_verdicts  # noqa: F401
from governance.quality.attribution import (  # noqa: F401
    AttributionFn, DeletionInsertion, ModelFn, RandomisationResult, SeedStability, deletion_insertion,
    max_sensitivity, outputs_are_probabilities, pearson_rows, randomisation_sanity_check, seed_stability,
    spearman_rows, target_probabilities,
)
from governance.quality.controls import spread_margin  # noqa: F401
