"""The conformance suite itself: it passes a correct third-party method (the fixture plugin's occlusion, and
every installed built-in method), and each check catches the mistake it exists for."""

from __future__ import annotations

import sys
import textwrap
import warnings

import numpy as np
import pytest

from governance import Explanation, Method, MethodConfig, Requirement
from governance.testing import MethodConformance, check_method, check_plugin
from governance.testing import conformance as conf
from governance.testing.conformance import Case, ConformanceError, ForwardOnlyModel
from tests.conftest import FIXTURE_PLUGINS


@pytest.fixture(scope="module", autouse=True)
def fixture_plugin_on_path():
    """The fixture distribution (entry points `testplugin`, `broken`) is discoverable for this module."""
    sys.path.insert(0, str(FIXTURE_PLUGINS))
    yield
    sys.path.remove(str(FIXTURE_PLUGINS))
    sys.modules.pop("gov_testplugin", None)


# ------------------------------------------------------------------------- the suite on a real third-party method
class TestOcclusionConformance(MethodConformance):
    """What a plugin author writes: the whole suite on the fixture plugin's occlusion method."""

    plugin = "testplugin"
    method = "occlusion"
    config = {"n_samples": 6}
    n_samples = 12


def test_check_plugin_reports_each_method(tmp_path):
    """The function form: occlusion passes everything, the deliberately crashing method fails where it runs."""
    results = check_plugin("testplugin", config={"occlusion": {"n_samples": 4}}, raise_on_failure=False,
                           models=["bc-mlp"], runtimes=["torch"], n_samples=8, workdir=tmp_path)
    by = {(r.method, r.check): r for r in results}
    assert all(r.status != "failed" for r in results if r.method == "occlusion"), [str(r) for r in results]
    assert by[("occlusion", "registration")].status == "passed"
    assert by[("occlusion", "cheap_import")].status == "passed"
    crash = by[("crash", "runs")]
    assert crash.status == "failed" and "deliberate failure inside the method" in crash.message
    with pytest.raises(ConformanceError, match=r"crash\.runs\[bc-mlp-torch\]"):
        check_plugin("testplugin", models=["bc-mlp"], runtimes=["torch"], n_samples=8, workdir=tmp_path / "again")


def test_unknown_plugin_and_method_names_say_what_is_installed():
    with pytest.raises(ConformanceError, match="not installed in the 'governance.plugins' group"):
        conf.check_registration(_good_class(), "no-such-plugin")
    with pytest.raises(ConformanceError, match="no method named 'nope' is registered by plugin 'testplugin'"):
        conf.resolve_method("nope", "testplugin")


# ------------------------------------------------------------------------- built-in methods, once merged
def _builtin_methods() -> list[tuple[str, str]]:
    from governance.host.plugins import PluginHost

    host = PluginHost(strict=False)
    return sorted((name, host.plugin_of(name)) for name in host.methods
                  if (rec := host.record(host.plugin_of(name))) is not None and rec.builtin)


BUILTINS = _builtin_methods()
#: settings that keep a built-in fast on the tiny reference models (the suite checks they are valid keys)
FAST = {"interpreter": {"epochs": 2, "min_steps_per_epoch": 20}, "interaction": {"n_variables": 4, "n_samples": 2}}


@pytest.mark.skipif(not BUILTINS, reason="no built-in method is installed yet")
@pytest.mark.parametrize("method,plugin", BUILTINS or [("none", "none")], ids=[m for m, _ in BUILTINS] or ["none"])
def test_builtin_method_conforms(method, plugin, tmp_path):
    """Every built-in passes the suite (one case per model and runtime: digits CNN on torch, MLP on ONNX)."""
    results = []
    for model, runtime in (("digits-cnn", "torch"), ("bc-mlp", "onnx")):
        results += check_method(method, plugin=plugin, config=FAST.get(method), models=[model], runtimes=[runtime],
                                n_samples=32, workdir=tmp_path / model, raise_on_failure=False)
    failed = [str(r) for r in results if r.status == "failed"]
    assert not failed, "\n".join(failed)


# ------------------------------------------------------------------------- each check catches its mistake
def _good_class(**overrides):
    """A small correct forward-only method: mean |logit| drop when all features are set to the baseline."""

    class Cfg(MethodConfig):
        scale: float = 1.0

    def explain(self, ctx, **kwargs):
        X = ctx.data.X
        drop = ctx.model.predict(X) - ctx.model.predict(np.broadcast_to(ctx.data.baseline, X.shape).copy())
        fig, ax = __import__("governance.contract.figures", fromlist=["pyplot"]).pyplot().subplots(figsize=(4, 2))
        ax.plot(np.abs(drop).mean(0))
        ax.set_title("drop")
        return Explanation(method=self.name, summary="Baseline drop computed.",
                           metrics={"mean_drop": float(np.abs(drop).mean()) * ctx.config.scale},
                           arrays={"drop": drop}, figures={"drop": ctx.save_figure(fig, "drop")})

    attrs = dict(name="good", version="1.0.0", title="Good", description="d", reference="r", Config=Cfg,
                 explain=explain)
    attrs.update(overrides)
    return type("Good", (Method,), attrs)


@pytest.fixture
def bc_ctx(tmp_path):
    runner = conf.MethodRunner(_good_class(), config=None, n_samples=8, seed=0, folder=tmp_path)
    case = Case("bc-mlp", "torch")
    return runner, case


def _explain_with(bc_ctx, explain):
    runner, case = bc_ctx
    cls = _good_class(explain=explain)
    ctx = conf.make_context(cls, runner.model(case), runner.data(case), cls.parse_config({}),
                            workdir=runner.folder / "w", seed=0)
    return cls, conf.run_explain(cls, ctx), ctx


def test_a_correct_method_passes_every_check(tmp_path):
    results = check_method(_good_class(), models=["bc-mlp"], runtimes=["torch", "onnx"], n_samples=8,
                           workdir=tmp_path)
    assert {r.status for r in results if r.check != "report_section"} == {"passed"}, [str(r) for r in results]
    assert {r.message for r in results if r.check == "report_section"} == {"no report_template"}
    assert {r.check for r in results} >= {"class_contract", "config", "runs", "explanation", "deterministic",
                                          "forward_only", "refuses_without_requirements"}


@pytest.mark.parametrize("bad_return,message", [
    (lambda self, ctx: Explanation(method="other", summary="s"), "Explanation.method is 'other'"),
    (lambda self, ctx: Explanation(method=self.name, summary=""), "summary is empty"),
    (lambda self, ctx: Explanation(method=self.name, summary="s", metrics={"m": np.float32(1)}), "not a plain float"),
    (lambda self, ctx: Explanation(method=self.name, summary="s", metrics={"m": float("nan")}), "must be finite"),
    (lambda self, ctx: Explanation(method=self.name, summary="s", arrays={"a": [1, 2]}), "not a numpy array"),
    (lambda self, ctx: Explanation(method=self.name, summary="s", arrays={"a": np.array([{}])}), "without pickle"),
    (lambda self, ctx: Explanation(method=self.name, summary="s", details={"x": object()}), "does not serialise"),
    (lambda self, ctx: Explanation(method=self.name, status="failed", reason="boom"), "failed on a reference model"),
])
def test_explanation_checks_catch_bad_results(bc_ctx, bad_return, message):
    cls, expl, ctx = _explain_with(bc_ctx, lambda self, ctx, **kw: bad_return(self, ctx))
    with pytest.raises(ConformanceError, match=message):
        conf.check_explanation(cls, expl, ctx)


def test_figure_checks_want_pngs_inside_the_workdir(bc_ctx, tmp_path):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n0000")
    cls, expl, ctx = _explain_with(bc_ctx, lambda self, ctx, **kw: Explanation(
        method=self.name, summary="s", figures={"f": outside}))
    with pytest.raises(ConformanceError, match="outside ctx.workdir"):
        conf.check_explanation(cls, expl, ctx)
    fake = ctx.workdir / "fake.png"
    fake.write_text("not an image")
    expl.figures = {"f": fake}
    with pytest.raises(ConformanceError, match="is not a PNG file"):
        conf.check_explanation(cls, expl, ctx)


def test_timing_metrics_are_exempt_from_determinism(bc_ctx):
    def timed(self, ctx, **kw):
        import time

        return Explanation(method=self.name, summary="s", metrics={"fit_seconds": time.perf_counter(), "k": 1.0})

    cls, first, _ = _explain_with(bc_ctx, timed)
    _, second, _ = _explain_with(bc_ctx, timed)
    conf.check_deterministic(first, second)
    assert conf.is_timing_metric("seconds_per_input") and conf.is_timing_metric("masked_inputs_per_second")
    assert not conf.is_timing_metric("secondary_score") and not conf.is_timing_metric("second_order_gap")


def test_nondeterminism_is_caught(bc_ctx):
    def unseeded(self, ctx, **kw):
        noise = np.random.default_rng().standard_normal(3)  # not ctx.rng: differs every run
        return Explanation(method=self.name, summary="s", metrics={"m": float(noise[0])}, arrays={"n": noise})

    cls, first, _ = _explain_with(bc_ctx, unseeded)
    _, second, _ = _explain_with(bc_ctx, unseeded)
    with pytest.raises(ConformanceError, match="differs between two runs with the same seed"):
        conf.check_deterministic(first, second)


@pytest.mark.parametrize("overrides,message", [
    ({"name": "Bad Name"}, "short lowercase name"),
    ({"version": ""}, "version string"),
    ({"title": ""}, "title is empty"),
    ({"requires": {"gradients"}}, "frozenset of governance.Requirement"),
    ({"report_template": "section.html.j2"}, "package.module:path"),
    ({"explain": lambda self, ctx: None}, r"must accept \*\*kwargs"),
])
def test_class_contract_catches_bad_declarations(overrides, message):
    with pytest.raises(ConformanceError, match=message):
        conf.check_class_contract(_good_class(**overrides))


def test_class_contract_warns_about_missing_description():
    with pytest.warns(conf.ConformanceWarning, match="description is empty"):
        conf.check_class_contract(_good_class(description=""))


def test_config_must_forbid_unknown_keys_and_have_defaults():
    from pydantic import ConfigDict

    class Loose(MethodConfig):
        model_config = ConfigDict(extra="allow")

    class NoDefault(MethodConfig):
        k: int

    with pytest.raises(ConformanceError, match="allows unknown keys"):
        conf.check_class_contract(_good_class(Config=Loose))
    with pytest.raises(ConformanceError, match="accepted an unknown key"):
        conf.check_config(_good_class(Config=Loose))
    with pytest.raises(ConformanceError, match="give every field a default"):
        conf.check_config(_good_class(Config=NoDefault))
    with pytest.raises(ConformanceError, match="conformance config"):
        conf.check_config(_good_class(), {"scale": "not a number"})
    assert conf.check_config(_good_class(), {"scale": 2.0}).scale == 2.0


def test_can_explain_must_return_reasons(bc_ctx):
    runner, case = bc_ctx
    model, data = runner.model(case), runner.data(case)

    def raising(cls, *, model, data):
        raise RuntimeError("no torch view")

    with pytest.raises(ConformanceError, match="can_explain raised RuntimeError"):
        conf.check_can_explain(_good_class(can_explain=classmethod(raising)), model, data)
    forgetful = _good_class(requires=frozenset({Requirement.GRADIENTS}),
                            can_explain=classmethod(lambda cls, *, model, data: None))  # never calls super()
    with pytest.raises(ConformanceError, match="accepted a forward-only model"):
        conf.check_refuses_without_requirements(forgetful, model, data)
    needs_labels = _good_class(requires=frozenset({Requirement.FORWARD, Requirement.LABELS}))
    conf.check_refuses_without_requirements(needs_labels, model, data)  # the base class does it right
    grad = _good_class(requires=frozenset({Requirement.GRADIENTS}))
    reason = conf.check_can_explain(grad, ForwardOnlyModel(model), data)
    assert "forward-only model" in reason


def test_forward_only_model_predicts_like_its_base_but_has_no_torch_view(bc_ctx):
    runner, case = bc_ctx
    base = runner.model(case)
    fwd = ForwardOnlyModel(base)
    X = runner.data(case).X
    np.testing.assert_array_equal(fwd.predict(X), base.predict(X))
    assert fwd.torch_module() is None and not fwd.has_gradients and fwd.parameters() == {}


def test_report_section_checks(bc_ctx, tmp_path, monkeypatch):
    pkg = tmp_path / "conf_section_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.html.j2").write_text(textwrap.dedent("""\
        <section><h2>{{ explanation.title }}</h2><p>{{ explanation.summary }}</p>
        <p>mean drop {{ explanation.metrics.mean_drop | num }}</p>
        <figure><img src="{{ figure_src['drop'] }}"><figcaption>Drop per output</figcaption></figure></section>"""))
    (pkg / "nofig.html.j2").write_text("<p>{{ explanation.summary }}</p>")
    (pkg / "broken.html.j2").write_text("<p>{{ explanation.summary </p>")
    monkeypatch.syspath_prepend(str(tmp_path))
    runner, case = bc_ctx
    cls = _good_class(report_template="conf_section_pkg:good.html.j2")
    ctx = conf.make_context(cls, runner.model(case), runner.data(case), cls.parse_config({}), workdir=tmp_path / "w")
    expl = conf.run_explain(cls, ctx)
    html = conf.check_report_section(cls, expl)
    assert "data:image/png;base64," in html and "Baseline drop computed." in html
    for name, message in (("nofig", "shows none of its figures"), ("broken", "failed to render"),
                          ("missing", "cannot be read")):
        with pytest.raises(ConformanceError, match=message):
            conf.check_report_section(_good_class(report_template=f"conf_section_pkg:{name}.html.j2"), expl)


def test_heavy_imports_in_the_plugin_module_are_caught(tmp_path, monkeypatch):
    (tmp_path / "conf_heavy_plugin.py").write_text("import numpy\nfrom governance import hookimpl\n")
    (tmp_path / "conf_light_plugin.py").write_text("from governance import hookimpl\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConformanceError, match="imports numpy"):
        conf.check_cheap_import("conf_heavy_plugin")
    conf.check_cheap_import("conf_light_plugin")


def _entry_point_plugin(folder, module: str, name: str, source: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[governance.plugins]\n{name} = {module}\n")


def test_loading_through_the_host_measures_what_the_plugin_adds(tmp_path, monkeypatch):
    """Through the entry point, the way `governance --help` loads plugins: a module-level import of a heavy
    package is caught; lazy module attributes are not a cost (hooks are found without touching them)."""
    _entry_point_plugin(tmp_path, "conf_heavy_ep", "heavyplugin", """\
        import scipy
        from governance import hookimpl
        """)
    _entry_point_plugin(tmp_path, "conf_lazy_ep", "lazyplugin", """\
        from governance import hookimpl

        def __getattr__(name):
            if name == "Heavy":
                import scipy
                return scipy
            raise AttributeError(name)

        def __dir__():
            return ["Heavy", "hookimpl"]
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    # scipy drags numpy in too, now that the host itself imports neither at plugin load
    with pytest.raises(ConformanceError, match="loading plugin 'heavyplugin'.*imports .*scipy"):
        conf.check_cheap_import("conf_heavy_ep", "heavyplugin")
    conf.check_cheap_import("conf_lazy_ep", "lazyplugin")


def test_check_method_collects_failures_instead_of_stopping(tmp_path):
    def crashes(self, ctx, **kw):
        raise ValueError("shape mismatch in my method")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the runner must not leak ConformanceWarnings
        results = check_method(_good_class(explain=crashes, description=""), models=["bc-mlp"],
                               runtimes=["torch"], n_samples=8, workdir=tmp_path, raise_on_failure=False)
    failed = {r.check: r.message for r in results if r.status == "failed"}
    assert failed.keys() == {"runs", "forward_only"}
    assert "ValueError: shape mismatch in my method" in failed["runs"]
    assert next(r for r in results if r.check == "class_contract").status == "passed"


def test_case_names_are_validated():
    with pytest.raises(ConformanceError, match="unknown reference model 'resnet'"):
        conf.all_cases(["resnet"])
    with pytest.raises(ConformanceError, match="unknown runtime 'tvm'"):
        conf.all_cases(runtimes=["tvm"])
    assert [c.id for c in conf.all_cases()] == ["digits-cnn-torch", "digits-cnn-onnx", "bc-mlp-torch", "bc-mlp-onnx"]


def test_forward_only_fixture(governance_forward_only):
    ctx = governance_forward_only("bc-mlp", n=8)
    assert ctx.model.torch_module() is None and len(ctx.data) == 8
