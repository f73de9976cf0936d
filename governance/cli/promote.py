"""``governance promote``: move an alias to a version only when its report passes the policy."""

from __future__ import annotations

import sys
from typing import Any

import click

from governance.cli.options import echo_json, invocation, json_option, spec_from_cli, spec_options


def _print_promotion(promotion: Any) -> None:
    request = promotion.request
    if promotion.dry_run:
        last = (f"; its last report said {promotion.last_verdict} ({promotion.last_report_id})"
                if promotion.last_verdict else "")
        click.echo(f"dry run: models:/{request.name}/{request.version}, @{request.alias} now at "
                   f"{'version ' + request.alias_before if request.alias_before else 'no version'}{last}")
        click.echo(f"  {promotion.plan()}")
        click.echo("  nothing was run or written")
        return
    from governance.cli.report import print_notifications, print_report

    print_report(promotion.report)
    colour = "red" if promotion.blocked else "green"
    click.echo("gate      " + click.style(promotion.action.upper(), fg=colour, bold=True) + f": {promotion.detail}")
    click.echo(f"          {promotion.decision['statement']}")
    for key, value in promotion.tags.items():
        click.echo(f"  tag       {key} = {value}")
    print_notifications(promotion.notifications)


@click.command("promote")
@click.argument("model_uri")
@click.option("--to", "alias", required=True, metavar="ALIAS", help="The alias to move, e.g. champion.")
@click.option("--dry-run", is_flag=True, help="Resolve the version and the alias, check the policy and options, "
              "print what would be done; run and write nothing.")
@spec_options("promote")
@json_option
def promote_cmd(model_uri: str, alias: str, dry_run: bool, as_json: bool, **options: Any) -> None:
    """Report on MODEL_URI under --policy and move ALIAS to it only when the verdict is pass.

    The version is explained (or the identical finished run reused), its report written, logged and tagged,
    and only then is the alias moved. A version that fails (or whose checks could not be evaluated) is not
    promoted: the alias stays where it was, the version is tagged governance.gate=blocked with the failed
    checks, and the command exits 11, which fails a CI pipeline.

    \b
    Examples:
      governance promote models:/fraud/7 --to champion --policy release-gate.yaml
      governance promote models:/fraud@candidate --to champion --policy gate.yaml --dry-run
      governance promote models:/fraud/7 --to champion --policy gate.yaml --notify https://bot.example.com/hook
    """
    from governance.api import promote
    from governance.cli.run import progress_printer

    spec = spec_from_cli(options, "promote")
    callback, bar = progress_printer(not as_json and not dry_run and sys.stderr.isatty())
    with bar:
        promotion = promote(model_uri, to=alias, spec=spec, dry_run=dry_run, progress=callback,
                            invocation=invocation())
    if as_json:
        echo_json(promotion.to_dict())
    else:
        _print_promotion(promotion)
    if promotion.exit_code:
        sys.exit(promotion.exit_code)
