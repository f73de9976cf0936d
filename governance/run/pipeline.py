"""The run pipeline: resolve → load → data → plan → run each method (isolated) → log → tag.

Everything that can be checked is checked before anything is written to MLflow, so bad input never
leaves a half-written run. Once the run exists, each method's results are uploaded as soon as the method
finishes: a later crash or a failed upload marks the run failed and keeps what succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from governance.contract.errors import ConfigError, GovernanceError, MethodError, ModelLoadError, TrackingError
from governance.contract.results import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, Explanation, RunResult, jsonable

log = logging.getLogger("governance.run.pipeline")

ProgressFn = Callable[[str, float, str], None]  # (method, fraction, message)


@dataclass
class RunOptions:
    """Everything that determines a run's outcome (hashed for idempotency) and how it is executed."""

    methods: list[str] | None = None
    data: str | None = None
    target: str | None = None
    peers: list[str] | None = None
    max_peers: int = 2
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    max_samples: int = 512
    batch_size: int | None = None
    output: str | None = None  # the model output to explain (--output); None: the loader chooses
    task: str | None = None  # "classification" | "regression" (--task); None: detected
    experiment: str = "governance"
    force: bool = False
    reuse: bool = True


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_model(info: Any, *, device: str, batch_size: int | None, host: Any, output: str | None = None,
               task: str | None = None) -> Any:
    """Ask the ``load_model`` hook for a runtime; a clear error when no plugin can load the flavor."""
    model = host.hook.load_model(info=info, options={"device": device, "batch_size": batch_size, "prefer": None,
                                                     "output": output, "task": task})
    if model is None:
        raise ModelLoadError(
            f"no installed plugin can load {info.display_name} (flavors: {', '.join(info.flavors) or 'none'})",
            hint="governance loads the onnx, pytorch, sklearn, lightgbm and xgboost flavors; log the model with "
            "one of those, or install a plugin that implements load_model for this flavor",
        )
    return model


def select_methods(host: Any, names: Sequence[str] | None) -> list[type]:
    if names is None:
        if not host.methods:
            failed = [r.name for r in host.records if r.status == "failed"]
            raise ConfigError("no explanation methods are installed"
                              + (f" (plugins that failed to load: {', '.join(failed)})" if failed else ""),
                              hint="run `governance plugins --all` to see why; reinstall governance to get the built-in methods")
        return [host.methods[n] for n in sorted(host.methods)]
    if not names:
        raise ConfigError("no methods selected", hint=f"available: {', '.join(sorted(host.methods))}")
    return [host.get_method(n) for n in names]


def config_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jsonable(payload), sort_keys=True).encode()).hexdigest()[:32]


def evaluate_performance(model: Any, data: Any) -> dict[str, Any]:
    """Accuracy (classifiers) or RMSE/R² (regressors, ``model.task``) on the labelled data, when there are
    labels; computed on the output the methods explain (``output`` names it)."""
    if data.y is None:
        return {}
    out = model.predict(data.X)
    y = np.asarray(data.y)
    res: dict[str, Any] = {"n": int(len(y)), "on": data.source, "task": getattr(model, "task", None),
                           "output": model.output_spec.name}
    flat = out.reshape(len(y), -1)
    if getattr(model, "task", "classification") == "classification" and flat.shape[1] == 1:
        # one binary score: a probability after a sigmoid (class 1 above 0.5), else a logit (above 0)
        sigmoid = "sigmoid" in str(getattr(model, "task_reason", ""))
        flat = np.concatenate([1 - flat, flat] if sigmoid else [-flat, flat], axis=1)
    is_labels = np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                       and np.all(np.mod(y, 1) == 0))
    if getattr(model, "task", "classification") == "classification" and flat.shape[1] > 1 and is_labels:
        out, y = flat, y.astype(np.int64)
        pred = out.argmax(1)
        res["accuracy"] = float((pred == y).mean())
        classes = np.unique(y)
        res["per_class_recall"] = {str(int(c)): float((pred[y == c] == c).mean()) for c in classes}
    else:
        pred = out.reshape(len(y), -1)[:, 0]
        err = pred - y.astype(np.float64)
        res["rmse"] = float(np.sqrt(np.mean(err ** 2)))
        var = float(np.var(y))
        res["r2"] = float(1 - np.mean(err ** 2) / var) if var > 0 else None
    return res


class Pipeline:
    """One explanation job over one model version. Use :func:`governance.api.explain` for the simple path."""

    def __init__(self, model_uri: str, options: RunOptions, *, tracking_uri: str, host: Any,
                 workdir: Path | None = None, progress: ProgressFn | None = None, invocation: str | None = None):
        self.model_uri = model_uri
        self.opts = options
        self.tracking_uri = tracking_uri
        self.host = host
        self.progress = progress or (lambda method, fraction, message: None)
        self.invocation = invocation
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="governance-run-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Resolve, load, read the data, validate method configs and peers. Writes nothing to MLflow."""
        from governance.host.data_sources import load_dataset
        from governance.host.registry import resolve
        from governance.host.tracking import check_reachable

        opts = self.opts
        check_reachable(self.tracking_uri)
        self.methods = select_methods(self.host, opts.methods)
        unknown_cfg = sorted(set(opts.method_config) - {m.name for m in self.methods} - set(self.host.methods))
        if unknown_cfg:
            raise ConfigError(f"configuration given for unknown method(s): {', '.join(unknown_cfg)}",
                              hint=f"available methods: {', '.join(sorted(self.host.methods))}")
        self.configs = {m.name: m.parse_config(opts.method_config.get(m.name)) for m in self.methods}
        downloads = self.workdir / "_model"
        self.progress("", 0.0, f"resolving {self.model_uri}")
        self.info = resolve(self.model_uri, tracking_uri=self.tracking_uri, download_dir=downloads)
        self.progress("", 0.0, f"loading {self.info.display_name}")
        self.model = load_model(self.info, device=opts.device, batch_size=opts.batch_size, host=self.host,
                                output=opts.output, task=opts.task)
        self.data_all = load_dataset(opts.data, self.model, target=opts.target, tracking_uri=self.tracking_uri,
                                     download_dir=self.workdir / "_data")
        rng = np.random.default_rng(opts.seed)
        self.data = self.data_all.subset(opts.max_samples, rng) if len(self.data_all) > opts.max_samples else self.data_all
        self.peers, self.peer_infos = self._load_peers(downloads)

    def _load_peers(self, downloads: Path) -> tuple[list[Any], list[dict[str, Any]]]:
        wants_peers = any(getattr(m, "uses_peers", False) for m in self.methods)
        uris = self.opts.peers
        if uris is None:
            if not wants_peers or self.info.kind != "registry":
                return [], []
            from governance.host.registry import previous_versions
            from governance.host.tracking import client

            uris = previous_versions(client(self.tracking_uri), self.info.name, self.info.version, self.opts.max_peers)
        from governance.host.registry import resolve

        peers, infos = [], []
        for k, uri in enumerate(uris):
            pinfo = resolve(uri, tracking_uri=self.tracking_uri, download_dir=downloads / f"peer{k}")
            peers.append(load_model(pinfo, device=self.opts.device, batch_size=self.opts.batch_size, host=self.host,
                                    output=self.opts.output, task=self.opts.task))
            infos.append({"uri": uri, "name": pinfo.name, "version": pinfo.version,
                          "content_sha256": pinfo.content_sha256})
        return peers, infos

    def run_config(self) -> dict[str, Any]:
        """The configuration that determines the outcome: hashed to decide reuse."""
        return {
            "methods": {m.name: {"version": m.version, "config": self.configs[m.name].model_dump()} for m in self.methods},
            "seed": self.opts.seed,
            "max_samples": self.opts.max_samples,
            "device": self.opts.device,
            **({"output": self.opts.output} if self.opts.output else {}),
            **({"task": self.opts.task} if self.opts.task else {}),
            "data": {"source": self.data.source, "sha256": self.data.sha256, "n": len(self.data)},
            "peers": self.peer_infos,
        }

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        from governance import __version__
        from governance.host.environment import describe_environment
        from governance.run.reuse import load_previous_run
        from governance.run.sink import MlflowSink

        self.prepare()
        cfg = self.run_config()
        chash = config_hash({"model": self.info.content_sha256, "config": cfg, "tool": __version__})
        sink = MlflowSink(self.tracking_uri)
        exp_id = sink.experiment_id(self.opts.experiment)
        previous = sink.previous_runs(exp_id, chash)
        if previous and self.opts.reuse and not self.opts.force:
            done = next((r for r in previous if r.info.status == "FINISHED"
                         and r.data.tags.get("governance.status") == "ok"), None)
            if done is not None:
                log.info("reusing run %s (same model and configuration)", done.info.run_id)
                return load_previous_run(sink, done.info.run_id, self.workdir)

        result = RunResult(
            model=self.info.to_dict(), runtime=self.model.describe(), data=self.data.describe(), config=cfg,
            environment=describe_environment(), plugins=self.host.summary(), peers=self.peer_infos,
            tracking_uri=self.tracking_uri, experiment_id=exp_id, started_at=utcnow(), config_hash=chash,
            workdir=self.workdir, invocation=self.invocation,
        )
        result.model["training_run"] = sink.source_run_summary(self.info.run_id)
        result.model["previous_version"] = self._previous_version()
        result.performance = {"evaluation": evaluate_performance(self.model, self.data_all)}
        tags = {
            "governance.model_uri": self.model_uri,
            "governance.model_name": self.info.name or "",
            "governance.model_version": self.info.version or "",
            "governance.model_id": self.info.model_id or "",
            "governance.source_run_id": self.info.run_id or "",
            "governance.model_sha256": self.info.content_sha256,
            "governance.config_hash": chash,
            "governance.tool_version": __version__,
            "governance.methods": ",".join(m.name for m in self.methods),
            "governance.status": "running",
        }
        run_name = f"{self.info.name or 'model'}-v{self.info.version or '?'}-explain"
        result.mlflow_run_id = run_id = sink.start_run(exp_id, run_name, {k: v for k, v in tags.items() if v})
        for old in previous:  # never duplicate silently: the older run points at its replacement
            try:
                sink.client.set_tag(old.info.run_id, "governance.superseded_by", run_id)
            except Exception:
                pass
        sink.tag_version(self.info, {"governance.status": "running", "governance.run_id": run_id})
        self.host.hook.run_started(run=result)

        upload_errors: list[str] = []
        for k, cls in enumerate(self.methods):
            expl = self._run_method(cls, k)
            result.explanations.append(expl)
            folder = self._write_method_folder(expl)
            try:
                sink.log_explanation(run_id, expl, folder, self.info.model_id)
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}"
                upload_errors.append(f"{expl.method}: {msg}")
                expl.warnings.append(f"results were not uploaded to MLflow ({msg}); they are kept in {folder}")
            self.host.hook.method_finished(run=result, explanation=expl)

        statuses = [e.status for e in result.explanations]
        if upload_errors or (STATUS_FAILED in statuses and STATUS_OK not in statuses):
            result.status = "failed"
        elif STATUS_FAILED in statuses:
            result.status = "partial"
        else:
            result.status = "ok"
        result.finished_at = utcnow()
        run_json = self.workdir / "run.json"
        run_json.write_text(json.dumps(result.to_dict(), indent=2))
        try:
            sink.log_file(run_id, run_json)
            sink.finish(run_id, result.status)
            sink.tag_version(self.info, {"governance.status": result.status, "governance.run_id": run_id,
                                         "governance.config_hash": chash, "governance.updated_at": result.finished_at})
        except Exception as exc:
            upload_errors.append(f"run.json: {exc}")
            sink.fail_quietly(run_id, f"upload failed: {exc}")
        self.host.hook.run_finished(run=result)
        if upload_errors:
            raise TrackingError(
                f"MLflow run {run_id} is marked failed: uploads failed ({'; '.join(upload_errors)[:500]})",
                hint=f"everything computed is kept in {self.workdir}; fix the tracking store and run again",
            )
        return result

    def _previous_version(self) -> dict[str, Any] | None:
        if self.info.kind != "registry":
            return None
        try:
            from governance.host.registry import previous_versions
            from governance.host.tracking import client

            uris = previous_versions(client(self.tracking_uri), self.info.name, self.info.version, 1)
        except Exception:
            return None
        return {"uri": uris[0], "version": uris[0].rsplit("/", 1)[-1]} if uris else None

    def _run_method(self, cls: type, index: int) -> Explanation:
        from governance.contract.method import MethodContext

        name = cls.name
        cfg = self.configs[name]
        report = lambda fraction, message="": self.progress(name, float(fraction), message)  # noqa: E731
        report(0.0, "starting")
        base = dict(method_version=cls.version, title=cls.title or name, plugin=self.host.plugin_of(name),
                    config=cfg.model_dump(), seed=self.opts.seed)
        reason = cls.can_explain(model=self.model, data=self.data)
        if reason is not None:
            report(1.0, "skipped")
            return Explanation(method=name, status=STATUS_SKIPPED, reason=reason, **base)
        ctx = MethodContext(model=self.model, data=self.data, config=cfg, seed=self.opts.seed,
                            workdir=self.workdir / "explanations" / name, peers=self.peers,
                            device=self.model.device, log=logging.getLogger(f"governance.method.{name}"),
                            progress=report, options={"tracking_uri": self.tracking_uri})
        t0 = time.perf_counter()
        try:
            import torch

            torch.manual_seed(self.opts.seed)
            expl = cls().explain(ctx)
            if not isinstance(expl, Explanation):
                raise TypeError(f"{cls.__name__}.explain returned {type(expl).__name__}, not an Explanation")
        except MethodError as exc:
            expl = Explanation(method=name, status=STATUS_FAILED, reason=str(exc), error_type="MethodError")
        except GovernanceError as exc:
            expl = Explanation(method=name, status=STATUS_FAILED, reason=str(exc), error_type=type(exc).__name__)
        except Exception as exc:  # isolation: one method's crash never loses the others
            expl = Explanation(method=name, status=STATUS_FAILED, reason=f"{type(exc).__name__}: {exc}",
                               error_type=type(exc).__name__, traceback=traceback.format_exc(limit=20))
            log.warning("method %s failed: %s", name, expl.reason)
        expl.method = name
        expl.seconds = round(time.perf_counter() - t0, 4)
        for key, value in base.items():
            if getattr(expl, key, None) in (None, {}, ""):
                setattr(expl, key, value)
        report(1.0, expl.status)
        return expl

    def _write_method_folder(self, expl: Explanation) -> Path:
        folder = self.workdir / "explanations" / expl.method
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
