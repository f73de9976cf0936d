"""``--device auto|cpu|cuda``: decide where to run and fail loudly when CUDA was asked for but is absent."""

from __future__ import annotations

from governance.contract.errors import ConfigError, ModelLoadError

DEVICES = ("auto", "cpu", "cuda")


def torch_device(requested: str) -> str:
    """The torch device to use: ``cuda`` only when torch really sees a GPU."""
    if requested not in DEVICES:
        raise ConfigError(f"unknown device '{requested}'", hint="use one of: auto, cpu, cuda")
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ModelLoadError(
            "--device cuda was requested but torch sees no CUDA device",
            hint="run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --device cpu/auto",
        )
    return "cuda" if (requested in ("cuda", "auto") and has_cuda) else "cpu"


def ort_providers(requested: str) -> list[str]:
    """Execution providers to ask ONNX Runtime for, most preferred first."""
    if requested not in DEVICES:
        raise ConfigError(f"unknown device '{requested}'", hint="use one of: auto, cpu, cuda")
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if requested == "cuda":
        raise ModelLoadError(
            "--device cuda was requested but this ONNX Runtime has no CUDA execution provider "
            f"(available: {', '.join(available)})",
            hint="pip uninstall onnxruntime && pip install 'governance[gpu]', or use --device cpu/auto",
        )
    return ["CPUExecutionProvider"]


def check_ort_session(session, requested: str) -> str:
    """ONNX Runtime falls back to CPU silently: check what the session really got."""
    got = session.get_providers()
    on_gpu = "CUDAExecutionProvider" in got
    if requested == "cuda" and not on_gpu:
        raise ModelLoadError(
            f"--device cuda was requested but ONNX Runtime fell back to {got} (CUDA/cuDNN libraries missing?)",
            hint="check `governance doctor` for the CUDA provider's state, or use --device cpu/auto",
        )
    return "cuda" if on_gpu else "cpu"
