"""The run pipeline: resolve → load → data → plan → run each method (isolated) → log → tag.

Everything that can be checked is checked in :meth:`Pipeline.prepare`, before anything is written to MLflow, so
bad input never leaves a half-written run. Once the run exists, each method's results are uploaded as soon as the
method finishes (:func:`governance.run.execute.run_methods`): a later crash or a failed upload marks the run failed
and keeps what succeeded. Plugin hooks are called through the host's guarded caller, so a raising hook is that
plugin's recorded error and the run still ends FINISHED or FAILED with a true ``governance.status``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from governance.contract.errors import ModelLoadError, TrackingError
from governance.contract.results import Explanation, RunResult, jsonable
from governance.run.execute import MethodInputs, PlannedMethod, ProgressFn, plan_methods, run_methods
from governance.run.spec import RunSpec

log = logging.getLogger("governance.run.pipeline")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_model(info: Any, *, device: str, batch_size: int | None, host: Any, output: str | None = None,
               task: str | None = None, trust_pickle: bool | None = None) -> Any:
    """Ask the ``load_model`` hook for a runtime; a clear error when no plugin can load the flavor.
    ``trust_pickle=True`` is an explicit opt-in to pickle-format models (None: the environment and settings
    decide, see :mod:`governance.host.runtimes.pickle_policy`)."""
    options = {"device": device, "batch_size": batch_size, "output": output, "task": task}
    if trust_pickle is not None:
        options["trust_pickle"] = trust_pickle
    model = host.hook.load_model(info=info, options=options)
    if model is None:
        raise ModelLoadError(
            f"no installed plugin can load {info.display_name} (flavors: {', '.join(info.flavors) or 'none'})",
            hint="governance loads the onnx, pytorch, sklearn, lightgbm and xgboost flavors; log the model with "
            "one of those, or install a plugin that implements load_model for this flavor",
        )
    return model


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


@dataclass
class Prepared:
    """What :meth:`Pipeline.prepare` resolved and loaded; nothing of it has been written anywhere."""

    info: Any  # ModelVersionInfo
    model: Any  # LoadedModel
    data_all: Any  # Dataset: everything loaded (performance is measured on it)
    data: Any  # Dataset: the sample handed to the methods (at most max_samples rows)
    planned: list[PlannedMethod]
    peers: list[Any]
    peer_infos: list[dict[str, Any]]
    previous_version: dict[str, Any] | None

    def outcome_config(self, spec: RunSpec) -> dict[str, Any]:
        """The configuration that determines the outcome: hashed to decide reuse."""
        return {
            "methods": {p.name: {"version": p.cls.version, "config": p.config.model_dump()} for p in self.planned},
            "seed": spec.seed,
            "max_samples": spec.max_samples,
            "device": spec.device,
            **({"output": spec.output} if spec.output else {}),
            **({"task": spec.task} if spec.task else {}),
            "data": {"source": self.data.source, "sha256": self.data.sha256, "n": len(self.data)},
            "peers": self.peer_infos,
        }


class Pipeline:
    """One explanation job over one model version. Use :func:`governance.api.explain` for the simple path."""

    def __init__(self, model_uri: str, spec: RunSpec, *, host: Any, tracking_uri: str | None = None,
                 workdir: Path | None = None, progress: ProgressFn | None = None, invocation: str | None = None,
                 run_tags: dict[str, str] | None = None):
        from governance.host.tracking import resolve_tracking_uri

        self.model_uri = model_uri
        self.spec = spec
        self.tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
        self.host = host
        self.progress: ProgressFn = progress or (lambda method, fraction, message: None)
        self.invocation = invocation
        self.run_tags = dict(run_tags or {})
        #: a temp folder the pipeline made itself is removed when the run fails, and its downloads when it succeeds
        self.owns_workdir = workdir is None
        self.keep_workdir = False  # set when results could not be uploaded: the local copy is all there is
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="governance-run-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ prepare
    def prepare(self) -> Prepared:
        """Resolve, load, read the data, validate method settings and peers. Writes nothing to MLflow."""
        from governance.host.data_sources import load_dataset
        from governance.host.registry import resolve
        from governance.host.tracking import check_reachable

        spec = self.spec
        check_reachable(self.tracking_uri)
        planned = plan_methods(self.host, spec.methods, spec.method_settings())
        self.progress("", 0.0, f"resolving {self.model_uri}")
        info = resolve(self.model_uri, tracking_uri=self.tracking_uri, download_dir=self.workdir / "_model")
        self.progress("", 0.0, f"loading {info.display_name}")
        model = load_model(info, device=spec.device, batch_size=spec.batch_size, host=self.host, output=spec.output,
                           task=spec.task, trust_pickle=spec.trust_pickle or None)
        data_all = load_dataset(spec.data, model, target=spec.target, tracking_uri=self.tracking_uri,
                                download_dir=self.workdir / "_data")
        rng = np.random.default_rng(spec.seed)
        data = data_all.subset(spec.max_samples, rng) if len(data_all) > spec.max_samples else data_all
        older = self._older_versions(info, planned)
        peers, peer_infos = self._load_peers(planned, older)
        previous = {"uri": older[0], "version": older[0].rsplit("/", 1)[-1]} if older else None
        return Prepared(info, model, data_all, data, planned, peers, peer_infos, previous)

    def _older_versions(self, info: Any, planned: list[PlannedMethod]) -> list[str]:
        """Previous versions of a registered model, newest first: looked up once, for peers and the report."""
        if info.kind != "registry":
            return []
        wanted = self.spec.max_peers if self.spec.peers is None and any(p.wants_peers for p in planned) else 0
        try:
            from governance.host.registry import previous_versions
            from governance.host.tracking import client

            return previous_versions(client(self.tracking_uri), info.name, info.version, max(wanted, 1))
        except Exception as exc:  # the previous version is context, not a precondition
            log.warning("previous versions of %s not read: %s", info.name, exc)
            return []

    def _load_peers(self, planned: list[PlannedMethod], older: list[str]) -> tuple[list[Any], list[dict[str, Any]]]:
        from governance.host.registry import resolve

        if self.spec.peers is not None:
            uris = list(self.spec.peers)
        elif any(p.wants_peers for p in planned):
            uris = older[: self.spec.max_peers]
        else:
            return [], []
        peers, infos = [], []
        for k, uri in enumerate(uris):
            pinfo = resolve(uri, tracking_uri=self.tracking_uri, download_dir=self.workdir / "_model" / f"peer{k}")
            peers.append(load_model(pinfo, device=self.spec.device, batch_size=self.spec.batch_size, host=self.host,
                                    output=self.spec.output, task=self.spec.task,
                                    trust_pickle=self.spec.trust_pickle or None))
            infos.append({"uri": uri, "name": pinfo.name, "version": pinfo.version,
                          "content_sha256": pinfo.content_sha256})
        return peers, infos

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Prepare, then reuse or run. Identical jobs run one at a time (:mod:`governance.run.locks`); a failure
        removes the pipeline's own temp folder, a success its model and data downloads."""
        try:
            result = self._run()
        except BaseException:
            if self.owns_workdir and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        for sub in ("_model", "_data"):  # copies of the model and the data: the evidence stays for the caller
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        return result

    def _run(self) -> RunResult:
        from governance import __version__
        from governance.run.locks import config_lock
        from governance.run.sink import MlflowSink

        prep = self.prepare()
        cfg = prep.outcome_config(self.spec)
        chash = config_hash({"model": prep.info.content_sha256, "config": cfg, "tool": __version__})
        sink = MlflowSink(self.tracking_uri)
        exp_id = sink.experiment_id(self.spec.experiment)
        with config_lock(self.tracking_uri, chash):
            return self._reuse_or_run(prep, cfg, chash, exp_id, sink)

    def _reuse_or_run(self, prep: Prepared, cfg: dict[str, Any], chash: str, exp_id: str, sink: Any) -> RunResult:
        previous = sink.previous_runs(exp_id, chash)  # read under the lock: a run that just finished counts
        reused = self._reusable(sink, previous, prep)
        if reused is not None:
            return reused
        result = self._new_result(prep, cfg, chash, exp_id, sink)
        self._start(result, prep, sink, previous)
        outcome = run_methods(
            prep.planned,
            MethodInputs(model=prep.model, data=prep.data, seed=self.spec.seed, workdir=self.workdir,
                         peers=prep.peers,
                         options={"tracking_uri": self.tracking_uri, "run_id": result.mlflow_run_id}),
            progress=self.progress,
            upload=lambda expl, folder: sink.log_explanation(result.mlflow_run_id, expl, folder, prep.info.model_id),
            after_each=lambda expl: self._method_finished(result, expl),
        )
        return self._finish(result, prep, outcome, sink)

    def _reusable(self, sink: Any, previous: list[Any], prep: Prepared) -> RunResult | None:
        """The finished identical run, read back; the version's tags then name it (not whichever run an
        earlier, different job left there)."""
        if not previous or not self.spec.reuse or self.spec.force:
            return None
        done = next((r for r in previous if r.info.status == "FINISHED"
                     and r.data.tags.get("governance.status") == "ok"), None)
        if done is None:
            return None
        from governance.run.reuse import load_previous_run

        log.info("reusing run %s (same model and configuration)", done.info.run_id)
        run = load_previous_run(sink, done.info.run_id, self.workdir)
        sink.tag_version(prep.info, {"governance.status": run.status or "ok", "governance.run_status": run.status or "ok",
                                     "governance.run_id": done.info.run_id,
                                     "governance.config_hash": done.data.tags.get("governance.config_hash", ""),
                                     "governance.updated_at": utcnow()})
        return run

    def _new_result(self, prep: Prepared, cfg: dict[str, Any], chash: str, exp_id: str, sink: Any) -> RunResult:
        from governance.host.environment import describe_environment

        result = RunResult(
            model=prep.info.to_dict(), runtime=prep.model.describe(), data=prep.data.describe(), config=cfg,
            environment=describe_environment(), plugins=self.host.summary(), peers=prep.peer_infos,
            tracking_uri=self.tracking_uri, experiment_id=exp_id, started_at=utcnow(), config_hash=chash,
            workdir=self.workdir, invocation=self.invocation, spec=self.spec.to_dict(),
        )
        result.model["training_run"] = sink.source_run_summary(prep.info.run_id)
        result.model["previous_version"] = prep.previous_version
        result.performance = {"evaluation": evaluate_performance(prep.model, prep.data_all)}
        return result

    def _start(self, result: RunResult, prep: Prepared, sink: Any, previous: list[Any]) -> None:
        from governance import __version__

        info = prep.info
        tags = {
            "governance.model_uri": self.model_uri, "governance.model_name": info.name or "",
            "governance.model_version": info.version or "", "governance.model_id": info.model_id or "",
            "governance.source_run_id": info.run_id or "", "governance.model_sha256": info.content_sha256,
            "governance.config_hash": result.config_hash, "governance.tool_version": __version__,
            "governance.methods": ",".join(p.name for p in prep.planned), "governance.status": "running",
            **self.run_tags,
        }
        run_name = f"{info.name or 'model'}-v{info.version or '?'}-explain"
        result.mlflow_run_id = run_id = sink.start_run(result.experiment_id, run_name,
                                                       {k: v for k, v in tags.items() if v})
        for old in previous:  # never duplicate silently: the older run points at its replacement
            try:
                sink.client.set_tag(old.info.run_id, "governance.superseded_by", run_id)
            except Exception:
                log.warning("could not tag run %s as superseded by %s", old.info.run_id, run_id)
        sink.tag_version(info, {"governance.status": "running", "governance.run_id": run_id})
        self.host.call_each("run_started", run=result)

    def _method_finished(self, result: RunResult, expl: Explanation) -> None:
        result.explanations.append(expl)
        self.host.call_each("method_finished", run=result, explanation=expl)

    def _finish(self, result: RunResult, prep: Prepared, outcome: Any, sink: Any) -> RunResult:
        """Status, run.json, terminal MLflow state and version tags; then ``run_finished``. A failed upload
        leaves the run FAILED and raises TrackingError naming the local copy."""
        upload_errors = list(outcome.upload_errors)
        result.status = outcome.status
        result.finished_at = utcnow()
        result.runtime = prep.model.describe()  # now with what the methods built (e.g. the ONNX torch view)
        result.plugins = self.host.summary()
        result.warnings.extend(f"plugin {e}" for e in self.host.hook_errors())
        run_id = result.mlflow_run_id
        run_json = self.workdir / "run.json"
        run_json.write_text(json.dumps(result.to_dict(), indent=2))
        try:
            sink.log_file(run_id, run_json)
            sink.finish(run_id, result.status)
            sink.tag_version(prep.info, {"governance.status": result.status, "governance.run_status": result.status,
                                         "governance.run_id": run_id, "governance.config_hash": result.config_hash,
                                         "governance.updated_at": result.finished_at})
        except Exception as exc:
            upload_errors.append(f"run.json: {exc}")
            sink.fail_quietly(run_id, f"upload failed: {exc}")
        self.host.call_each("run_finished", run=result)
        if upload_errors:
            self.keep_workdir = True
            err = TrackingError(
                f"MLflow run {run_id} is marked failed: uploads failed ({'; '.join(upload_errors)[:500]})",
                hint=f"everything computed is kept in {self.workdir}; fix the tracking store and run again",
            )
            err.kept_workdir = str(self.workdir)  # callers that own the folder must not remove it
            raise err
        return result
