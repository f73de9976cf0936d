"""One test per hook in governance/hookspecs.py, through the host's real call sites (docs/hooks.md promises
what each checks; tests/test_docs.py checks that every hook has a test named after it)."""

from __future__ import annotations

import click
import pytest

from governance import Explanation, Method, hookimpl
from governance.contract.errors import ModelLoadError
from governance.contract.model import ModelVersionInfo
from governance.host.plugins import PluginHost


class Echo(Method):
    name = "echo"
    version = "1.0.0"
    title = "Echo"

    def explain(self, ctx, **kwargs):
        return Explanation(method=self.name, summary="echo", metrics={"n": float(len(ctx.data))})


def _host(*plugins):
    host = PluginHost(autoload=False)
    for k, plugin in enumerate(plugins):
        host.register_plugin(plugin, f"p{k}")
    return host


def test_register_methods_adds_methods_the_host_owns():
    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(Echo)

    host = _host(Plugin())
    assert host.methods["echo"] is Echo and host.plugin_of("echo") == "p0"
    assert host.record("p0").methods == ["echo"]


def test_register_commands_adds_a_cli_subcommand(monkeypatch, cli_invoke):
    from governance.cli import cli

    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello-hook")
            @click.argument("who")
            def hello(who):
                """Say hello."""
                click.echo(f"hello {who}")

    monkeypatch.setattr("governance.host.plugins._default_host", _host(Plugin()))
    monkeypatch.setattr(cli, "_plugins_added", False, raising=False)
    try:
        code, out, err = cli_invoke("hello-hook", "world")
        assert code == 0 and out.strip() == "hello world"
        code, out, _ = cli_invoke("--help")
        assert "hello-hook" in out
    finally:
        cli.commands.pop("hello-hook", None)


def test_load_model_is_firstresult_and_later_plugins_win(tmp_path):
    from governance.run.pipeline import load_model
    from governance.testing.models import as_loaded, tabular_mlp

    model = as_loaded(tabular_mlp(4, 2, (3,)), (4,))
    calls = []

    class Custom:  # handles a flavor the built-in loader does not know
        @hookimpl
        def load_model(self, info, options):
            calls.append(options["device"])
            return model if "custom" in info.flavors else None

    class Declines:  # opt-in arguments: takes only what it needs
        @hookimpl
        def load_model(self, info):
            calls.append("declines")
            return None

    host = _host(Custom(), Declines())
    info = ModelVersionInfo(uri="x", kind="file", flavors={"custom": {}})
    assert load_model(info, device="cpu", batch_size=None, host=host) is model
    assert calls == ["declines", "cpu"]  # registered later, called first; stops at the first model
    with pytest.raises(ModelLoadError, match="no installed plugin can load"):
        load_model(ModelVersionInfo(uri="y", kind="file", flavors={"sklearn": {}}), device="cpu", batch_size=None,
                   host=host)


def test_report_sections_collects_every_plugins_sections():
    class A:
        @hookimpl
        def report_sections(self, report):
            return [{"id": "a", "title": "A", "html": f"<p>{len(report['explanations'])}</p>", "context": {}}]

    class Nothing:
        @hookimpl
        def report_sections(self):
            return None

    host = _host(A(), Nothing())
    results = host.hook.report_sections(report={"explanations": [1, 2]})
    assert results == [[{"id": "a", "title": "A", "html": "<p>2</p>", "context": {}}]]  # None results are dropped


class Recorder:
    """Records the lifecycle hook calls of one real run."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def register_methods(self, register):
        register(Echo)

    @hookimpl
    def run_started(self, run):
        self.calls.append(("run_started", run.mlflow_run_id, len(run.explanations), run.status))

    @hookimpl
    def method_finished(self, run, explanation):
        self.calls.append(("method_finished", explanation.method, explanation.status, len(run.explanations)))

    @hookimpl
    def run_finished(self, run):
        self.calls.append(("run_finished", run.mlflow_run_id, run.status))


@pytest.fixture(scope="module")
def lifecycle(registry, tmp_path_factory):
    """One real run (and its reuse) with a recorder plugin."""
    from governance.run.pipeline import Pipeline, RunOptions

    recorder = Recorder()
    host = PluginHost(allow=[])  # host loaders only, plus the recorder
    host.register_plugin(recorder, "recorder")
    opts = RunOptions(methods=["echo"], data=str(registry.data["bc"]), experiment="hooks-lifecycle")
    run = Pipeline("models:/bc-mlp/1", opts, tracking_uri=registry.uri, host=host,
                   workdir=tmp_path_factory.mktemp("lifecycle")).run()
    again = Pipeline("models:/bc-mlp/1", opts, tracking_uri=registry.uri, host=host,
                     workdir=tmp_path_factory.mktemp("lifecycle-reuse")).run()
    return run, again, recorder.calls


def test_run_started_comes_first_with_the_run_created(lifecycle):
    run, _, calls = lifecycle
    assert calls[0] == ("run_started", run.mlflow_run_id, 0, "running")


def test_method_finished_once_per_method_after_upload(lifecycle):
    run, _, calls = lifecycle
    assert calls[1] == ("method_finished", "echo", "ok", 1)


def test_run_finished_last_and_not_for_a_reused_run(lifecycle):
    run, again, calls = lifecycle
    assert calls[2] == ("run_finished", run.mlflow_run_id, "ok")
    assert again.reused and len(calls) == 3  # the reused run called no lifecycle hook
