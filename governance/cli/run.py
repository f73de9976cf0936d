"""``governance run``: explain one model version and log everything to a new MLflow run."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from governance.cli.options import echo_json, method_config, run_options, split_csv


def progress_printer(enabled: bool) -> tuple[Any, Any]:
    """A rich progress bar on a TTY, nothing otherwise (CI logs stay clean). Returns (callback, context)."""
    if not enabled:
        import contextlib

        return (lambda method, fraction, message: None), contextlib.nullcontext()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<14}"), BarColumn(), TextColumn("{task.fields[msg]}"),
                   TimeElapsedColumn(), transient=False)
    tasks: dict[str, Any] = {}

    def update(method: str, fraction: float, message: str) -> None:
        name = method or "setup"
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=1.0, msg="")
        bar.update(tasks[name], completed=min(max(fraction, 0.0), 1.0), msg=message[:60])

    return update, bar


def execute_run(model_uri: str, *, methods: str | None, data: str | None, target: str | None, peers: str | None,
                config_file: str | None, overrides: tuple[str, ...], device: str, seed: int, max_samples: int,
                experiment: str, force: bool, plugins: str | None, tracking_uri: str | None, quiet: bool,
                output: str | None = None, task: str | None = None) -> Any:
    from governance.api import explain

    callback, bar = progress_printer(not quiet and sys.stderr.isatty())
    with bar:
        return explain(
            model_uri, methods=split_csv(methods), data=data, target=target, peers=split_csv(peers),
            config=method_config(config_file, overrides), device=device, seed=seed, max_samples=max_samples,
            experiment=experiment, force=force, plugins=split_csv(plugins), tracking_uri=tracking_uri,
            output=output or None, task=None if task in (None, "auto") else task, progress=callback, invocation=shlex.join(["governance", *sys.argv[1:]]) if sys.argv else None,
        )


def print_run_summary(run: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    model = run.model
    title = f"{model.get('name') or model.get('uri')} v{model.get('version') or '-'}"
    console.print(f"[bold]{title}[/bold]  run [cyan]{run.mlflow_run_id}[/cyan]  status [bold]{run.status}[/bold]"
                  + ("  (reused an identical earlier run)" if run.reused else ""))
    table = Table(show_header=True, header_style="bold")
    for col in ("method", "status", "seconds", "key metrics / reason"):
        table.add_column(col)
    for e in run.explanations:
        if e.status == "ok":
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(e.metrics.items())[:4] if isinstance(v, (int, float)))
        else:
            shown = (e.reason or "").splitlines()[0][:100]
        table.add_row(e.method, e.status, f"{e.seconds:.2f}" if e.seconds is not None else "-", shown)
    console.print(table)
    if run.workdir:
        console.print(f"local copy: {run.workdir}")


@click.command("run")
@click.argument("model_uris", nargs=-1, required=True, metavar="MODEL_URI...")
@run_options
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              envvar="GOVERNANCE_EXECUTOR",
              help="Where several models run: local (one after the other) or ray (one Ray task per model; "
              "RAY_ADDRESS joins a cluster; needs pip install 'governance[ray]') [env GOVERNANCE_EXECUTOR].")
def run_cmd(model_uris: tuple[str, ...], methods: str | None, data: str | None, target: str | None,
            peers: str | None, config_file: str | None, overrides: tuple[str, ...], device: str, seed: int,
            max_samples: int, experiment: str, force: bool, plugins: str | None, tracking_uri: str | None,
            as_json: bool, executor: str, output: str | None = None, task: str = "auto") -> None:
    """Explain each MODEL_URI (models:/name/3, models:/name@alias, runs:/id/path or a .onnx file) and log the
    explanations, metrics and figures to a new MLflow run linked to the model version.

    Exit code 0 when every selected method ran (or was skipped with a reason), 10 when some failed. With
    several models, --json prints a list, and a model that cannot be run is reported without stopping the
    others (the exit code is then that error's).
    """
    from governance.cli import EXIT_METHODS_FAILED

    if len(model_uris) > 1 or executor != "local":
        from governance.cli.many import execute_many

        execute_many(model_uris, executor, as_json=as_json, methods=methods, data=data, target=target, peers=peers,
                     config_file=config_file, overrides=overrides, device=device, seed=seed,
                     max_samples=max_samples, experiment=experiment, force=force, plugins=plugins,
                     tracking_uri=tracking_uri, output=output, task=task)
        return
    model_uri = model_uris[0]
    run = execute_run(model_uri, methods=methods, data=data, target=target, peers=peers, config_file=config_file,
                      overrides=overrides, device=device, seed=seed, max_samples=max_samples, experiment=experiment,
                      force=force, plugins=plugins, tracking_uri=tracking_uri, quiet=as_json, output=output,
                      task=task)
    if as_json:
        echo_json(run.to_dict())
    else:
        print_run_summary(run)
    if run.status != "ok":
        sys.exit(EXIT_METHODS_FAILED)
