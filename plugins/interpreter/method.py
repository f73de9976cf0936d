"""FLINT post-hoc interpreter as a governance method (methods-flint-bort.md Part A, A2.5 and A6).

The registered model stays frozen. Its activations at one or two late hidden layers and its outputs are
computed once and cached; an interpreter ``g = h ∘ Ψ`` (J attributes, a linear head) and a decoder are then
trained on those alone to imitate the model (no labels needed: the model's outputs are the targets). The
result is a dictionary of attributes with per-sample and per-class relevances, the interpreter's fidelity
to the model, its conciseness, visualisations of the attributes, and the interpreter itself (saved in the
method's folder and logged to MLflow as a model of its own).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from governance.errors import MethodError
from governance import Explanation, Method, MethodConfig, MethodContext, Requirement

VERSION = "1.0.0"


class FlintConfig(MethodConfig):
    """Defaults: the reference code's MNIST row (A2.3) and the spec's proposals for registry models (A6)."""

    layers: list[str] | None = Field(None, description="hidden layers to tap (names from the model's layer list); "
                                     "default: the last two hidden stages of different shapes")
    n_attributes: int | None = Field(None, ge=2, le=1024, description="dictionary size J; default ≈ 2.5 × classes")
    epochs: int = Field(12, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=65536)
    lr: float = Field(1e-4, gt=0, le=1.0)
    min_steps_per_epoch: int = Field(250, ge=0, description="small datasets: an epoch repeats passes over the "
                                     "data until this many optimiser steps (0: one pass, as in the reference)")
    attribute_activation: Literal["leaky_relu", "relu"] = "leaky_relu"
    beta: float = Field(0.5, ge=0, description="weight of output fidelity L_of")
    beta_after: int = Field(2, ge=0, description="L_of is off until epoch beta_after + 1")
    gamma: float = Field(0.8, ge=0, description="weight of input fidelity L_if (decoder reconstruction)")
    gamma_after: int = Field(0, ge=0)
    delta: float = Field(0.2, ge=0, description="weight of the conciseness/diversity entropies")
    delta_after: int = Field(4, ge=0)
    sparsity: float = Field(0.1, ge=0, description="weight of the l1 term on the attributes")
    sparsity_after: int = Field(2, ge=0)
    reconstruction: Literal["auto", "mse", "l1"] = "auto"
    max_samples: int = Field(20000, ge=20, description="samples used in all (training + held out)")
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    max_holdout: int = Field(10000, ge=1)
    taus: list[float] = Field(default_factory=lambda: [1.5, 2.0, 2.5, 3.0, 4.0, 5.0])
    relevance_threshold: float = Field(0.1, ge=0, lt=1, description="r(j,c) above which a pair is 'relevant'")
    n_local: int = Field(4, ge=0, le=32, description="samples shown with their local interpretation")
    mas_per_pair: int = Field(3, ge=1, le=16)
    max_pairs: int = Field(8, ge=1, le=64)
    am_pairs: int = Field(4, ge=0, le=32, description="pairs visualised by activation maximisation (images; 0: off)")
    am_rounds: int = Field(12, ge=1)
    am_steps: int = Field(50, ge=1)
    am_lr: float = Field(0.05, gt=0)
    am_clamp: bool = Field(True, description="clamp AM images to the data range after every step (valid images; "
                           "the reference code does not clamp)")
    cache_dtype: Literal["float32", "float16"] = "float32"
    max_cache_mb: float = Field(4096.0, gt=0)
    log_model: bool = Field(True, description="log the interpreter to the active MLflow run as a model")
    register_as: str | None = Field(None, description="also register the logged interpreter under this name")

    @field_validator("taus")
    @classmethod
    def _taus(cls, v: list[float]) -> list[float]:
        if not v or any(t <= 1 for t in v):
            raise ValueError("every τ must be > 1 (the threshold is 1/τ)")
        return sorted(v)


def default_n_attributes(n_classes: int) -> int:
    """J ≈ 2.5·C (25 for MNIST's 10 classes, A2.4), at least 4, at most 200 (CUB-200 used 180)."""
    return int(min(200, max(4, math.ceil(2.5 * n_classes))))


class FlintMethod(Method):
    name = "interpreter"
    version = VERSION
    title = "FLINT interpreter (post-hoc)"
    description = (
        "Trains a small interpreter on top of the frozen model's hidden layers: a dictionary of J attributes "
        "computed from those layers feeds a linear classifier that imitates the model. Reports how often it "
        "agrees with the model (fidelity), how many attributes a decision needs (conciseness), which attributes "
        "matter for each class, and what the attributes respond to."
    )
    reference = ("J. Parekh, P. Mozharovskyi, F. d'Alché-Buc. A Framework to Learn with Interpretation. "
                 "NeurIPS 2021. arXiv:2010.09345")
    requires = frozenset({Requirement.FORWARD, Requirement.ACTIVATIONS})
    Config = FlintConfig
    report_template = "governance_plugins.interpreter:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        why = super().can_explain(model=model, data=data)
        if why:
            return why
        if getattr(model, "task", "classification") == "regression":
            return (f"FLINT explains classifiers, but the model is a regressor ({model.task_reason}); pass "
                    "--task classification if its one output is a binary logit")
        if not model.outputs_score_vector:
            return ("explains classifiers with one score per class, but the model's output has shape "
                    f"{list(model.output_spec.sample_shape)}")
        return None

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        from governance_plugins.interpreter.posthoc import run_posthoc

        return run_posthoc(self, ctx)
