"""``governance run URI URI ...`` and ``--executor ray``: several models fanned out by an executor."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from governance.cli.options import echo_json, method_config, split_csv


def execute_many(model_uris: tuple[str, ...], executor: str, *, as_json: bool, **options: Any) -> None:
    """Several models (or any non-local executor): fan out, print each outcome, exit with the worst."""
    from governance.api import explain_many
    from governance.cli import EXIT_METHODS_FAILED
    from governance.cli.run import print_run_summary
    from governance.contract.errors import GovernanceError

    outcomes = explain_many(
        list(model_uris), executor=executor, return_exceptions=True, methods=split_csv(options["methods"]),
        data=options["data"], target=options["target"], peers=split_csv(options["peers"]),
        config=method_config(options["config_file"], options["overrides"]), device=options["device"],
        seed=options["seed"], max_samples=options["max_samples"], experiment=options["experiment"],
        force=options["force"], plugins=split_csv(options["plugins"]), tracking_uri=options["tracking_uri"],
        output=options.get("output") or None, task=None if options.get("task") in (None, "auto") else options["task"],
        invocation=shlex.join(["governance", *sys.argv[1:]]) if sys.argv else None,
    )
    errors = [(uri, o) for uri, o in zip(model_uris, outcomes) if isinstance(o, BaseException)]
    for uri, exc in errors:
        if not isinstance(exc, GovernanceError):
            raise exc
        click.secho(f"error: {uri}: {exc}", fg="red", err=True)
    runs = [o for o in outcomes if not isinstance(o, BaseException)]
    if as_json and len(model_uris) == 1:
        if runs:
            echo_json(runs[0].to_dict())
    elif as_json:
        echo_json([r.to_dict() for r in runs])
    else:
        for run in runs:
            print_run_summary(run)
    if errors:
        sys.exit(errors[0][1].exit_code)
    if any(r.status != "ok" for r in runs):
        sys.exit(EXIT_METHODS_FAILED)
