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
        load_model(ModelVersionInfo(uri="y", kind="file", flavors={"h2o": {}}), device="cpu", batch_size=None,
                   host=host)  # a flavor no loader knows (sklearn is converted to ONNX now)


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
    from governance.run.pipeline import Pipeline
    from governance.run.spec import RunSpec

    recorder = Recorder()
    host = PluginHost(allow=[])  # host loaders only, plus the recorder
    host.register_plugin(recorder, "recorder")
    opts = RunSpec(methods=("echo",), data=str(registry.data["bc"]), experiment="hooks-lifecycle")
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


# ----------------------------------------------------------------------------------------------- guarded calls
class Raising:
    """A plugin whose lifecycle hook raises: recorded as its error, the run goes on and ends truthfully."""

    @hookimpl
    def method_finished(self, run, explanation):
        raise RuntimeError("ticket system down")


def test_a_raising_method_finished_hook_is_recorded_and_the_run_still_finishes(registry, tmp_path):
    from mlflow.tracking import MlflowClient

    from governance.run.pipeline import Pipeline
    from governance.run.spec import RunSpec

    recorder = Recorder()
    host = PluginHost(allow=[])
    host.register_plugin(Raising(), "raising")
    host.register_plugin(recorder, "recorder")
    spec = RunSpec(methods=("echo",), data=str(registry.data["bc"]), experiment="hooks-raising")
    run = Pipeline("models:/bc-mlp/1", spec, tracking_uri=registry.uri, host=host, workdir=tmp_path).run()
    mlflow_run = MlflowClient(registry.uri).get_run(run.mlflow_run_id)
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["governance.status"] == "ok"
    assert run.status == "ok" and run.explanation("echo").status == "ok"
    rec = next(p for p in run.plugins if p["name"] == "raising")
    assert rec["hook_errors"] == ["method_finished raised RuntimeError: ticket system down"]
    assert any("raising: method_finished raised RuntimeError" in w for w in run.warnings)
    assert ("method_finished", "echo", "ok", 1) in recorder.calls  # the other plugin's hook still ran
    assert recorder.calls[-1][0] == "run_finished"


def test_a_raising_hook_is_an_error_in_strict_mode(registry, tmp_path):
    from governance.contract.errors import PluginError

    host = PluginHost(allow=[], strict=True)
    host.register_plugin(Raising(), "raising")
    with pytest.raises(PluginError, match="method_finished raised RuntimeError"):
        host.call_each("method_finished", run=None, explanation=None)


def test_call_each_goes_through_pluggy_so_tracing_sees_it():
    seen = []

    class A:
        @hookimpl
        def run_started(self, run):
            seen.append("a")

    host = _host(Raising(), A())
    host.pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(f"before {name}"),
                                    lambda outcome, name, impls, kwargs: None)
    host.call_each("run_started", run=None)
    assert seen == ["before run_started", "a"]


def test_report_sections_gets_a_read_only_view():
    from governance.report.render import read_only

    doc = {"explanations": [{"method": "m", "metrics": {"x": 1.0}}]}
    view = read_only(doc)
    with pytest.raises(TypeError):
        view["explanations"][0]["metrics"]["x"] = 2.0  # a plugin cannot change the report it is shown
    with pytest.raises((TypeError, AttributeError)):
        view["explanations"].append({})
    assert view["explanations"][0]["metrics"]["x"] == 1.0 and doc["explanations"][0]["metrics"]["x"] == 1.0


def test_a_raising_register_commands_is_shown_by_governance_plugins(monkeypatch, cli_invoke):
    import json

    from governance.cli import cli

    class Broken:
        @hookimpl
        def register_commands(self, cli):
            raise ValueError("no click here")

    class Fine:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("fine-hook")
            def fine():
                """Still added."""
                click.echo("fine")

    monkeypatch.setattr("governance.host.plugins._default_host", _host(Broken(), Fine()))
    monkeypatch.setattr(cli, "_plugins_added", False, raising=False)
    try:
        code, out, err = cli_invoke("fine-hook")
        assert code == 0 and out.strip() == "fine"
        assert "p0: register_commands raised ValueError: no click here" in err
        code, out, _ = cli_invoke("plugins", "--all", "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert rows["p0"]["hook_errors"] == ["register_commands raised ValueError: no click here"]
        assert rows["p1"]["hook_errors"] == []
    finally:
        cli.commands.pop("fine-hook", None)
