"""The conformance suite: what every governance method plugin must do, checked on tiny real models.

Two ways to run it. As a pytest class (fixtures come from ``governance.testing.pytest_plugin``, which pytest
loads automatically when governance is installed)::

    from governance.testing import MethodConformance

    class TestMyMethod(MethodConformance):
        plugin = "mymethod"          # the entry-point name in your pyproject
        method = "mymethod"          # the registered method name (or the class itself)
        config = {"n_samples": 8}    # keep it fast

Or as a function, from a script or a notebook::

    from governance.testing import check_plugin
    check_plugin("mymethod")         # raises ConformanceError listing every failed check

The reference cases are a small CNN on scikit-learn's 8x8 digits and an MLP on the breast-cancer data, each
run on the torch runtime and on ONNX Runtime (with its converted torch view). Every check raises
:class:`ConformanceError` with what is wrong and how to fix it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from governance.contract.dataset import Dataset
from governance.contract.method import Method, MethodConfig, MethodContext, Requirement
from governance.contract.model import LoadedModel
from governance.contract.results import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, Explanation

MODELS = ("digits-cnn", "bc-mlp")
RUNTIMES = ("torch", "onnx")
#: modules a plugin's entry-point module must not import at load time (``governance --help`` loads plugins)
HEAVY_MODULES = ("torch", "numpy", "matplotlib", "mlflow", "onnxruntime", "onnx", "sklearn", "scipy", "pandas")
_NAME = re.compile(r"[a-z][a-z0-9_\-]*")
_METRIC = re.compile(r"[A-Za-z0-9_.\-/ ]+")
_PNG = b"\x89PNG\r\n\x1a\n"


class ConformanceError(AssertionError):
    """A method or plugin broke the contract. The message says what and how to fix it."""


class ConformanceWarning(UserWarning):
    """Something recommended is missing (the method still works)."""


def _fail(message: str) -> None:
    raise ConformanceError(message)


@dataclass(frozen=True)
class Case:
    """One reference model on one runtime."""

    model: str
    runtime: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.runtime}"


def all_cases(models: Iterable[str] = MODELS, runtimes: Iterable[str] = RUNTIMES) -> list[Case]:
    models, runtimes = list(models), list(runtimes)
    for m in models:
        if m not in MODELS:
            _fail(f"unknown reference model '{m}': choose from {', '.join(MODELS)}")
    for r in runtimes:
        if r not in RUNTIMES:
            _fail(f"unknown runtime '{r}': choose from {', '.join(RUNTIMES)}")
    return [Case(m, r) for m, r in itertools.product(models, runtimes)]


# ------------------------------------------------------------------------------------------ reference models
@functools.lru_cache(maxsize=None)
def reference_model(name: str, seed: int = 0) -> tuple[Any, Dataset]:
    """(trained torch module, its Dataset) for ``digits-cnn`` or ``bc-mlp``; trained once per process."""
    from governance.testing.models import trained_breast_cancer_mlp, trained_digits_cnn

    if name == "digits-cnn":
        return trained_digits_cnn(seed=seed, epochs=4)
    if name == "bc-mlp":
        return trained_breast_cancer_mlp(seed=seed, epochs=15)
    raise ConformanceError(f"unknown reference model '{name}': choose from {', '.join(MODELS)}")


def reference_models() -> dict[str, tuple[Any, Dataset]]:
    return {name: reference_model(name) for name in MODELS}


class ModelCache:
    """Loaded reference models per case; ONNX exports are written once below ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._models: dict[tuple[str, str, int], LoadedModel] = {}

    def get(self, case: Case, seed: int = 0) -> LoadedModel:
        from governance.testing.models import as_loaded, as_onnx_loaded

        key = (case.model, case.runtime, seed)
        if key not in self._models:
            module, ds = reference_model(case.model, seed)
            name = case.model if seed == 0 else f"{case.model}-seed{seed}"
            if case.runtime == "torch":
                self._models[key] = as_loaded(module, ds.sample_shape, name=name)
            else:
                folder = self.folder / f"{name}-onnx"
                folder.mkdir(parents=True, exist_ok=True)
                self._models[key] = as_onnx_loaded(module, ds.sample_shape, folder)
        return self._models[key]


def reference_data(model: str, n: int, *, labels: bool = True) -> Dataset:
    """``n`` samples of the model's dataset (a fixed random draw, so that every class shows up)."""
    _, ds = reference_model(model)
    sub = ds.subset(n, np.random.default_rng(0))
    if not labels:
        sub = dataclasses.replace(sub, y=None)
    return sub


class ForwardOnlyModel(LoadedModel):
    """A model that only predicts, like an MLflow pyfunc model: no torch view, no weights."""

    runtime = "forward-only"

    def __init__(self, base: LoadedModel) -> None:
        self._base = base
        self.info = base.info
        self.device = base.device
        self.input_spec = base.input_spec
        self.output_spec = base.output_spec
        self.default_batch_size = base.default_batch_size
        self.torch_unavailable_reason = "it is a forward-only model (predict only, like an MLflow pyfunc model)"
        self.details = {"wraps": base.runtime}

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        return self._base.predict(x)


# ------------------------------------------------------------------------------------------ resolving
def _host(plugin: str | None) -> Any:
    from governance.host.plugins import PluginHost

    return PluginHost(allow=[plugin] if plugin else None, strict=False)


def resolve_method(method: type[Method] | str, plugin: str | None = None) -> type[Method]:
    """The method class: given directly, or by its registered name (looked up through the hook)."""
    if isinstance(method, type):
        return method
    host = _host(plugin)
    if method not in host.methods:
        failed = [f"{r.name}: {(r.error or '').splitlines()[0]}" for r in host.records if r.status == "failed"]
        _fail(f"no method named '{method}' is registered"
              + (f" by plugin '{plugin}'" if plugin else "")
              + f"; registered: {', '.join(sorted(host.methods)) or 'none'}"
              + (f"; failed plugins: {'; '.join(failed)}" if failed else "")
              + ". Check the entry point in your pyproject ([project.entry-points.\"governance.plugins\"]) and "
              "that register_methods calls register(YourMethod); reinstall the package after changing it.")
    return host.methods[method]


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


# ------------------------------------------------------------------------------------------ checks
def check_class_contract(cls: type) -> None:
    """Class attributes and the ``explain`` signature the host relies on."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        _fail(f"{cls!r} is not a subclass of governance.Method")
    if inspect.isabstract(cls):
        _fail(f"{cls.__name__} is abstract: implement explain(self, ctx, **kwargs)")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        _fail(f"{cls.__name__}.name = {name!r}: use a short lowercase name (letters, digits, '_' or '-'); it is "
              "the --methods name, the artifact folder and the metric prefix")
    version = getattr(cls, "version", "")
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+)*([a-z0-9.+\-]*)", version):
        _fail(f"{cls.__name__}.version = {version!r}: use a version string like '1.0.0' (stamped into results)")
    if not cls.title:
        _fail(f"{cls.__name__}.title is empty: it is the heading of the report section")
    if not isinstance(cls.requires, frozenset) or not all(isinstance(r, Requirement) for r in cls.requires):
        _fail(f"{cls.__name__}.requires must be a frozenset of governance.Requirement members")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, MethodConfig)):
        _fail(f"{cls.__name__}.Config must subclass governance.MethodConfig")
    if cls.Config.model_config.get("extra") != "forbid":
        _fail(f"{cls.__name__}.Config allows unknown keys: keep MethodConfig's extra='forbid' so typos fail")
    if cls.report_template is not None and (not isinstance(cls.report_template, str) or ":" not in cls.report_template):
        _fail(f"{cls.__name__}.report_template = {cls.report_template!r}: use 'package.module:path/section.html.j2'")
    params = inspect.signature(cls.explain).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        _fail(f"{cls.__name__}.explain must accept **kwargs (the host may pass new keyword arguments later)")
    for attr, why in (("description", "shown in `governance plugins` and the report"),
                      ("reference", "the publication the method implements")):
        if not getattr(cls, attr, ""):
            warnings.warn(f"{cls.__name__}.{attr} is empty ({why})", ConformanceWarning, stacklevel=2)


def check_registration(cls: type[Method], plugin: str) -> None:
    """``plugin`` (an entry-point name in the ``governance.plugins`` group) loads and registers ``cls``."""
    from governance.contract.errors import GovernanceError
    from governance.contract.hookspecs import ENTRY_POINT_GROUP, HOOK_API_VERSION

    try:
        host = _host(plugin)
    except GovernanceError as exc:
        _fail(f"entry point '{plugin}' is not installed in the '{ENTRY_POINT_GROUP}' group ({exc}). Declare it in "
              f"pyproject.toml under [project.entry-points.\"{ENTRY_POINT_GROUP}\"] and reinstall (pip install -e .)")
    rec = host.record(plugin)
    if rec is None or rec.status != "loaded":
        _fail(f"plugin '{plugin}' did not load: {rec.error if rec else 'no record'}")
    if "register_methods" not in rec.hooks:
        _fail(f"plugin '{plugin}' implements no register_methods hook: decorate it with @governance.hookimpl")
    if cls.name not in host.methods or host.plugin_of(cls.name) != plugin:
        _fail(f"plugin '{plugin}' did not register a method named '{cls.name}' (it registered: "
              f"{', '.join(rec.methods) or 'nothing'})")
    if not _same_class(host.methods[cls.name], cls):
        _fail(f"'{cls.name}' is registered as {host.methods[cls.name]!r}, not {cls!r}")
    major = HOOK_API_VERSION[0]
    import importlib

    module = importlib.import_module(rec.module.split(":")[0])
    wanted = getattr(module, "GOVERNANCE_HOOK_API", None)
    if wanted is None:
        warnings.warn(f"{rec.module} declares no GOVERNANCE_HOOK_API = ({major}, 0)", ConformanceWarning, stacklevel=2)


def check_cheap_import(module: str, plugin: str | None = None) -> None:
    """Loading the plugin must not import torch, numpy, matplotlib, mlflow... (``governance --help`` loads
    every plugin). Checked in a fresh interpreter: with ``plugin`` (its entry-point name) the way the host
    loads it (import and hook registration), counting only what the plugin adds; else by importing ``module``."""
    probe = (
        "import importlib, json, sys\n"
        "import governance\n"
        "if sys.argv[2]:\n"
        "    from governance.host.plugins import PluginHost\n"
        "    PluginHost(autoload=False)\n"  # what the host itself needs is not the plugin's cost
        "before = set(sys.modules)\n"
        "PluginHost(allow=[sys.argv[2]], strict=True) if sys.argv[2] else importlib.import_module(sys.argv[1])\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules and m not in before]))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", probe, module, plugin or ""], capture_output=True, text=True,
                         env=env, timeout=120)
    how = f"loading plugin '{plugin}' ({module}) through the host" if plugin else f"importing {module}"
    if out.returncode != 0:
        _fail(f"{how} failed in a fresh interpreter:\n{out.stderr[-2000:]}")
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    if heavy:
        _fail(f"{how} imports {', '.join(heavy)}: import those inside register_methods / your method module, "
              "so that `governance --help` stays fast")


def check_config(cls: type[Method], config: dict[str, Any] | None = None) -> MethodConfig:
    """Defaults are valid, unknown keys are rejected with a ConfigError naming them, ``config`` parses."""
    from governance.contract.errors import ConfigError

    try:
        cls.parse_config(None)
    except ConfigError as exc:
        _fail(f"{cls.__name__}.Config() without arguments is invalid ({exc}): give every field a default")
    bogus = "__conformance_unknown_key__"
    try:
        cls.parse_config({bogus: 1})
    except ConfigError as exc:
        if bogus not in str(exc):
            _fail(f"the ConfigError for an unknown key does not name it: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything but ConfigError is the failure we report
        _fail(f"an unknown config key raised {type(exc).__name__} instead of ConfigError: {exc}")
    else:
        _fail(f"{cls.__name__}.Config accepted an unknown key '{bogus}': keep extra='forbid'")
    try:
        return cls.parse_config(config or {})
    except ConfigError as exc:
        _fail(f"the conformance config {config!r} is invalid for {cls.__name__}: {exc}")
    raise AssertionError("unreachable")


def check_can_explain(cls: type[Method], model: LoadedModel, data: Dataset) -> str | None:
    """``can_explain`` answers None or a non-empty reason string; it never raises."""
    try:
        reason = cls.can_explain(model=model, data=data)
    except Exception as exc:  # noqa: BLE001
        _fail(f"{cls.__name__}.can_explain raised {type(exc).__name__}: {exc}. Return a reason string instead "
              "(the host shows it as 'skipped: <reason>')")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        _fail(f"{cls.__name__}.can_explain returned {reason!r}: return None or a non-empty reason string")
    return reason


def check_refuses_without_requirements(cls: type[Method], model: LoadedModel, data: Dataset) -> None:
    """A method that needs gradients, activations or weights gives a reason on a forward-only model; one
    that needs labels gives a reason on unlabelled data."""
    fwd = ForwardOnlyModel(model)
    needs_torch = cls.requires & {Requirement.GRADIENTS, Requirement.ACTIVATIONS, Requirement.PARAMETERS}
    reason = check_can_explain(cls, fwd, data)
    if needs_torch and reason is None:
        _fail(f"{cls.__name__} requires {sorted(r.value for r in needs_torch)} but can_explain accepted a "
              "forward-only model: call super().can_explain(...) in your override")
    if Requirement.LABELS in cls.requires:
        unlabelled = dataclasses.replace(data, y=None)
        if check_can_explain(cls, model, unlabelled) is None:
            _fail(f"{cls.__name__} requires labels but can_explain accepted data without labels: call "
                  "super().can_explain(...) in your override")


def make_context(cls: type[Method], model: LoadedModel, data: Dataset, config: MethodConfig, *, workdir: Path,
                 seed: int = 0, peers: Sequence[LoadedModel] = ()) -> MethodContext:
    """The context the host builds for ``cls`` (governance.run.execute.context_for): peers only when the method
    declares Requirement.PEERS, the method's own folder below ``workdir``."""
    from governance.run.execute import MethodInputs, PlannedMethod, context_for

    return context_for(PlannedMethod(cls, config), MethodInputs(model=model, data=data, seed=seed,
                                                                workdir=Path(workdir), peers=peers))


def run_explain(cls: type[Method], ctx: MethodContext) -> Explanation:
    """Call ``explain`` the way the host does (governance.run.execute.call_explain: torch seeded from the run
    seed); a non-Explanation return is a conformance failure."""
    from governance.run.execute import call_explain

    try:
        return call_explain(cls, ctx)
    except TypeError as exc:
        if "not an Explanation" in str(exc):
            _fail(f"{exc}: return a governance.Explanation")
        raise


def check_explanation(cls: type[Method], expl: Explanation, ctx: MethodContext) -> None:
    """Name, status, metrics, arrays, figures, summary and JSON form of a successful explanation."""
    if expl.method != cls.name:
        _fail(f"Explanation.method is {expl.method!r}, expected {cls.name!r}: use method=self.name")
    if expl.status == STATUS_FAILED:
        _fail(f"{cls.name} failed on a reference model: {expl.reason}")
    if expl.status not in (STATUS_OK, STATUS_SKIPPED):
        _fail(f"Explanation.status {expl.status!r} is not one of ok, skipped, failed")
    if expl.status == STATUS_SKIPPED and not expl.reason:
        _fail("a skipped Explanation needs a reason")
    check_metrics(expl)
    check_arrays(expl)
    check_figures(expl, ctx.workdir)
    if not isinstance(expl.summary, str) or not expl.summary.strip():
        _fail(f"{cls.name}: Explanation.summary is empty: write one or two plain sentences a validator can read")
    if len(expl.summary) > 1200:
        _fail(f"{cls.name}: Explanation.summary has {len(expl.summary)} characters: keep it to a few sentences "
              "(details belong in tables/details)")
    for field_name in ("findings", "warnings"):
        items = getattr(expl, field_name)
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            _fail(f"{cls.name}: Explanation.{field_name} must be a list of strings")
    if not isinstance(expl.tables, dict) or not all(
        isinstance(rows, list) and all(isinstance(r, dict) for r in rows) for rows in expl.tables.values()
    ):
        _fail(f"{cls.name}: Explanation.tables must map names to lists of row dicts")
    try:
        json.dumps(expl.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        _fail(f"{cls.name}: the explanation does not serialise to JSON ({exc}); keep details/tables to plain "
              "str/int/float/bool/list/dict values")


def check_metrics(expl: Explanation) -> None:
    if not isinstance(expl.metrics, dict):
        _fail(f"{expl.method}: Explanation.metrics must be a dict of name -> float")
    for key, value in expl.metrics.items():
        if not isinstance(key, str) or not _METRIC.fullmatch(key):
            _fail(f"{expl.method}: metric name {key!r} is not a valid MLflow metric name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"{expl.method}: metric {key!r} is {type(value).__name__}, not a plain float: use float(value)")
        if not math.isfinite(value):
            _fail(f"{expl.method}: metric {key!r} is {value} on a reference model: metrics must be finite")


def check_arrays(expl: Explanation) -> None:
    if not isinstance(expl.arrays, dict):
        _fail(f"{expl.method}: Explanation.arrays must be a dict of name -> numpy array")
    for key, value in expl.arrays.items():
        if not isinstance(value, np.ndarray):
            _fail(f"{expl.method}: array {key!r} is a {type(value).__module__}.{type(value).__name__}, not a "
                  "numpy array (convert torch tensors with .detach().cpu().numpy())")
        if value.dtype.kind not in "biufcUS":
            _fail(f"{expl.method}: array {key!r} has dtype {value.dtype}, which npz cannot store without pickle")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            _fail(f"{expl.method}: array name {key!r} must be an identifier (it is an npz key)")


def check_figures(expl: Explanation, workdir: Path) -> None:
    root = Path(workdir).resolve()
    for key, path in expl.figures.items():
        p = Path(path)
        if not p.is_file():
            _fail(f"{expl.method}: figure {key!r} points at {p}, which does not exist: use ctx.save_figure")
        if root not in p.resolve().parents:
            _fail(f"{expl.method}: figure {key!r} ({p}) is outside ctx.workdir ({root}): use ctx.save_figure")
        with open(p, "rb") as fh:
            if fh.read(8) != _PNG:
                _fail(f"{expl.method}: figure {key!r} ({p.name}) is not a PNG file")


_TIMING = re.compile(r"(^|[_.])(seconds|per_second|throughput)([_.]|$)")


def is_timing_metric(name: str) -> bool:
    """Wall-time metrics (``seconds``, ``fit_seconds``, ``seconds_per_input``, ``inputs_per_second``) are
    exempt from determinism."""
    return bool(_TIMING.search(name))


def check_deterministic(first: Explanation, second: Explanation, *, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Two runs with the same seed give the same metrics (wall-time ones, see :func:`is_timing_metric`,
    excepted), arrays and figure names."""
    name = first.method
    if first.status != second.status:
        _fail(f"{name}: status differs between two runs with the same seed ({first.status} vs {second.status})")
    if set(first.metrics) != set(second.metrics):
        _fail(f"{name}: metric names differ between two runs with the same seed")
    for key in (k for k in first.metrics if not is_timing_metric(k)):
        if not math.isclose(first.metrics[key], second.metrics[key], rel_tol=rtol, abs_tol=atol):
            _fail(f"{name}: metric {key!r} differs between two runs with the same seed ({first.metrics[key]!r} vs "
                  f"{second.metrics[key]!r}): draw randomness only from ctx.rng / ctx.torch_generator()")
    if set(first.arrays) != set(second.arrays):
        _fail(f"{name}: array names differ between two runs with the same seed")
    for key in first.arrays:
        a, b = first.arrays[key], second.arrays[key]
        same = a.shape == b.shape and (
            np.array_equal(a, b) if a.dtype.kind not in "fc" else np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        )
        if not same:
            _fail(f"{name}: array {key!r} differs between two runs with the same seed: draw randomness only from "
                  "ctx.rng / ctx.torch_generator()")
    if set(first.figures) != set(second.figures):
        _fail(f"{name}: figure names differ between two runs with the same seed")


def figure_sources(expl: Explanation) -> dict[str, str]:
    """Embedded data URIs for the figures (what the report passes as ``figure_src``)."""
    return {k: "data:image/png;base64," + base64.b64encode(Path(p).read_bytes()).decode() for k, p in expl.figures.items()}


def check_report_section(cls: type[Method], expl: Explanation, model: dict[str, Any] | None = None) -> str:
    """The section template (if any) is packaged, renders with the report's contract, and shows a figure."""
    from governance.report.sections import load_template_source, render_method_section

    if not cls.report_template:
        return ""
    try:
        load_template_source(cls.report_template)
    except (OSError, ModuleNotFoundError, ValueError) as exc:
        _fail(f"{cls.__name__}.report_template {cls.report_template!r} cannot be read ({exc}): check the path and "
              "that *.j2 files are package data in your pyproject")
    src = figure_sources(expl)
    try:
        html = render_method_section(cls, expl.to_dict(), src, model or {"name": "reference", "version": "1"})
    except Exception as exc:  # noqa: BLE001
        _fail(f"{cls.__name__}'s section template failed to render: {type(exc).__name__}: {exc}")
    if not html.strip():
        _fail(f"{cls.__name__}'s section template rendered nothing")
    if src and not any(s in html for s in src.values()):
        _fail(f"{cls.__name__}'s section shows none of its figures ({', '.join(src)}): use "
              "<img src=\"{{ figure_src['name'] }}\"> with a caption")
    return html


# ------------------------------------------------------------------------------------------ runner
@dataclass
class CheckResult:
    check: str
    method: str
    case: str | None
    status: str  # passed | failed | skipped
    message: str = ""

    def __str__(self) -> str:
        where = f"[{self.case}]" if self.case else ""
        return f"{self.status.upper():7} {self.method}.{self.check}{where}" + (f": {self.message}" if self.message else "")


class MethodRunner:
    """Runs a method on the reference cases once (twice for determinism) and caches the results."""

    def __init__(self, cls: type[Method], *, config: dict[str, Any] | None, n_samples: int, seed: int,
                 folder: Path, n_peers: int | None = None) -> None:
        self.cls = cls
        self.raw_config = dict(config or {})
        self.n_samples = n_samples
        self.seed = seed
        self.folder = Path(folder)
        self.models = ModelCache(self.folder / "models")
        wants_peers = Requirement.PEERS in cls.requires
        self.n_peers = n_peers if n_peers is not None else (1 if wants_peers else 0)
        self._runs: dict[str, tuple[Explanation, MethodContext, Explanation] | str] = {}
        self._count = itertools.count()

    def model(self, case: Case) -> LoadedModel:
        return self.models.get(case)

    def data(self, case: Case) -> Dataset:
        return reference_data(case.model, self.n_samples)

    def context(self, case: Case, model: LoadedModel | None = None) -> MethodContext:
        model = model or self.model(case)
        peers = [self.models.get(Case(case.model, "torch"), seed=k + 1) for k in range(self.n_peers)]
        workdir = self.folder / "runs" / f"{case.id}-{next(self._count)}"
        return make_context(self.cls, model, self.data(case), self.cls.parse_config(self.raw_config),
                            workdir=workdir, seed=self.seed, peers=peers)

    def run(self, case: Case) -> tuple[Explanation, MethodContext, Explanation] | str:
        """(first explanation, its context, second explanation), or the reason the method cannot run."""
        if case.id not in self._runs:
            reason = check_can_explain(self.cls, self.model(case), self.data(case))
            if reason is not None:
                self._runs[case.id] = reason
            else:
                ctx = self.context(case)
                first = run_explain(self.cls, ctx)
                second = run_explain(self.cls, self.context(case))
                self._runs[case.id] = (first, ctx, second)
        return self._runs[case.id]


#: the per-case checks: name -> function(runner, first, ctx, second) returning None (passed) or a skip reason
CASE_CHECKS: dict[str, Callable[..., Any]] = {
    "explanation": lambda r, first, ctx, second: check_explanation(r.cls, first, ctx),
    "deterministic": lambda r, first, ctx, second: check_deterministic(first, second),
    "report_section": lambda r, first, ctx, second: (
        "no report_template" if not r.cls.report_template else check_report_section(r.cls, first) and None),
}


def check_forward_only(runner: MethodRunner, case: Case) -> str | None:
    """Methods that need no torch view run on a predict-only model (as in the MLflow evaluator)."""
    if runner.cls.requires & {Requirement.GRADIENTS, Requirement.ACTIVATIONS, Requirement.PARAMETERS}:
        return "the method needs a torch view"
    fwd = ForwardOnlyModel(runner.model(case))
    reason = check_can_explain(runner.cls, fwd, runner.data(case))
    if reason is not None:
        return reason
    ctx = runner.context(case, fwd)
    check_explanation(runner.cls, run_explain(runner.cls, ctx), ctx)
    return None


def check_method(method: type[Method] | str, *, plugin: str | None = None, config: dict[str, Any] | None = None,
                 models: Iterable[str] = MODELS, runtimes: Iterable[str] = RUNTIMES, n_samples: int = 32,
                 seed: int = 0, workdir: str | Path | None = None, raise_on_failure: bool = True) -> list[CheckResult]:
    """Run every conformance check on one method; returns the results (and raises if any failed)."""
    cls = resolve_method(method, plugin)
    results: list[CheckResult] = []

    def record(check: str, case: str | None, fn: Callable[[], Any]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConformanceWarning)
                skipped = fn()
            results.append(CheckResult(check, cls.name, case, "skipped" if isinstance(skipped, str) else "passed",
                                       skipped if isinstance(skipped, str) else ""))
        except ConformanceError as exc:
            results.append(CheckResult(check, cls.name, case, "failed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a crash inside the method is a failed check, with its type
            results.append(CheckResult(check, cls.name, case, "failed", f"{type(exc).__name__}: {exc}"))

    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gov-conf-")))
        record("class_contract", None, lambda: check_class_contract(cls))
        if plugin:
            record("registration", None, lambda: check_registration(cls, plugin))
            record("cheap_import", None, lambda: check_cheap_import(plugin_module(plugin), plugin))
        record("config", None, lambda: check_config(cls, config))
        runner = MethodRunner(cls, config=config, n_samples=n_samples, seed=seed, folder=folder)
        cases = all_cases(models, runtimes)
        record("refuses_without_requirements", cases[0].id,
               lambda: check_refuses_without_requirements(cls, runner.model(cases[0]), runner.data(cases[0])))
        record("forward_only", cases[-1].id, lambda: check_forward_only(runner, cases[-1]))
        for case in cases:
            outcome: list[Any] = []

            def first_run(case: Case = case) -> str | None:
                got = runner.run(case)
                outcome.append(got)
                return got if isinstance(got, str) else None

            record("runs", case.id, first_run)
            if not outcome or isinstance(outcome[0], str):
                continue
            first, ctx, second = outcome[0]
            for name, fn in CASE_CHECKS.items():
                record(name, case.id, lambda fn=fn: fn(runner, first, ctx, second))
    failed = [r for r in results if r.status == "failed"]
    if failed and raise_on_failure:
        raise ConformanceError(f"{len(failed)} conformance check(s) failed for '{cls.name}':\n"
                               + "\n".join(str(r) for r in failed))
    return results


def check_plugin(plugin: str, *, config: dict[str, dict[str, Any]] | None = None, raise_on_failure: bool = True,
                 **options: Any) -> list[CheckResult]:
    """Check every method the plugin (an entry-point name) registers. ``config`` maps method name -> settings."""
    host = _host(plugin)
    rec = host.record(plugin)
    if rec is None or rec.status != "loaded":
        _fail(f"plugin '{plugin}' did not load: {rec.error if rec else 'not installed'}")
    if not rec.methods:
        _fail(f"plugin '{plugin}' registers no methods: implement register_methods(register)")
    results: list[CheckResult] = []
    for name in rec.methods:
        results += check_method(host.methods[name], plugin=plugin, config=(config or {}).get(name),
                                raise_on_failure=False, **options)
    failed = [r for r in results if r.status == "failed"]
    if failed and raise_on_failure:
        raise ConformanceError(f"{len(failed)} conformance check(s) failed for plugin '{plugin}':\n"
                               + "\n".join(str(r) for r in failed))
    return results


# ------------------------------------------------------------------------------------------ pytest class
try:  # the suite's functions work without pytest; the class below needs it
    import pytest as _pytest
except ImportError:  # pragma: no cover
    _pytest = None


def _class_fixture(fn: Callable) -> Callable:
    return _pytest.fixture(scope="class")(fn) if _pytest is not None else fn


def _skip(reason: str) -> None:
    if _pytest is None:  # pragma: no cover
        raise RuntimeError(reason)
    _pytest.skip(reason)


class MethodConformance:
    """Subclass as ``class TestMyMethod(MethodConformance)`` and set ``method`` (class or registered name)
    and ``plugin`` (entry-point name, enables the registration and import checks). Optional: ``config``
    (settings used for every run), ``models``/``runtimes`` (reference cases), ``n_samples``, ``seed``."""

    method: ClassVar[type[Method] | str | None] = None
    plugin: ClassVar[str | None] = None
    config: ClassVar[dict[str, Any]] = {}
    models: ClassVar[Sequence[str]] = MODELS
    runtimes: ClassVar[Sequence[str]] = RUNTIMES
    n_samples: ClassVar[int] = 32
    seed: ClassVar[int] = 0

    # -------------------------------------------------------------------------------- wiring
    def pytest_generate_tests(self, metafunc: Any) -> None:
        if "conformance_case" in metafunc.fixturenames:
            cases = all_cases(self.models, self.runtimes)
            metafunc.parametrize("conformance_case", cases, ids=[c.id for c in cases])

    @_class_fixture
    def conformance_runner(self, request: Any, tmp_path_factory: Any) -> MethodRunner:
        """One runner per test class: each reference case is explained once (twice for determinism)."""
        cls = request.cls
        if cls.method is None:
            raise ConformanceError(f"{cls.__name__}: set `method = YourMethod` (or its registered name)")
        folder = tmp_path_factory.mktemp(f"conformance-{cls.__name__}")
        return MethodRunner(resolve_method(cls.method, cls.plugin), config=cls.config, n_samples=cls.n_samples,
                            seed=cls.seed, folder=folder)

    @staticmethod
    def _run(runner: MethodRunner, case: Case) -> tuple[Explanation, MethodContext, Explanation]:
        got = runner.run(case)
        if isinstance(got, str):
            _skip(f"{runner.cls.name} cannot explain {case.id}: {got}")
        first, ctx, second = got
        if first.status == STATUS_SKIPPED:
            _skip(f"{runner.cls.name} skipped {case.id}: {first.reason}")
        return first, ctx, second

    # -------------------------------------------------------------------------------- once per method
    def test_class_contract(self, conformance_runner: MethodRunner) -> None:
        check_class_contract(conformance_runner.cls)

    def test_registered_through_the_hook(self, conformance_runner: MethodRunner) -> None:
        if not self.plugin:
            _skip("set `plugin = '<entry-point name>'` to check discovery")
        check_registration(conformance_runner.cls, self.plugin)

    def test_plugin_import_is_cheap(self) -> None:
        if not self.plugin:
            _skip("set `plugin = '<entry-point name>'` to check the import cost")
        check_cheap_import(plugin_module(self.plugin), self.plugin)

    def test_config_rejects_unknown_keys(self, conformance_runner: MethodRunner) -> None:
        check_config(conformance_runner.cls, self.config)

    def test_can_explain_gives_reasons_not_exceptions(self, conformance_runner: MethodRunner) -> None:
        case = all_cases(self.models, self.runtimes)[0]
        check_refuses_without_requirements(conformance_runner.cls, conformance_runner.model(case),
                                           conformance_runner.data(case))

    def test_runs_on_a_forward_only_model(self, conformance_runner: MethodRunner) -> None:
        reason = check_forward_only(conformance_runner, all_cases(self.models, self.runtimes)[-1])
        if reason:
            _skip(reason)

    # -------------------------------------------------------------------------------- per reference case
    def test_explanation_conforms(self, conformance_runner: MethodRunner, conformance_case: Case) -> None:
        first, ctx, _ = self._run(conformance_runner, conformance_case)
        check_explanation(conformance_runner.cls, first, ctx)

    def test_deterministic_for_a_fixed_seed(self, conformance_runner: MethodRunner, conformance_case: Case) -> None:
        first, _, second = self._run(conformance_runner, conformance_case)
        check_deterministic(first, second)

    def test_report_section_renders(self, conformance_runner: MethodRunner, conformance_case: Case) -> None:
        if not conformance_runner.cls.report_template:
            _skip(f"{conformance_runner.cls.name} has no report_template")
        first, _, _ = self._run(conformance_runner, conformance_case)
        check_report_section(conformance_runner.cls, first)


def plugin_module(plugin: str) -> str:
    """The module an entry point names (``module:attr`` -> ``module``)."""
    rec = _host(plugin).record(plugin)
    if rec is None:
        _fail(f"plugin '{plugin}' is not installed")
    return rec.module.split(":")[0]


def iter_checks() -> Iterator[str]:
    """Names of the checks, for documentation."""
    yield from ("class_contract", "registration", "cheap_import", "config", "refuses_without_requirements",
                "forward_only", "runs", *CASE_CHECKS)
