"""Options shared by several commands, and the parsing of ``--config``/``--set``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from governance.contract.errors import ConfigError


def _from_settings(key: str, default: str) -> Callable[[], str]:
    """A click default read from the settings file at parse time (governance.host.settings)."""

    def value() -> str:
        from governance.host.settings import setting

        return str(setting(key, default))

    return value


def tracking_option(fn: Callable) -> Callable:
    return click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
                        help="MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db].")(fn)


def _trust_pickle(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Set GOVERNANCE_TRUST_PICKLE=1 for this command (and the processes it starts), restored afterwards."""
    if not value:
        return
    import os

    from governance.host.runtimes.pickle_policy import TRUST_ENV

    saved = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = "1"

    def restore() -> None:
        if saved is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = saved

    ctx.call_on_close(restore)


def trust_pickle_option(fn: Callable) -> Callable:
    return click.option("--trust-pickle", is_flag=True, expose_value=False, callback=_trust_pickle,
                        help="Allow pickle-format models: loading one runs any code its author put in it. Only "
                        "when you trust everyone who can register models [env GOVERNANCE_TRUST_PICKLE; "
                        "settings: trust_pickle].")(fn)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)


def run_options(fn: Callable) -> Callable:
    """The options of `governance run` (and `governance report`, which runs what is missing)."""
    decorators = [
        click.option("--methods", "-m", metavar="A,B", help="Methods to run (default: every installed method)."),
        click.option("--data", "-d", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Samples to explain: .npz (X[, y]), .npy, .csv or .parquet. Default: the source run's "
                     "governance/eval.npz artifact, else the model's input example."),
        click.option("--target", metavar="COLUMN", help="Label column of a csv/parquet --data file."),
        click.option("--peers", metavar="URI,URI", help="Models to compare with (default: previous versions)."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                     help="YAML/TOML file with per-method settings: {methods: {neflag: {n_samples: 8}}}."),
        click.option("--set", "overrides", multiple=True, metavar="METHOD.KEY=VALUE",
                     help="Override one method setting (repeatable), e.g. --set neflag.n_samples=8."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=_from_settings("device", "auto"),
                     show_default="auto",
                     help="cuda fails loudly when no GPU is really used."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--max-samples", type=click.IntRange(1), default=512, show_default=True,
                     help="Cap on the samples handed to the methods."),
        click.option("--experiment", default=_from_settings("experiment", "governance"), show_default="governance",
                     help="MLflow experiment for the runs."),
        click.option("--force", is_flag=True, help="Run again even if an identical finished run exists."),
        click.option("--plugins", metavar="A,B", envvar="GOVERNANCE_PLUGINS",
                     help="Load only these plugins [env GOVERNANCE_PLUGINS]."),
        tracking_option,
        trust_pickle_option,
        json_option,
    ]
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def split_csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except Exception:
        return text


def method_config(config_file: str | None, overrides: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Merge the config file's ``methods`` table with ``--set`` overrides."""
    cfg: dict[str, dict[str, Any]] = {}
    if config_file:
        path = Path(config_file)
        try:
            if path.suffix == ".toml":
                import tomllib

                doc = tomllib.loads(path.read_text())
            elif path.suffix == ".json":
                doc = json.loads(path.read_text())
            else:
                import yaml

                doc = yaml.safe_load(path.read_text()) or {}
        except Exception as exc:
            raise ConfigError(f"cannot parse {path}: {exc}", hint="check the YAML/TOML syntax") from exc
        methods = doc.get("methods", doc) if isinstance(doc, dict) else None
        if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
            raise ConfigError(f"{path} must map method names to settings",
                              hint="e.g.  methods:\n    neflag:\n      n_samples: 8")
        cfg = {k: dict(v) for k, v in methods.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise ConfigError(f"--set {item!r} is not METHOD.KEY=VALUE", hint="e.g. --set neflag.n_samples=8")
        cfg.setdefault(method, {})[name] = _parse_value(value)
    return cfg


def echo_json(obj: Any) -> None:
    from governance.contract.results import jsonable

    click.echo(json.dumps(jsonable(obj), indent=2))
