"""The one place methods run: planning (select, check settings), then each method isolated and timed, its folder
written, its results uploaded as soon as it finishes, and the run's status decided by one rule.

``governance run``, the MLflow evaluator and the plugin conformance kit all call :func:`run_methods`, so a plugin
author's conformance run sees exactly what production does (peers, seeds, skips, isolation).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from governance.contract.errors import ConfigError, GovernanceError, MethodError
from governance.contract.method import MethodConfig, MethodContext, Requirement
from governance.contract.results import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, Explanation

log = logging.getLogger("governance.run")

ProgressFn = Callable[[str, float, str], None]  # (method, fraction, message)


@dataclass(frozen=True)
class PlannedMethod:
    """A method class with its validated settings and the plugin that registered it."""

    cls: type
    config: MethodConfig
    plugin: str | None = None

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def wants_peers(self) -> bool:
        return Requirement.PEERS in self.cls.requires


@dataclass
class MethodInputs:
    """What every method of one run sees. ``workdir`` holds ``explanations/<method>/``; ``options`` become
    ``ctx.options`` (``tracking_uri``, ``run_id`` of the governance run when there is one)."""

    model: Any
    data: Any
    seed: int
    workdir: Path
    peers: Sequence[Any] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodsOutcome:
    explanations: list[Explanation]
    upload_errors: list[str]

    @property
    def status(self) -> str:
        return run_status([e.status for e in self.explanations], bool(self.upload_errors))


def run_status(statuses: Sequence[str], upload_failed: bool = False) -> str:
    """``failed`` when an upload failed or no method succeeded among failures, ``partial`` when some method
    failed, else ``ok`` (skipped methods are not failures)."""
    if upload_failed or (STATUS_FAILED in statuses and STATUS_OK not in statuses):
        return "failed"
    return "partial" if STATUS_FAILED in statuses else "ok"


def select_methods(host: Any, names: Sequence[str] | None) -> list[type]:
    """The method classes to run: the named ones, or every installed one (sorted by name)."""
    if names is None:
        if not host.methods:
            failed = [r.name for r in host.records if r.status == "failed"]
            raise ConfigError("no explanation methods are installed"
                              + (f" (plugins that failed to load: {', '.join(failed)})" if failed else ""),
                              hint="run `governance plugins --all` to see why; reinstall governance to get the "
                                   "built-in methods")
        return [host.methods[n] for n in sorted(host.methods)]
    if not names:
        raise ConfigError("no methods selected", hint=f"available: {', '.join(sorted(host.methods))}")
    return [host.get_method(n) for n in names]


def plan_methods(host: Any, names: Sequence[str] | None, settings: Mapping[str, Mapping[str, Any]],
                 *, where: str = "configuration") -> list[PlannedMethod]:
    """Select the methods and validate each one's settings (ConfigError naming the bad keys)."""
    classes = select_methods(host, names)
    unknown = sorted(set(settings) - {c.name for c in classes} - set(host.methods))
    if unknown:
        raise ConfigError(f"{where} given for unknown method(s): {', '.join(unknown)}",
                          hint=f"available methods: {', '.join(sorted(host.methods))}")
    return [PlannedMethod(c, c.parse_config(dict(settings.get(c.name) or {})), host.plugin_of(c.name))
            for c in classes]


# --------------------------------------------------------------------------------------------- one method
def context_for(planned: PlannedMethod, inputs: MethodInputs,
                tell: Callable[..., None] = lambda fraction, message="": None) -> MethodContext:
    """The MethodContext the host hands to ``planned``: its own folder, the run seed, and peers only when the
    method declares ``Requirement.PEERS``."""
    name = planned.name
    return MethodContext(model=inputs.model, data=inputs.data, config=planned.config, seed=inputs.seed,
                         workdir=Path(inputs.workdir) / "explanations" / name,
                         peers=list(inputs.peers) if planned.wants_peers else [],
                         device=getattr(inputs.model, "device", "cpu"),
                         log=logging.getLogger(f"governance.method.{name}"), progress=tell,
                         options=dict(inputs.options))


def call_explain(cls: type, ctx: MethodContext) -> Explanation:
    """``cls().explain(ctx)`` the way the host calls it: torch seeded from the run seed, and a TypeError when
    the method returns something else than an Explanation. Raises what the method raises."""
    import torch

    torch.manual_seed(ctx.seed)
    expl = cls().explain(ctx)
    if not isinstance(expl, Explanation):
        raise TypeError(f"{cls.__name__}.explain returned {type(expl).__name__}, not an Explanation")
    return expl


def run_method(planned: PlannedMethod, inputs: MethodInputs, progress: ProgressFn | None = None) -> Explanation:
    """Run one method isolated: skipped with the reason when it cannot explain the model/data, failed (with its
    error) when it raises; never raises itself."""
    cls, name = planned.cls, planned.name
    tell = (lambda fraction, message="": progress(name, float(fraction), message)) if progress else \
        (lambda fraction, message="": None)
    tell(0.0, "starting")
    stamp = dict(method_version=cls.version, title=cls.title or name, plugin=planned.plugin,
                 config=planned.config.model_dump(), seed=inputs.seed)
    reason = cls.can_explain(model=inputs.model, data=inputs.data)
    if reason is not None:
        tell(1.0, "skipped")
        return Explanation(method=name, status=STATUS_SKIPPED, reason=reason, **stamp)
    t0 = time.perf_counter()
    expl = _isolated(cls, context_for(planned, inputs, tell))
    if expl.method != name:
        expl.warnings.append(f"the method returned Explanation.method={expl.method!r}; recorded as {name!r}")
        expl.method = name
    expl.seconds = round(time.perf_counter() - t0, 4)
    for key, value in stamp.items():
        if getattr(expl, key, None) in (None, {}, ""):
            setattr(expl, key, value)
    tell(1.0, expl.status)
    return expl


def _isolated(cls: type, ctx: MethodContext) -> Explanation:
    name = cls.name
    try:
        return call_explain(cls, ctx)
    except MethodError as exc:
        return Explanation(method=name, status=STATUS_FAILED, reason=str(exc), error_type="MethodError")
    except GovernanceError as exc:
        return Explanation(method=name, status=STATUS_FAILED, reason=str(exc), error_type=type(exc).__name__)
    except Exception as exc:  # isolation: one method's crash never loses the others
        log.warning("method %s failed: %s: %s", name, type(exc).__name__, exc)
        return Explanation(method=name, status=STATUS_FAILED, reason=f"{type(exc).__name__}: {exc}",
                           error_type=type(exc).__name__, traceback=traceback.format_exc(limit=20))


def write_method_folder(expl: Explanation, workdir: Path) -> Path:
    """``<workdir>/explanations/<method>/``: figures (copied in if written elsewhere), ``arrays.npz``,
    ``traceback.txt`` for a crash, and ``summary.json``."""
    folder = Path(workdir) / "explanations" / expl.method
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in list(expl.figures.items()):
        path = Path(path)
        if path.parent.resolve() != folder.resolve() and path.is_file():
            shutil.copy2(path, folder / path.name)
            expl.figures[name] = folder / path.name
    if expl.arrays:
        np.savez_compressed(folder / "arrays.npz", **{k: np.asarray(v) for k, v in expl.arrays.items()})
    if expl.traceback:
        (folder / "traceback.txt").write_text(expl.traceback)
    (folder / "summary.json").write_text(json.dumps(expl.to_dict(), indent=2))
    return folder


# --------------------------------------------------------------------------------------------- the list
def run_methods(planned: Sequence[PlannedMethod], inputs: MethodInputs, *, progress: ProgressFn | None = None,
                upload: Callable[[Explanation, Path], None] | None = None,
                after_each: Callable[[Explanation], None] | None = None) -> MethodsOutcome:
    """Run each planned method (isolated), write its folder, ``upload`` it at once (an upload failure is kept
    as a warning on that explanation and in ``upload_errors``: the results stay on disk), then ``after_each``."""
    explanations: list[Explanation] = []
    upload_errors: list[str] = []
    for item in planned:
        expl = run_method(item, inputs, progress)
        explanations.append(expl)
        folder = write_method_folder(expl, inputs.workdir)
        if upload is not None:
            try:
                upload(expl, folder)
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}"
                upload_errors.append(f"{expl.method}: {msg}")
                expl.warnings.append(f"results were not uploaded to MLflow ({msg}); they are kept in {folder}")
        if after_each is not None:
            after_each(expl)
    return MethodsOutcome(explanations, upload_errors)
