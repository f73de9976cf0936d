"""The NeFLAG method plugin: negative-flux attributions, Integrated Gradients and Saliency on the same
inputs, and the core quality metrics for all three side by side."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from governance.errors import MethodError
from governance import Explanation, Method, MethodConfig, MethodContext, Requirement

FORM_LABELS = {
    "A": "form A (projected: 2d·E[min(0, ∇f·u)·u])",
    "B": "form B (per feature: −ε·E[∇f ⊙ u | ∇f·u < 0])",
}
SAMPLER_LABELS = {
    "rejection": "S3, rejection: n negative-flux points (NeFLAG-n)",
    "uniform_antithetic": "S1, uniform antithetic pairs",
    "orthogonal_antithetic": "S2, orthogonal antithetic pairs",
    "descent": "S4, descent-guided points",
}


class QualityConfig(MethodConfig):
    """Which explanation-quality metrics to compute (governance.quality), for NeFLAG and each baseline."""

    deletion_insertion: bool = True
    steps: int = Field(20, ge=2, le=2000, description="deletion/insertion steps (share of units per step = 1/steps)")
    max_sensitivity: bool = True
    sensitivity_radius: float = Field(0.02, gt=0, description="L∞ perturbation radius (z-units for tabular data)")
    sensitivity_samples: int = Field(5, ge=1, le=100)
    randomisation: bool = True
    randomisation_mode: Literal["full", "cascading"] = "full"
    seed_stability: bool = True
    stability_seeds: int = Field(3, ge=2, le=20)
    robustness_inputs: int = Field(8, ge=1, description="inputs used for sensitivity, randomisation, stability")


class NeflagConfig(MethodConfig):
    """NeFLAG's hyper-parameters (spec §A2.6 defaults) and the run's scope."""

    epsilon: float = Field(0.1, gt=0, description="ε, radius of the sphere, in model-input units (z-units for tabular)")
    n_points: int = Field(20, ge=1, le=10_000, description="n, negative-flux points per input (NeFLAG-n)")
    m: int | None = Field(None, ge=1, le=1000, description="tries per point (rejection, default 10) or steps (descent, default 5)")
    antipodes: Literal["lazy", "paired"] = "lazy"
    form: Literal["auto", "A", "B"] = "auto"
    sampler: Literal["auto", "rejection", "uniform_antithetic", "orthogonal_antithetic", "descent"] = "auto"
    n_directions: int | None = Field(None, ge=1, description="N for the antithetic samplers (2N points); default min(d, 1024)")
    step_size: float = Field(0.5, gt=0, description="η for the descent sampler")
    output: Literal["prob", "logit", "log_prob"] = "prob"
    derivative: Literal["gradient", "finite_difference"] = "gradient"
    feature_scale: Literal["auto", "std", "none"] = "auto"
    input_range: tuple[float, float] | None = None
    n_samples: int = Field(16, ge=1, le=100_000, description="inputs explained")
    target: Literal["predicted", "label"] | int = "predicted"
    baselines: list[Literal["integrated_gradients", "saliency"]] = Field(
        default_factory=lambda: ["integrated_gradients", "saliency"])
    ig_steps: int = Field(50, ge=2, le=10_000)
    max_batch: int | None = Field(None, ge=1, description="sphere points per forward/backward (default by input size)")
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @field_validator("input_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError("input_range must be (low, high) with low < high")
        return v

    @field_validator("baselines")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class NeflagMethod(Method):
    name = "neflag"
    version = "1.0.0"
    title = "NeFLAG: negative flux aggregation"
    description = (
        "Attributes a classifier's decision to input features through the gradient field around the input: "
        "the field's flux through a small sphere is aggregated over the points where it flows inwards (where "
        "moving away from the input lowers the class score). No surrogate model and no path integral."
    )
    reference = ("X. Li, D. Pan, C. Li, Y. Qiang, D. Zhu. Negative Flux Aggregation to Estimate Feature "
                 "Attributions. IJCAI 2023, pp. 446-454, doi:10.24963/ijcai.2023/50, arXiv:2301.06989")
    requires = frozenset({Requirement.FORWARD, Requirement.GRADIENTS})
    Config = NeflagConfig
    report_template = "governance_plugins.neflag:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        reason = super().can_explain(model=model, data=data)
        if reason:
            return reason
        if getattr(model, "task", "classification") == "regression":
            return (f"explains class scores, but the model is a regressor ({model.task_reason}); pass "
                    "--task classification if its one output is a binary logit")
        if not model.outputs_score_vector:
            return (f"explains one class score per input, but the model's outputs have shape "
                    f"{tuple(model.output_spec.sample_shape)} (not a vector of class scores)")
        return None

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        from governance_plugins.neflag.runner import NeflagRun

        return NeflagRun(ctx).run()


def check_finite_inputs(X: np.ndarray) -> None:
    """NaN or infinite inputs have no gradient field to speak of: refuse them, naming the rows."""
    flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if len(bad):
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise MethodError(
            f"NeFLAG cannot explain inputs that contain NaN or infinite values: {len(bad)} of {len(X)} "
            f"selected samples do (rows {shown})",
            hint="impute or drop the missing values before explaining (the model itself cannot score them either)",
        )


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0
