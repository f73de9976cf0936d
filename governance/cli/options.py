"""Command-line options: those of a job are generated from :class:`governance.run.spec.RunSpec` (one place to add
an option), plus the few that belong to the command line itself (``--json``, ``--tracking-uri`` for commands
that run no job)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click

_TYPES: dict[str, Any] = {
    "int": int,
    "int>=0": click.IntRange(0),
    "int>=1": click.IntRange(1),
    "device": click.Choice(["auto", "cpu", "cuda"]),
    "task": click.Choice(["auto", "classification", "regression"]),
}
#: options whose value names an existing file or folder (checked by click: exit code 2)
_PATHS = {
    "config_file": click.Path(exists=True, dir_okay=False),
    "policy": click.Path(exists=True, dir_okay=False),
    "model_card": click.Path(exists=True, dir_okay=False),
    "template_dirs": click.Path(exists=True, file_okay=False),
    "data": click.Path(dir_okay=False),
    "out_dir": click.Path(file_okay=False),
}


def tracking_option(fn: Callable) -> Callable:
    return click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
                        help="MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db].")(fn)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)


def spec_fields(command: str) -> list[tuple[dataclasses.Field, Any]]:
    """The RunSpec fields (with their CliOption) that ``command`` ("run", "report", "service") exposes."""
    from governance.run.spec import RunSpec

    out = []
    for f in dataclasses.fields(RunSpec):
        cli = f.metadata.get("cli")
        if cli is not None and command in cli.commands:
            out.append((f, cli))
    return out


def _click_option(f: dataclasses.Field, cli: Any) -> Callable:
    kw: dict[str, Any] = {"help": cli.help}
    if cli.metavar:
        kw["metavar"] = cli.metavar
    if cli.envvar:
        kw["envvar"] = cli.envvar
    if cli.kind == "flag":
        kw["default"] = f.default
        if "/" not in cli.flags[0]:
            kw["is_flag"] = True
    else:
        kw["default"] = None
        if cli.kind == "multiple":
            kw["multiple"] = True
            kw["default"] = ()
        kind = dict(cli.click).get("type")
        if kind is not None:
            kw["type"] = _TYPES[kind]
        elif f.name in _PATHS:
            kw["type"] = _PATHS[f.name]
    return click.option(*cli.flags, f.name, **kw)


def spec_options(command: str) -> Callable[[Callable], Callable]:
    """A decorator adding the RunSpec options of ``command`` to a click command; the command function
    receives them as keyword arguments named like the fields (build the spec with :func:`spec_from_cli`)."""
    decorators = [_click_option(f, cli) for f, cli in spec_fields(command)]

    def apply(fn: Callable) -> Callable:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn

    return apply


def spec_from_cli(kwargs: dict[str, Any], command: str) -> Any:
    """Pop ``command``'s RunSpec options out of ``kwargs`` and build the RunSpec: ``a,b`` lists split, and an
    option not given falls back to the settings file (governance.host.settings), then to the field's default."""
    from governance.host.settings import setting
    from governance.run.spec import RunSpec, split_csv

    values: dict[str, Any] = {}
    for f, cli in spec_fields(command):
        value = kwargs.pop(f.name)
        if cli.kind == "csv":
            value = split_csv(value)
        elif cli.kind == "multiple":
            value = tuple(value)
        if cli.settings and value in (None, ()):
            found = setting(cli.settings)
            value = tuple([found] if isinstance(found, str) else found) if cli.kind == "multiple" and found else \
                (found if found is not None else value)
        if value is None and f.default is not dataclasses.MISSING:
            value = f.default
        values[f.name] = value
    return RunSpec.build(values)


def echo_json(obj: Any) -> None:
    import json

    from governance.contract.results import jsonable

    click.echo(json.dumps(jsonable(obj), indent=2))


def invocation() -> str | None:
    """The command line as typed (for the reproducibility annex)."""
    import shlex
    import sys

    return shlex.join(["governance", *sys.argv[1:]]) if sys.argv else None
