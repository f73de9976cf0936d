"""The published plugin contract of governance: every hook a plugin may implement.

A plugin is any importable module or object exposing functions decorated with
:data:`governance.hookimpl`, advertised through the ``governance.plugins`` entry-point group (the built-in
methods use the very same group). Hooks are always called with keyword arguments, so an implementation
may accept fewer arguments than its specification ("opt-in arguments"): new arguments are only ever
added, never renamed or removed, and each addition bumps :data:`HOOK_API_VERSION`'s minor number.

Versioning policy: ``HOOK_API_VERSION = (major, minor)``. A plugin may declare
``GOVERNANCE_HOOK_API = (major, minor)`` at module level; the host refuses a plugin whose major differs
and warns when the plugin wants a newer minor than the host offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from governance.contract.method import Method
    from governance.contract.model import LoadedModel, ModelVersionInfo
    from governance.contract.results import Explanation, RunResult

PROJECT_NAME = "governance"
ENTRY_POINT_GROUP = "governance.plugins"
HOOK_API_VERSION: tuple[int, int] = (1, 0)

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------- registration
@hookspec
def register_methods(register: Callable[["type[Method]"], None]) -> None:
    """Register explanation methods by calling ``register(MethodClass)`` once per method.

    The host owns the registered classes: it lists them, selects them with ``--methods``, checks their
    requirements against the loaded model and calls ``explain`` itself, one method at a time, with
    failures isolated. ``MethodClass.name`` must be unique across all plugins.

    .. versionadded:: 1.0
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add sub-commands to the ``governance`` command line (e.g. ``retrain``, ``train-interpretable``).

    Keep imports inside the command functions: ``governance --help`` must stay fast.

    .. versionadded:: 1.0
    """


# --------------------------------------------------------------------------------------- models
@hookspec(firstresult=True)
def load_model(info: "ModelVersionInfo", options: dict[str, Any]) -> "LoadedModel | None":
    """Load a resolved model version, or return ``None`` when this plugin does not handle its flavor.

    ``info.flavors`` lists the MLflow flavors in the model's ``MLmodel`` file and ``info.local_path`` the
    downloaded files. ``options`` holds ``device`` (``"auto" | "cpu" | "cuda"``), ``batch_size`` (an int or
    ``None``), ``output`` (the name of the model output to explain, ``--output``; ``None``: the loader chooses, e.g. the probabilities of a converted classifier rather
    than its label) and ``task`` (``"classification" | "regression"``, ``--task``; ``None``: detect it
    and set ``LoadedModel.task``/``task_reason``), and ``trust_pickle: True`` only when the user opted in to
    pickle-format models (``--trust-pickle``): a loader that would unpickle must refuse otherwise (README,
    "Pickle-format models"). Keys may be added; ignore the ones you do not know.

    Stops at the first non-None result; plugins registered later are called first, so a third-party
    loader can take over a flavor from the built-in one.

    .. versionadded:: 1.0
    """


# --------------------------------------------------------------------------------------- report
@hookspec
def report_sections(report: dict[str, Any]) -> "list[dict[str, Any]] | None":
    """Return extra report sections: dicts with ``id``, ``title``, ``template`` (a Jinja2 template name
    visible to the report's loader) or ``html`` (trusted markup you produced), and ``context``.

    ``report`` is a deep read-only view of the report's JSON document (mappings are ``MappingProxyType``,
    lists are tuples).

    .. versionadded:: 1.0
    """


# --------------------------------------------------------------------------------------- run lifecycle
@hookspec
def run_started(run: "RunResult") -> None:
    """Called once the model is loaded and the methods are planned, before any method runs.

    .. versionadded:: 1.0
    """


@hookspec
def method_finished(run: "RunResult", explanation: "Explanation") -> None:
    """Called after each method finished, failed or was skipped.

    .. versionadded:: 1.0
    """


@hookspec
def run_finished(run: "RunResult") -> None:
    """Called after every method ran and the results were logged.

    .. versionadded:: 1.0
    """
