"""The software and hardware a run used (reproducibility annex, ``governance doctor``)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

PACKAGES = ("governance", "mlflow", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "scipy",
            "captum", "pluggy", "weasyprint", "jinja2", "scikit-learn", "skl2onnx", "onnxmltools", "lightgbm",
            "xgboost")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def describe_environment(*, with_devices: bool = True) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
    }
    if with_devices:
        env.update(devices())
    return env


def devices() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import torch

        info["torch_cuda_available"] = bool(torch.cuda.is_available())
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda_version"] = torch.version.cuda
    except Exception as exc:  # pragma: no cover - torch is a dependency
        info["torch_error"] = str(exc)
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as exc:  # pragma: no cover
        info["onnxruntime_error"] = str(exc)
    return info
