"""NeFLAG and the two baselines (Captum's Integrated Gradients and Saliency) as numpy-in, numpy-out
attribution functions over one model, so the quality metrics can treat all three alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from governance_plugins.neflag import flux
from governance_plugins.neflag.scoring import (
    Output,
    OutputKind,
    ScoreOutputs,
    forward_score_fn,
    gradient_score_fn,
    module_device,
)

BASELINE_LABELS = {"integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}


def input_seeds(seed: int, n: int, stream: int = 0) -> list[int]:
    """One seed per input, derived from the run seed and a stream number (0: the main run; others for
    seed-stability and sensitivity re-runs), so that input i's sphere samples never depend on batching."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream),)).generate_state(n, dtype=np.uint32)
    return [int(s) for s in state]


@dataclass
class Attributor:
    """Everything needed to explain inputs of one model the same way, with any copy of its torch view."""

    module: Any
    kind: OutputKind
    output: Output
    settings: flux.FluxSettings
    dtype: np.dtype
    baseline: np.ndarray  # IG's reference input, shape of one sample
    scale: np.ndarray | None = None  # z -> x feature scale for NeFLAG (tabular), shape of one sample
    ig_steps: int = 50
    predict: Callable[[np.ndarray], np.ndarray] | None = None  # forward-only path (finite differences)
    seed: int = 0
    times_input: bool = True  # NeFLAG's map: the flux map ⊙ (x − baseline) (map="times_input"), or the flux map
    last: dict[str, Any] = field(default_factory=dict)  # diagnostics of the latest NeFLAG call

    def _tensor(self, X: np.ndarray, module: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(X, dtype=self.dtype)).to(module_device(module))

    def seeds(self, n: int, stream: int = 0) -> list[int]:
        """The sphere seeds of inputs 0..n-1 (a prefix of a longer call's: input i's seed never depends on n)."""
        return input_seeds(self.seed, n, stream)

    # ------------------------------------------------------------------------------------------ NeFLAG
    def neflag(self, X: np.ndarray, targets: np.ndarray, *, stream: int = 0, seeds: list[int] | None = None,
               module: Any = None) -> np.ndarray:
        """NeFLAG attributions with the shape of ``X``: the flux map (z-units) times (x − baseline) in the same
        units (score units), or the flux map alone. ``seeds`` (one per row) overrides the seeds of ``stream``,
        e.g. to explain perturbed copies of an input with that input's own sphere points (common random
        numbers). ``module`` replaces the model's torch view (randomisation controls); with finite differences
        and no replacement, forward passes use ``predict``."""
        mod = self.module if module is None else module
        x = self._tensor(X, mod)
        if self.settings.derivative == "finite_difference":
            if module is None and self.predict is not None:
                score = forward_score_fn(self.predict, self.dtype, self.kind, self.output)
            else:
                score = gradient_score_fn(mod, self.kind, self.output)
        else:
            score = gradient_score_fn(mod, self.kind, self.output)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=x.device)
        sc = None if self.scale is None else torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        seeds = self.seeds(len(X), stream) if seeds is None else [int(v) for v in seeds]
        result = flux.neflag(score, x, t, self.settings, seeds, scale=sc)
        self.last = {"result": result, "score_fn": score, "x": x, "targets": t}
        flux_map = result.attribution.reshape(X.shape).detach().cpu().numpy()
        return (flux_map * self.displacement(X)).astype(flux_map.dtype) if self.times_input else flux_map

    def displacement(self, X: np.ndarray) -> np.ndarray:
        """x − baseline in the sphere's units (z-units when features are scaled), the factor of map="times_input"."""
        diff = np.asarray(X, dtype=np.float64) - np.asarray(self.baseline, dtype=np.float64)[None]
        return diff if self.scale is None else diff / np.asarray(self.scale, dtype=np.float64)[None]

    # --------------------------------------------------------------------------------------- baselines
    def integrated_gradients(self, X: np.ndarray, targets: np.ndarray, *, module: Any = None) -> np.ndarray:
        """Captum IntegratedGradients (Gauss-Legendre, ``ig_steps`` steps) from the dataset baseline."""
        from captum.attr import IntegratedGradients

        mod = self.module if module is None else module
        x = self._tensor(X, mod)
        base = self._tensor(np.repeat(self.baseline[None], len(X), axis=0), mod)
        ig = IntegratedGradients(ScoreOutputs(mod, self.kind, self.output))
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=x.device)
        out = ig.attribute(x, baselines=base, target=t, n_steps=self.ig_steps,
                           internal_batch_size=max(self.ig_steps, self.settings.max_batch))
        return out.detach().cpu().numpy()

    def saliency(self, X: np.ndarray, targets: np.ndarray, *, module: Any = None) -> np.ndarray:
        """Captum Saliency: |∂f_c/∂x|, in batches of ``max_batch`` inputs."""
        from captum.attr import Saliency

        mod = self.module if module is None else module
        sal = Saliency(ScoreOutputs(mod, self.kind, self.output))
        parts = []
        step = max(1, self.settings.max_batch)
        for lo in range(0, len(X), step):
            x = self._tensor(X[lo : lo + step], mod).requires_grad_(True)
            t = torch.as_tensor(np.asarray(targets[lo : lo + step]), dtype=torch.long, device=x.device)
            parts.append(sal.attribute(x, target=t, abs=True).detach().cpu().numpy())
        return np.concatenate(parts)

    def run(self, method: str, X: np.ndarray, targets: np.ndarray, *, module: Any = None, stream: int = 0,
            seeds: list[int] | None = None) -> np.ndarray:
        if method == "neflag":
            return self.neflag(X, targets, stream=stream, seeds=seeds, module=module)
        if method == "integrated_gradients":
            return self.integrated_gradients(X, targets, module=module)
        if method == "saliency":
            return self.saliency(X, targets, module=module)
        raise ValueError(f"unknown attribution method {method!r}")

    def score_at(self, X: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """f_c at the inputs themselves (for the completeness diagnostic)."""
        x = self._tensor(X, self.module)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=x.device)
        with torch.no_grad():
            return gradient_score_fn(self.module, self.kind, self.output)(x, t).double().cpu().numpy()
