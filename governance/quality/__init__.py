"""Explanation-quality metrics and controls shared by every method, so all methods are measured alike.

* :mod:`governance.quality.attribution`: deletion/insertion AUCs, max-sensitivity, the parameter-randomisation
  sanity check and randomised model copies, seed stability (generic over an attribution function).
* :mod:`governance.quality.controls`: controls for headline figures (random attributions, randomised models)
  and how a control's margin is chosen; the :class:`~governance.Control` record itself is part of the contract
  (:mod:`governance.contract.evidence`).
"""

from governance.contract.evidence import INFORMATIVE, NOT_INFORMATIVE, Control, figure_verdicts  # noqa: F401
from governance.quality.attribution import (  # noqa: F401
    AttributionFn, DeletionInsertion, ModelFn, RandomisationResult, RandomisedModel, SeedStability,
    deletion_insertion, max_sensitivity, outputs_are_probabilities, pearson_rows, perturbed_sources,
    randomisation_sanity_check, randomised_models, seed_stability, spearman_rows, step_counts, target_probabilities,
)
from governance.quality.controls import (  # noqa: F401
    RandomisedGame, control_margin, deletion_insertion_controls, output_span, random_maps, record_controls,
    spread_margin,
)
