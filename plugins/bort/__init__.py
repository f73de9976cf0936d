"""Bort for governance: bounded-orthogonal optimizers, a weight audit and reconstruction evidence.

Public API (imported lazily: importing this package does not import torch)::

    from governance_plugins.bort import BortSGD, BortAdamW, with_bort, make_bort_param_groups

    opt = BortAdamW(make_bort_param_groups(model, gamma=10.0), lr=1e-3, weight_decay=0.0)

The ``bort`` method audits any registered model's weights; ``governance retrain MODEL_URI --optimizer bort``
fine-tunes a registered torch model with Bort and registers the result as a new version (pt2 format).
Reference: Zhang, Zheng, Zhou, Lu, *Bort: Towards Explainable Neural Networks with Bounded Orthogonal
Constraint*, ICLR 2023 (arXiv:2212.09062).
"""

from __future__ import annotations

from typing import Any

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)

_LAZY = {
    "BortSGD": "governance_plugins.bort.optim",
    "BortAdamW": "governance_plugins.bort.optim",
    "with_bort": "governance_plugins.bort.optim",
    "bort_correction": "governance_plugins.bort.optim",
    "bort_penalty": "governance_plugins.bort.optim",
    "make_bort_param_groups": "governance_plugins.bort.optim",
    "audit_matrix": "governance_plugins.bort.audit",
    "BortAudit": "governance_plugins.bort.method",
}

__all__ = ["GOVERNANCE_HOOK_API", "register_methods", "register_commands", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'governance_plugins.bort' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


@hookimpl
def register_methods(register: Any) -> None:
    from governance_plugins.bort.method import BortAudit

    register(BortAudit)


@hookimpl
def register_commands(cli: Any) -> None:
    from governance_plugins.bort.cli import retrain_cmd

    cli.add_command(retrain_cmd)
