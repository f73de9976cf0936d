"""pytest fixtures for plugin authors (auto-loaded through the ``pytest11`` entry point when governance is
installed). Everything is trained on data bundled with scikit-learn, in seconds, with no downloads.

    def test_my_method(governance_context):
        ctx = governance_context("digits-cnn", config=MyMethod.Config())
        expl = MyMethod().explain(ctx)
        assert expl.ok
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.fixture(scope="session")
def governance_models() -> dict[str, Any]:
    """Trained tiny models and their datasets: ``{"digits-cnn": (module, Dataset), "bc-mlp": (...)}``
    (the conformance suite's reference models: trained once per process)."""
    from governance.testing.conformance import reference_models

    return reference_models()


@pytest.fixture
def governance_context(governance_models, tmp_path) -> Callable[..., Any]:
    """Factory: ``governance_context(name, config=None, runtime="torch"|"onnx", n=64, seed=0, peers=())``
    returns a ready :class:`~governance.contract.method.MethodContext` over a tiny trained model."""
    from governance.contract.method import MethodConfig, MethodContext
    from governance.testing.models import as_loaded, as_onnx_loaded

    def make(name: str = "digits-cnn", config: Any = None, runtime: str = "torch", n: int = 64, seed: int = 0,
             peers: tuple = ()) -> MethodContext:
        module, ds = governance_models[name]
        shape = ds.sample_shape
        model = as_loaded(module, shape, name=name) if runtime == "torch" else as_onnx_loaded(module, shape, tmp_path / name)
        return MethodContext(model=model, data=ds.subset(n), config=config or MethodConfig(), seed=seed,
                             workdir=tmp_path / "work", peers=peers)

    return make


@pytest.fixture
def governance_forward_only(governance_context) -> Callable[..., Any]:
    """Factory like ``governance_context`` whose model only predicts (no torch view, no weights), as an MLflow
    pyfunc model does: ``governance_forward_only("bc-mlp", config=...)``."""
    from dataclasses import replace

    from governance.testing.conformance import ForwardOnlyModel

    def make(name: str = "bc-mlp", config: Any = None, n: int = 64, seed: int = 0) -> Any:
        ctx = governance_context(name, config=config, n=n, seed=seed)
        return replace(ctx, model=ForwardOnlyModel(ctx.model))

    return make
