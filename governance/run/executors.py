"""Where the work of a job runs: in this process (``local``, the default) or on a Ray cluster (``ray``).

An executor does two things, with the same results whichever one you pick:

* ``map_models(uris, job)`` runs ``job(uri)`` once per model version and returns the results in input
  order. ``local`` runs them one after the other; ``ray`` runs one Ray task per model. Each task loads
  its own model, so nothing large crosses process boundaries but the results.
* ``predict_sharded(model_uri, X)`` runs the model's forward pass over ``X`` in shards. ``local`` runs
  batches in this process; ``ray`` streams the shards through Ray Data ``map_batches`` with a callable
  class that loads the model once per worker (an actor pool), with a fraction of a GPU per worker when the
  cluster has GPUs.

Ray is an optional dependency (``pip install 'governance[ray]'``); it is imported only when the ``ray``
executor is created. ``RAY_ADDRESS`` (or ``address=``) connects to an existing cluster; otherwise a local
Ray instance is started and shut down again by :meth:`Executor.close`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np

from governance.contract.errors import ConfigError, GovernanceError

log = logging.getLogger("governance.run.executors")

T = TypeVar("T")

RAY_INSTALL_HINT = "pip install 'governance[ray]'"


class Executor(abc.ABC):
    """Runs per-model jobs and sharded forward passes. Use as a context manager (or call :meth:`close`)."""

    name: ClassVar[str]
    #: whether jobs run in this process (progress callbacks and other unpicklable objects only work then)
    in_process: ClassVar[bool] = True

    @abc.abstractmethod
    def map_models(self, uris: Sequence[str], job: Callable[[str], T], *,
                   return_exceptions: bool = False) -> list[T | BaseException]:
        """``[job(uri) for uri in uris]``, in input order. Every job runs even when one fails; then the
        first failure (in input order) is raised, or, with ``return_exceptions``, returned in its place."""

    @abc.abstractmethod
    def predict_sharded(self, model_uri: str, X: np.ndarray, batch_size: int | None = None, *,
                        tracking_uri: str | None = None, device: str = "auto") -> np.ndarray:
        """The model's raw outputs for ``X`` (same order), computed shard by shard."""

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _settle(outcomes: list[Any], return_exceptions: bool) -> list[Any]:
    if not return_exceptions:
        for item in outcomes:
            if isinstance(item, BaseException):
                raise item
    return outcomes


class LoadedOnce:
    """Resolve and load a model into a private temporary folder (deleted with this object)."""

    def __init__(self, model_uri: str, *, tracking_uri: str | None, device: str, batch_size: int | None) -> None:
        from governance.api import _host, resolve
        from governance.run.pipeline import load_model

        self._tmp = tempfile.TemporaryDirectory(prefix="governance-model-")
        info = resolve(model_uri, tracking_uri=tracking_uri, download_dir=self._tmp.name)
        self.model = load_model(info, device=device, batch_size=batch_size, host=_host())


class LocalExecutor(Executor):
    """Everything in this process, one model after the other (the default)."""

    name = "local"
    in_process = True

    def map_models(self, uris: Sequence[str], job: Callable[[str], T], *,
                   return_exceptions: bool = False) -> list[T | BaseException]:
        outcomes: list[Any] = []
        for uri in uris:
            try:
                outcomes.append(job(uri))
            except Exception as exc:
                outcomes.append(exc)
        return _settle(outcomes, return_exceptions)

    def predict_sharded(self, model_uri: str, X: np.ndarray, batch_size: int | None = None, *,
                        tracking_uri: str | None = None, device: str = "auto") -> np.ndarray:
        loaded = LoadedOnce(model_uri, tracking_uri=tracking_uri, device=device, batch_size=batch_size)
        return np.asarray(loaded.model.predict(X, batch_size=batch_size))


# --------------------------------------------------------------------------------------------- ray
def import_ray() -> Any:
    """``import ray`` (with Ray Data), or a ConfigError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the 'ray' executor needs Ray with Ray Data, which is not installed ({exc})",
            hint=f"{RAY_INSTALL_HINT}   (or use --executor local)",
        ) from None
    return ray


def _call_job(job: Callable[[str], Any], uri: str) -> tuple[bool, Any]:
    """Runs inside a Ray worker. Exceptions come back as values so that their type and hint survive."""
    import pickle

    try:
        return True, job(uri)
    except Exception as exc:
        try:
            pickle.dumps(exc)
            return False, exc
        except Exception:
            return False, RuntimeError(f"{type(exc).__name__}: {exc}")


class RayPredictor:
    """The callable class Ray Data instantiates once per worker: loads the model once, predicts batches."""

    def __init__(self, model_uri: str, tracking_uri: str | None, device: str, batch_size: int | None) -> None:
        self.loaded = LoadedOnce(model_uri, tracking_uri=tracking_uri, device=device, batch_size=batch_size)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"pred": np.asarray(self.loaded.model.predict(batch["data"], batch_size=self.batch_size))}


class RayExecutor(Executor):
    """Ray tasks per model version and a Ray Data actor pool per sharded prediction.

    ``address``: a cluster to join (default: ``RAY_ADDRESS``, else a new local instance with ``num_cpus``/
    ``num_gpus``). ``cpus_per_worker``: CPUs each task/actor reserves. ``gpus_per_worker``: GPU share per
    task/actor; ``None`` splits the cluster's GPUs evenly between the workers running at once (a fraction
    when there are more workers than GPUs) and uses none on a CPU-only cluster. ``workers``: size of the
    prediction actor pool (default: as many as the CPUs allow). ``init_kwargs`` go to ``ray.init``.
    """

    name = "ray"
    in_process = False

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float | None = None, workers: int | None = None,
                 runtime_env: dict[str, Any] | None = None, temp_dir: str | Path | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        self.ray = ray = import_ray()
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
        self.workers = workers
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(address=address, num_cpus=num_cpus, num_gpus=num_gpus,
                                          include_dashboard=False, log_to_driver=False,
                                          logging_level=logging.WARNING, runtime_env=runtime_env)
            if temp_dir is not None:
                kwargs["_temp_dir"] = str(temp_dir)
            kwargs.update(init_kwargs or {})
            try:
                ray.init(**{k: v for k, v in kwargs.items() if v is not None})
            except Exception as exc:
                raise GovernanceError(f"cannot start or reach Ray: {exc}",
                                      hint="check RAY_ADDRESS / --ray-address, or use --executor local") from exc
            self._owns_ray = True
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False

    # ------------------------------------------------------------------------------------- resources
    def _resources(self) -> dict[str, float]:
        return dict(self.ray.cluster_resources())

    def _concurrent_workers(self, wanted: int) -> int:
        cpus = self._resources().get("CPU", 1.0)
        return max(1, min(wanted, int(cpus // self.cpus_per_worker) or 1))

    def pool_size(self, n_batches: int) -> int:
        """Prediction actors: ``workers`` if set, else one per batch, capped by the CPUs and by the GPUs (one
        actor per GPU by default, ``1 / gpus_per_worker`` actors per GPU when that is set)."""
        res = self._resources()
        cap = int(res.get("CPU", 1.0) // self.cpus_per_worker) or 1
        gpus = res.get("GPU", 0.0)
        if self.gpus_per_worker:
            if gpus <= 0:
                raise ConfigError(f"gpus_per_worker={self.gpus_per_worker} but the Ray cluster has no GPU",
                                  hint="leave gpus_per_worker unset on CPU-only clusters")
            cap = min(cap, int(gpus // self.gpus_per_worker) or 1)
        elif gpus > 0 and self.gpus_per_worker is None:
            cap = min(cap, int(gpus) or 1)
        return max(1, min(self.workers or n_batches, cap))

    def gpu_fraction(self, concurrent: int) -> float:
        """GPUs per worker: the explicit setting, else the cluster's GPUs shared by ``concurrent`` workers
        (rounded down to 1/100 so that the shares fit), else 0."""
        if self.gpus_per_worker is not None:
            return float(self.gpus_per_worker)
        total = self._resources().get("GPU", 0.0)
        if total <= 0:
            return 0.0
        share = total / max(1, concurrent)
        return 1.0 if share >= 1 else max(0.01, math.floor(share * 100) / 100)

    # ------------------------------------------------------------------------------------- models
    def map_models(self, uris: Sequence[str], job: Callable[[str], T], *,
                   return_exceptions: bool = False) -> list[T | BaseException]:
        ray = self.ray
        uris = list(uris)
        if not uris:
            return []
        concurrent = self._concurrent_workers(len(uris))
        remote = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpu_fraction(concurrent),
                            max_retries=0)(_call_job)
        refs = [remote.remote(job, uri) for uri in uris]
        outcomes: list[Any] = []
        for uri, ref in zip(uris, refs):
            try:
                ok, value = ray.get(ref)
            except Exception as exc:  # the worker died (out of memory, segfault): no value came back
                ok, value = False, GovernanceError(f"the Ray task for {uri} died: {exc}",
                                                   hint="check the Ray worker logs; try --executor local")
            outcomes.append(value)
        return _settle(outcomes, return_exceptions)

    # ------------------------------------------------------------------------------------- shards
    def predict_sharded(self, model_uri: str, X: np.ndarray, batch_size: int | None = None, *,
                        tracking_uri: str | None = None, device: str = "auto") -> np.ndarray:
        import ray.data

        X = np.ascontiguousarray(X)
        if len(X) == 0:
            raise ConfigError("predict_sharded got no samples")
        bs = int(batch_size or 256)
        workers = self.pool_size(math.ceil(len(X) / bs))
        # one shard per batch, so that every worker gets work; order is preserved end to end
        shards = [X[i : i + bs] for i in range(0, len(X), bs)]
        ds = ray.data.from_numpy(shards)
        ds.context.execution_options.preserve_order = True
        out = ds.map_batches(
            RayPredictor,
            fn_constructor_kwargs={"model_uri": model_uri, "tracking_uri": tracking_uri, "device": device,
                                   "batch_size": bs},
            batch_size=bs, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=self.cpus_per_worker, num_gpus=self.gpu_fraction(workers),
        )
        parts = [b["pred"] for b in out.iter_batches(batch_format="numpy", batch_size=None)]
        pred = np.concatenate(parts) if parts else np.empty((0,))
        if len(pred) != len(X):
            raise GovernanceError(f"Ray returned {len(pred)} predictions for {len(X)} samples")
        return pred

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def get_executor(executor: str | Executor = "local", **options: Any) -> Executor:
    """An executor by name (``local`` or ``ray``), or the given instance unchanged."""
    if isinstance(executor, Executor):
        return executor
    cls = EXECUTORS.get(str(executor))
    if cls is None:
        raise ConfigError(f"unknown executor '{executor}'", hint=f"choose one of: {', '.join(EXECUTORS)}")
    return cls(**options)


# --------------------------------------------------------------------------------------------- jobs
def workdir_name(uri: str) -> str:
    """A folder name for one model's run: readable, and unique per URI."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", uri).strip("-")[:60] or "model"
    return f"{slug}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


@dataclass
class ExplainJob:
    """``governance.explain(uri, **kwargs)`` as a picklable callable, so an executor can run it anywhere.
    With ``workdir_root`` each model gets its own folder below it."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    workdir_root: str | None = None

    def __call__(self, uri: str) -> Any:
        from governance.api import explain

        kwargs = dict(self.kwargs)
        if self.workdir_root:
            kwargs["workdir"] = Path(self.workdir_root) / workdir_name(uri)
        return explain(uri, **kwargs)
