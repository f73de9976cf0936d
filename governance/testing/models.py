"""Tiny real models and datasets for tests, benchmarks and plugin authors: trained in seconds on data that
ships with scikit-learn (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from governance.contract.dataset import Dataset


def digits_dataset(n: int | None = None) -> Dataset:
    """scikit-learn's 8x8 digits as (n, 1, 8, 8) float32 in [0, 1], with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    ds = Dataset(X=X, y=y, modality="image", class_names=[str(c) for c in range(10)], source="sklearn:digits")
    return ds.subset(n) if n else ds


def breast_cancer_dataset(n: int | None = None) -> Dataset:
    """scikit-learn's breast-cancer data, standardised, as (n, 30) float32 with labels and feature names."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    X = d.data.astype(np.float64)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    ds = Dataset(X=X, y=d.target.astype(np.int64), feature_names=[str(f) for f in d.feature_names],
                 class_names=[str(c) for c in d.target_names], modality="tabular", source="sklearn:breast_cancer")
    return ds.subset(n) if n else ds


def digits_cnn() -> Any:
    """A small CNN for 1x8x8 inputs (conv-BN-ReLU-pool, conv-ReLU, linear), untrained."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def tabular_mlp(n_in: int = 30, n_out: int = 2, hidden: tuple[int, ...] = (32, 16)) -> Any:
    import torch.nn as nn

    layers: list[Any] = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def train(module: Any, ds: Dataset, *, epochs: int = 30, lr: float = 1e-2, seed: int = 0, batch_size: int = 64) -> Any:
    """Plain Adam + cross-entropy training; returns the module in eval mode."""
    import torch

    torch.manual_seed(seed)
    X = torch.from_numpy(ds.X)
    y = torch.from_numpy(ds.y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(X[idx]), y[idx])
            loss.backward()
            opt.step()
    module.eval()
    return module


def trained_digits_cnn(seed: int = 0, epochs: int = 8) -> tuple[Any, Dataset]:
    """(trained CNN, digits dataset). About a second on 2 CPU cores; test accuracy ~0.95. Deterministic:
    the initial weights are drawn from ``seed`` too."""
    import torch

    ds = digits_dataset()
    torch.manual_seed(seed)
    return train(digits_cnn(), ds, epochs=epochs, lr=3e-3, seed=seed), ds


def trained_breast_cancer_mlp(seed: int = 0, epochs: int = 30) -> tuple[Any, Dataset]:
    """(trained MLP, breast-cancer dataset). Under a second; accuracy ~0.98. Deterministic in ``seed``."""
    import torch

    ds = breast_cancer_dataset()
    torch.manual_seed(seed)
    return train(tabular_mlp(), ds, epochs=epochs, lr=3e-3, seed=seed), ds


def export_onnx(module: Any, sample_shape: tuple[int, ...], path: str | Path, *, dynamo: bool = False) -> Path:
    """Export to ONNX with a dynamic batch dimension. ``dynamo=False`` (TorchScript exporter, opset 17) is
    20x faster; ``dynamo=True`` is torch's default exporter (opset 20)."""
    import torch

    path = Path(path)
    example = torch.zeros((2, *sample_shape))
    module.eval()
    if dynamo:
        batch = torch.export.Dim("batch")
        prog = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({0: batch},))
        prog.save(str(path))
    else:
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def as_loaded(module: Any, sample_shape: tuple[int, ...], name: str = "in-memory") -> Any:
    """Wrap a torch module as a LoadedModel."""
    from governance.host.runtimes.torch_model import TorchModel

    return TorchModel.from_module(module, sample_shape, name=name)


def as_onnx_loaded(module: Any, sample_shape: tuple[int, ...], folder: str | Path, *, dynamo: bool = False) -> Any:
    """Export ``module`` to ONNX under ``folder`` and open it with ONNX Runtime (torch view included)."""
    from governance.host.runtimes.onnx_model import OnnxModel

    path = export_onnx(module, sample_shape, Path(folder) / "model.onnx", dynamo=dynamo)
    return OnnxModel.from_path(path)
