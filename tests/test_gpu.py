"""CUDA paths. Skipped cleanly without a GPU (CI has none); run on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def test_torch_model_runs_on_cuda_and_matches_cpu():
    from governance.host.runtimes.device import torch_device
    from governance.host.runtimes.torch_model import TorchModel
    from governance.testing.models import trained_digits_cnn

    module, ds = trained_digits_cnn(epochs=2)
    cpu_out = TorchModel.from_module(module, ds.sample_shape).predict(ds.X[:64])
    device = torch_device("cuda")
    assert device == "cuda"
    gpu = TorchModel.from_module(module, ds.sample_shape, device=device)
    assert next(gpu.torch_module().parameters()).is_cuda
    np.testing.assert_allclose(gpu.predict(ds.X[:64]), cpu_out, atol=1e-3)


def test_auto_picks_cuda():
    from governance.host.runtimes.device import torch_device

    assert torch_device("auto") == "cuda"


def test_onnx_cuda_request_is_honest(tmp_path):
    """Either ONNX Runtime really runs on CUDA, or --device cuda fails loudly: never a silent CPU fallback."""
    import onnxruntime as ort

    from governance.contract.errors import ModelLoadError
    from governance.host.runtimes.onnx_model import OnnxModel
    from governance.testing.models import digits_cnn, export_onnx

    path = export_onnx(digits_cnn().eval(), (1, 8, 8), tmp_path / "m.onnx")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        model = OnnxModel.from_path(path, device="cuda")
        assert model.device == "cuda" and "CUDAExecutionProvider" in model.session.get_providers()
    else:
        with pytest.raises(ModelLoadError, match="CUDA"):
            OnnxModel.from_path(path, device="cuda")
        assert OnnxModel.from_path(path, device="auto").device == "cpu"


def _gradient_methods():
    from governance.contract.method import Requirement
    from governance.host.plugins import get_plugin_host

    host = get_plugin_host()
    return [cls for name, cls in sorted(host.methods.items())
            if Requirement.GRADIENTS in cls.requires or Requirement.ACTIVATIONS in cls.requires]


@pytest.mark.parametrize("method_cls", _gradient_methods() if torch.cuda.is_available() else [],
                         ids=lambda c: c.name)
def test_gradient_methods_run_on_cuda(method_cls, tmp_path):
    from governance.contract.method import MethodContext
    from governance.host.runtimes.torch_model import TorchModel
    from governance.testing.models import trained_digits_cnn

    module, ds = trained_digits_cnn(epochs=2)
    model = TorchModel.from_module(module, ds.sample_shape, device="cuda")
    ctx = MethodContext(model=model, data=ds.subset(32), config=method_cls.Config(), seed=0, workdir=tmp_path,
                        device="cuda")
    expl = method_cls().explain(ctx)
    assert expl.status == "ok", expl.reason
    assert all(np.isfinite(v) for v in expl.metrics.values() if isinstance(v, float))
