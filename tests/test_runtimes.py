"""Runtimes: batched predict, torch views of ONNX graphs (both exporters), activations, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from governance.contract.errors import DataError, MethodError, ModelLoadError
from governance.host.runtimes.device import ort_providers, torch_device
from governance.testing.models import as_loaded, as_onnx_loaded, digits_cnn, tabular_mlp


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    m = digits_cnn()
    m.eval()
    # non-trivial BatchNorm statistics so that folding is exercised
    m[1].running_mean.uniform_(-0.5, 0.5)
    m[1].running_var.uniform_(0.5, 2.0)
    return m


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-opset17", "dynamo-opset20"])
def test_onnx_torch_view_matches_ort_and_native_gradients(cnn, tmp_path, dynamo):
    model = as_onnx_loaded(cnn, (1, 8, 8), tmp_path, dynamo=dynamo)
    view = model.torch_module()
    assert view is not None, model.torch_unavailable_reason
    assert model.parity_max_abs_diff < 1e-4
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    view(x)[:, 3].sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    cnn(x2)[:, 3].sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)


def test_predict_batches_and_checks_shape(cnn):
    model = as_loaded(cnn, (1, 8, 8))
    x = np.random.default_rng(0).random((70, 1, 8, 8), dtype=np.float32)
    full = model.predict(x)
    np.testing.assert_allclose(model.predict(x, batch_size=16), full, atol=1e-6)
    with pytest.raises(DataError, match=r"expects \(batch, 1, 8, 8\)"):
        model.predict(np.zeros((3, 64), dtype=np.float32))


def test_activations_torch_and_onnx(cnn, tmp_path):
    tm = as_loaded(cnn, (1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    out, acts = tm.forward_with_activations(x, ["3"])
    assert acts["3"].shape == (2, 8, 4, 4)
    om = as_onnx_loaded(cnn, (1, 8, 8), tmp_path)
    pool = next(n for n in om.layer_names() if "MaxPool" in n)
    out2, acts2 = om.forward_with_activations(x, [pool])
    torch.testing.assert_close(acts2[pool], acts["3"], atol=1e-5, rtol=1e-4)
    with pytest.raises(MethodError) as err:
        tm.forward_with_activations(x, ["nope"])
    assert "available layers" in err.value.hint


def test_unsupported_onnx_op_gives_forward_only_model_with_reason(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from governance.host.runtimes.onnx_model import OnnxModel

    node = helper.make_node("Hardmax", ["x"], ["y"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = OnnxModel.from_path(path)
    assert model.predict(np.eye(4, dtype=np.float32)).shape == (4, 4)
    assert model.torch_module() is None
    assert "Hardmax" in model.torch_unavailable_reason


def test_corrupt_onnx_file_is_a_load_error(tmp_path):
    from governance.host.runtimes.onnx_model import OnnxModel

    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage-not-a-model")
    with pytest.raises(ModelLoadError) as err:
        OnnxModel.from_path(path)
    assert "not a valid ONNX model" in str(err.value) and err.value.hint


def test_cuda_request_fails_loudly_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelLoadError, match="--device cuda"):
        torch_device("cuda")
    with pytest.raises(ModelLoadError, match="CUDA execution provider"):
        ort_providers("cuda")
    assert torch_device("auto") == "cpu"
    assert ort_providers("auto") == ["CPUExecutionProvider"]


def test_tabular_mlp_onnx_parameters_match_torch(tmp_path):
    torch.manual_seed(0)
    mlp = tabular_mlp(5, 3, (4,))
    om = as_onnx_loaded(mlp, (5,), tmp_path)
    params = om.parameters()
    torch_params = {k: v.detach().numpy() for k, v in mlp.state_dict().items()}
    assert any(np.allclose(v, torch_params["0.weight"]) or np.allclose(v.T, torch_params["0.weight"])
               for v in params.values())


def test_relative_parity_cannot_pass_on_zero_output():
    from governance.host.runtimes.parity import relative_parity

    ref = np.full((3, 4), 1e-4)
    assert not relative_parity(np.zeros_like(ref), ref).ok  # absolute 1e-4 would have passed
    assert relative_parity(ref * (1 + 1e-6), ref).ok
    zero = relative_parity(np.zeros((2, 2)), np.zeros((2, 2)))
    assert not zero.ok and "all zero" in zero.problem


def test_view_is_pruned_to_the_chosen_output(tmp_path):
    """An unsupported node that feeds only an output the tool ignores does not cost the gradient view."""
    import onnx
    from onnx import TensorProto, helper

    from governance.host.runtimes.onnx_model import OnnxModel

    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32).tolist())
    nodes = [helper.make_node("MatMul", ["x", "W"], ["scores"]),
             helper.make_node("Hardmax", ["scores"], ["hard"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("hard", TensorProto.FLOAT, [None, 3]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])], [w])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = OnnxModel.from_path(path, output="scores")
    assert model.torch_module() is not None, model.torch_unavailable_reason
    hard = OnnxModel.from_path(path, output="hard")
    assert hard.torch_module() is None and "Hardmax" in hard.torch_unavailable_reason


def test_fixed_batch_numpy_and_torch_chunks_match_the_batched_call():
    from governance.host.runtimes.batching import run_numpy, run_torch

    calls = []

    def f(x):
        calls.append(len(x))
        assert len(x) == 2
        return x * 3.0

    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(run_numpy(f, x, 2), x * 3.0)
    assert calls == [2, 2, 2]
    t = torch.from_numpy(x).requires_grad_(True)
    out = run_torch(lambda c: c * 3.0, t, 2)
    np.testing.assert_array_equal(out.detach().numpy(), x * 3.0)  # 5 rows back, padding dropped
    out.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.full_like(x, 3.0))  # padding rows add no gradient
