"""governance: explanations, quality evidence and compliance reports for registered ML models.

Public API (imported lazily so that ``governance --help`` stays fast)::

    from governance import hookimpl, Method, MethodConfig, MethodContext, Requirement, Explanation, Control
    from governance.errors import MethodError          # every error class; governance.figures: pyplot()
    from governance.quality import deletion_insertion  # shared quality metrics and control margins
    from governance import explain, report_model, load, resolve    # the Python entry points
    from governance.report import build_report, verify_report       # reports from RunResults
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from governance.contract.hookspecs import HOOK_API_VERSION, hookimpl  # noqa: E402  (pluggy only: cheap)

_LAZY = {
    "Method": "governance.contract.method",
    "MethodConfig": "governance.contract.method",
    "MethodContext": "governance.contract.method",
    "Requirement": "governance.contract.method",
    "Explanation": "governance.contract.results",
    "RunResult": "governance.contract.results",
    "Dataset": "governance.contract.dataset",
    "LoadedModel": "governance.contract.model",
    "ModelVersionInfo": "governance.contract.model",
    "TensorSpec": "governance.contract.model",
    "Control": "governance.contract.evidence",
    "GovernanceError": "governance.contract.errors",
    "ConfigError": "governance.contract.errors",
    "DataError": "governance.contract.errors",
    "MethodError": "governance.contract.errors",
    "explain": "governance.api",
    "report_model": "governance.api",
    "resolve": "governance.api",
    "load": "governance.api",
}

__all__ = ["__version__", "hookimpl", "HOOK_API_VERSION", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'governance' has no attribute {name!r}")
