"""The plugin author's kit: tiny real models and datasets, pytest fixtures and the conformance suite.

    from governance.testing import MethodConformance, check_plugin

    class TestMyMethod(MethodConformance):     # pytest runs every conformance check
        plugin = "mymethod"
        method = "mymethod"

See docs/plugin-authors.md. The fixtures (``governance_models``, ``governance_context``,
``governance_forward_only``) are registered with pytest automatically when governance is installed.
Imports are lazy: loading this package costs nothing until a name is used.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MethodConformance": "governance.testing.conformance",
    "check_plugin": "governance.testing.conformance",
    "check_method": "governance.testing.conformance",
    "ConformanceError": "governance.testing.conformance",
    "ConformanceWarning": "governance.testing.conformance",
    "ForwardOnlyModel": "governance.testing.conformance",
    "CheckResult": "governance.testing.conformance",
    "reference_model": "governance.testing.conformance",
    "reference_data": "governance.testing.conformance",
    "trained_digits_cnn": "governance.testing.models",
    "trained_breast_cancer_mlp": "governance.testing.models",
    "digits_dataset": "governance.testing.models",
    "breast_cancer_dataset": "governance.testing.models",
    "as_loaded": "governance.testing.models",
    "as_onnx_loaded": "governance.testing.models",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'governance.testing' has no attribute {name!r}")
