"""FLINT (Parekh, Mozharovskyi, d'Alché-Buc, NeurIPS 2021): learn an interpreter of a classifier.

* Post-hoc (the governance method ``interpreter``): the registered model stays frozen; an interpreter is
  trained on its cached hidden activations and reported, saved and logged to MLflow.
* By design: :func:`train_interpretable` (Python) and ``governance train-interpretable`` (CLI) train a
  predictor and its interpreter jointly and register both.

This module stays cheap to import (``governance --help`` loads it): the heavy parts are imported on use.
"""

from __future__ import annotations

from typing import Any

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)

__all__ = ["load_interpreter", "interpret", "train_interpretable", "register_interpretable"]


@hookimpl
def register_methods(register):
    from governance_plugins.interpreter.method import FlintMethod

    register(FlintMethod)


@hookimpl
def register_commands(cli):
    from governance_plugins.interpreter.cli import train_interpretable_cmd

    cli.add_command(train_interpretable_cmd)


def load_interpreter(path: Any, map_location: str = "cpu") -> Any:
    """Reload an interpreter saved by the method or by :func:`train_interpretable` (its folder or files)."""
    from governance_plugins.interpreter.storage import load_interpreter as _load

    return _load(path, map_location)


def interpret(interpreter: Any, model: Any, x: Any) -> dict[str, Any]:
    """Logits, attributes and relevances of a reloaded interpreter on new inputs of its LoadedModel."""
    from governance_plugins.interpreter.storage import interpret as _interpret

    return _interpret(interpreter, model, x)


def train_interpretable(predictor: Any, dataset: Any, **kwargs: Any) -> Any:
    """Joint FLINT training; see :func:`governance_plugins.interpreter.by_design.train_interpretable`."""
    from governance_plugins.interpreter.by_design import train_interpretable as _train

    return _train(predictor, dataset, **kwargs)


def register_interpretable(*args: Any, **kwargs: Any) -> Any:
    """Log and register a jointly trained pair; see :mod:`governance_plugins.interpreter.by_design`."""
    from governance_plugins.interpreter.by_design import register_interpretable as _register

    return _register(*args, **kwargs)
