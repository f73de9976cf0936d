"""``governance run``: explain one or several model versions and log everything to new MLflow runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from governance.cli.options import echo_json, invocation, json_option, spec_from_cli, spec_options


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
    for warning in getattr(run, "warnings", []) or []:
        console.print(f"[yellow]warning[/yellow] {warning}")


def _run_one(model_uri: str, spec: Any, as_json: bool, workdir: Path) -> list[Any]:
    from governance.api import explain

    callback, bar = progress_printer(not as_json and sys.stderr.isatty())
    with bar:
        return [explain(model_uri, spec=spec, progress=callback, invocation=invocation(), workdir=workdir)]


def _run_many(model_uris: tuple[str, ...], spec: Any, executor: str,
              workdir: Path) -> tuple[list[Any], list[tuple[str, Any]]]:
    """Fan out; a model that cannot be run is reported (GovernanceError) without stopping the others."""
    from governance.api import explain_many
    from governance.contract.errors import GovernanceError

    outcomes = explain_many(list(model_uris), executor=executor, return_exceptions=True, spec=spec,
                            invocation=invocation(), workdir=workdir)
    errors = [(uri, o) for uri, o in zip(model_uris, outcomes) if isinstance(o, BaseException)]
    for uri, exc in errors:
        if not isinstance(exc, GovernanceError):
            raise exc
        click.secho(f"error: {uri}: {exc}", fg="red", err=True)
    return [o for o in outcomes if not isinstance(o, BaseException)], errors


@click.command("run")
@click.argument("model_uris", nargs=-1, required=True, metavar="MODEL_URI...")
@spec_options("run")
@json_option
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              envvar="GOVERNANCE_EXECUTOR",
              help="Where several models run: local (one after the other) or ray (one Ray task per model; "
              "RAY_ADDRESS joins a cluster; needs pip install 'governance[ray]') [env GOVERNANCE_EXECUTOR].")
def run_cmd(model_uris: tuple[str, ...], as_json: bool, executor: str, **options: Any) -> None:
    """Explain each MODEL_URI (models:/name/3, models:/name@alias, runs:/id/path or a .onnx file) and log the
    explanations, metrics and figures to a new MLflow run linked to the model version.

    Exit code 0 when every selected method ran (or was skipped with a reason), 10 when some failed. With
    several models, --json prints a list, and a model that cannot be run is reported without stopping the
    others (the exit code is then that error's).
    """
    from governance.contract.errors import EXIT_METHODS_FAILED

    spec = spec_from_cli(options, "run")
    errors: list[tuple[str, Any]] = []
    from governance.api import job_folder

    # the evidence is in MLflow once the run is logged: the local working copy goes, success or failure
    with job_folder(None) as tmp:
        if len(model_uris) > 1 or executor != "local":
            runs, errors = _run_many(model_uris, spec, executor, tmp)
        else:
            runs = _run_one(model_uris[0], spec, as_json, tmp)
    for run in runs:
        run.workdir = None
    if as_json:
        if len(model_uris) == 1:
            if runs:
                echo_json(runs[0].to_dict())
        else:
            echo_json([r.to_dict() for r in runs])
    else:
        for run in runs:
            print_run_summary(run)
    if errors:
        sys.exit(errors[0][1].exit_code)
    if any(r.status != "ok" for r in runs):
        sys.exit(EXIT_METHODS_FAILED)
