"""ai.onnx.ml operators of the torch view that ONNX's node tests do not cover, compared with ONNX Runtime
(which defines their corner cases) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper

from governance.host.runtimes.onnx_torch import GraphProgram, Unsupported
from governance.host.runtimes.parity import relative_parity

X = np.array([[1.0, -2.0, 3.0], [0.5, 0.3, 0.1], [-1.0, -1.0, -4.0], [2.0, 0.0, -0.5]], np.float32)


def _model(op, attrs, outs, out_types):
    node = helper.make_node(op, ["X"], outs, domain="ai.onnx.ml", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", T.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])


def _compare(model, out):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run([out], {"X": X})[0]
    env, _ = GraphProgram(model, [out]).run({"X": torch.from_numpy(X)})
    p = relative_parity(env[out].numpy(), want, 1e-6)
    assert p.ok, p.describe()


@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("binary", [True, False])
def test_linear_classifier(pt, binary):
    attrs = (dict(coefficients=[0.5, -1.0, 0.2], intercepts=[0.2], classlabels_ints=[0, 1]) if binary else
             dict(coefficients=[0.5, -1.0, 0.2, 1, 2, 0, 0, 1, -1], intercepts=[0.2, 0.1, -1],
                  classlabels_ints=[0, 1, 2]))
    _compare(_model("LinearClassifier", dict(post_transform=pt, **attrs), ["Y", "Z"], [T.INT64, T.FLOAT]), "Z")


@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_regressor(pt):
    _compare(_model("LinearRegressor", dict(coefficients=[0.5, -1.0, 1, 1, 0, 2], intercepts=[0.2, 0.0], targets=2,
                                            post_transform=pt), ["Y"], [T.FLOAT]), "Y")


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm):
    _compare(_model("Normalizer", dict(norm=norm), ["Y"], [T.FLOAT]), "Y")


def test_scaler():
    _compare(_model("Scaler", dict(offset=[1.0, 0.5, -2.0], scale=[2.0, 3.0, 0.5]), ["Y"], [T.FLOAT]), "Y")


def test_probit_is_refused_up_front():
    m = _model("LinearClassifier", dict(coefficients=[1.0, 2.0, 3.0], intercepts=[0.0], classlabels_ints=[0, 1],
                                        post_transform="PROBIT"), ["Y", "Z"], [T.INT64, T.FLOAT])
    with pytest.raises(Unsupported, match="post_transform=PROBIT"):
        GraphProgram(m, ["Z"])
