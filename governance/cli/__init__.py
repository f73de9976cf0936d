"""The ``governance`` command line. Sub-commands live in their own modules and are imported only when
invoked, so ``governance --help`` stays fast; plugins add commands through the ``register_commands`` hook.

Exit codes (the table in the README): 0 success (and policy pass); 1 unexpected error; 2 usage/config error;
3 plugin error; 4 model not found or not loadable; 5 data error; 6 tracking store unreachable; 7 a method refused
its input outside a run (e.g. `governance retrain`); 8 report error; 10 the run finished but some methods
failed; 11 a policy check failed. The codes live with the errors, in governance.contract.errors.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

#: command name -> "module:attribute" (imported on use)
COMMANDS: dict[str, str] = {
    "run": "governance.cli.run:run_cmd",
    "plugins": "governance.cli.info:plugins_cmd",
    "doctor": "governance.cli.info:doctor_cmd",
    "inspect": "governance.cli.info:inspect_cmd",
    "report": "governance.cli.report:report_cmd",
    "verify": "governance.cli.report:verify_cmd",
    "keygen": "governance.cli.report:keygen_cmd",
    "policy": "governance.cli.report:policy_group",
    "promote": "governance.cli.promote:promote_cmd",
    "serve": "governance.cli.service:serve_cmd",
    "jobs": "governance.cli.service:jobs_cmd",
    "watch": "governance.cli.service:watch_cmd",
    "schedule": "governance.cli.service:schedule_cmd",
    "webhook": "governance.cli.service:webhook_cmd",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use; plugin commands are added on demand."""

    _plugins_added = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, _, attr = COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        if name not in self.commands:
            self._add_plugin_commands()
        return self.commands.get(name)

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        try:
            from governance.host.plugins import get_plugin_host

            host = get_plugin_host()
            before = len(host.hook_errors())
            host.call_each("register_commands", cli=self)  # a raising plugin is recorded, the others still add
            for error in host.hook_errors()[before:]:
                click.echo(f"warning: plugin commands unavailable: {error}", err=True)
        except Exception as exc:  # never let a plugin break the CLI itself
            click.echo(f"warning: plugin commands unavailable: {exc}", err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="governance", prog_name="governance")
def cli() -> None:
    """Explain registered MLflow/ONNX models, log the evidence to MLflow and render compliance reports.

    \b
    Quick start:
      governance run models:/my-model/1            explain one version, log to a new MLflow run
      governance report models:/my-model@champion  explain + PDF compliance report
      governance promote models:/my-model/3 --to champion --policy gate.yaml
                                                   move the alias only if the report passes
      governance plugins                           list method plugins
      governance doctor                            check versions, devices and the tracking store
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: GovernanceError -> one clear message and its exit code."""
    from governance.contract.errors import GovernanceError

    try:
        return cli.main(args=argv, prog_name="governance", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GovernanceError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
