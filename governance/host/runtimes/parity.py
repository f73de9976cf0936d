"""Parity between two computations of the same model (ONNX Runtime vs the torch view, a converted ONNX
graph vs the native ``predict_proba``): relative to the reference's magnitude, so that a view returning
zeros can never pass on a model whose outputs are small."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: max |Δ| / max |reference| above which two computations disagree (float32 rounding measured 3e-8..1.4e-7
#: relative on small CNNs, platform-facts T10).
RTOL = 1e-4


@dataclass(frozen=True)
class Parity:
    """max |Δ| and max |reference| on a probe batch, and whether max |Δ| <= rtol * max |reference|."""

    max_abs_diff: float
    reference_scale: float
    rtol: float
    ok: bool
    problem: str = ""

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.reference_scale if self.reference_scale > 0 else float("inf")

    def describe(self) -> str:
        if self.problem:
            return self.problem
        return (f"max |Δ| = {self.max_abs_diff:.3g} ({self.relative_diff:.3g} of max |output| "
                f"{self.reference_scale:.3g}; tolerance {self.rtol:g})")

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "reference_scale": self.reference_scale,
                "relative_diff": self.relative_diff if self.reference_scale > 0 else None, "rtol": self.rtol,
                "ok": self.ok, "problem": self.problem or None}


def relative_parity(got: Any, ref: Any, rtol: float = RTOL) -> Parity:
    """Compare ``got`` with the reference ``ref``. Fails on a shape mismatch, non-finite values, or a
    reference that is zero everywhere (then no relative statement is possible)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.size == ref.size and got.shape != ref.shape and got.reshape(-1).shape == ref.reshape(-1).shape:
        got = got.reshape(ref.shape)  # (n,) vs (n, 1): the same numbers
    if got.shape != ref.shape:
        return Parity(float("inf"), 0.0, rtol, False, f"output shapes differ: {got.shape} vs {ref.shape}")
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(ref))):
        return Parity(float("inf"), 0.0, rtol, False, "non-finite outputs on the probe batch")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if scale == 0.0:
        return Parity(diff, 0.0, rtol, False, "the reference outputs are all zero on the probe batch, so "
                      "agreement cannot be checked")
    return Parity(diff, scale, rtol, diff <= rtol * scale)
