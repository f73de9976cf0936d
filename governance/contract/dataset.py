"""The data a run explains: samples, optional labels, feature names, modality and a masking baseline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Input samples of shape ``(n, *sample_shape)`` in the model's dtype, plus what methods need to read
    them: labels (optional), feature names (tabular), modality and a baseline (the "absent" value used
    by masking and path methods; zeros for images, the feature means for tabular data by default)."""

    X: np.ndarray
    y: np.ndarray | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    modality: str = "tabular"  # "tabular" | "image" | "other"
    source: str = "unknown"
    baseline: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X)
        if self.baseline is None:
            self.baseline = (
                self.X.mean(axis=0).astype(self.X.dtype)
                if self.modality == "tabular"
                else np.zeros(self.X.shape[1:], dtype=self.X.dtype)
            )
        if self.feature_names is None and self.modality == "tabular" and self.X.ndim == 2:
            self.feature_names = [f"x{i}" for i in range(self.X.shape[1])]

    def __len__(self) -> int:
        return len(self.X)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.X).tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()

    def subset(self, n: int, rng: np.random.Generator | None = None) -> "Dataset":
        """At most ``n`` samples: the first ``n``, or a random draw when ``rng`` is given."""
        if n >= len(self):
            return self
        idx = np.sort(rng.choice(len(self), size=n, replace=False)) if rng is not None else np.arange(n)
        return Dataset(
            X=self.X[idx],
            y=None if self.y is None else self.y[idx],
            feature_names=self.feature_names,
            class_names=self.class_names,
            modality=self.modality,
            source=self.source,
            baseline=self.baseline,
            notes=list(self.notes),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_samples": len(self),
            "sample_shape": list(self.sample_shape),
            "dtype": str(self.X.dtype),
            "modality": self.modality,
            "has_labels": self.y is not None,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "sha256": self.sha256,
            "notes": self.notes,
        }
