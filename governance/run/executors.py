"""Where the jobs of several model versions run: in this process (``local``, the default) or on a Ray cluster
(``ray``), with the same results whichever one you pick.

``map_models(uris, job)`` runs ``job(uri)`` once per model version and returns the results in input order.
``local`` runs them one after the other; ``ray`` runs one Ray task per model. Each task loads its own model, so
nothing large crosses process boundaries but the results.

Ray is an optional dependency (``pip install 'governance[ray]'``); it is imported only when the ``ray`` executor
is created. ``RAY_ADDRESS`` (or ``address=``) connects to an existing cluster; otherwise a local Ray instance is
started and shut down again by :meth:`Executor.close`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar


from governance.contract.errors import ConfigError, GovernanceError

log = logging.getLogger("governance.run.executors")

T = TypeVar("T")

RAY_INSTALL_HINT = "pip install 'governance[ray]'"


class Executor(abc.ABC):
    """Runs per-model jobs. Use as a context manager (or call :meth:`close`)."""

    name: ClassVar[str]
    #: whether jobs run in this process (progress callbacks and other unpicklable objects only work then)
    in_process: ClassVar[bool] = True

    @abc.abstractmethod
    def map_models(self, uris: Sequence[str], job: Callable[[str], T], *,
                   return_exceptions: bool = False) -> list[T | BaseException]:
        """``[job(uri) for uri in uris]``, in input order. Every job runs even when one fails; then the
        first failure (in input order) is raised, or, with ``return_exceptions``, returned in its place."""


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



# --------------------------------------------------------------------------------------------- ray
def import_ray() -> Any:
    """``import ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"the 'ray' executor needs Ray, which is not installed ({exc})",
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



class RayExecutor(Executor):
    """One Ray task per model version.

    ``address``: a cluster to join (default: ``RAY_ADDRESS``, else a new local instance with ``num_cpus``/
    ``num_gpus``). ``cpus_per_worker``: CPUs each task reserves. ``gpus_per_worker``: GPU share per task;
    ``None`` splits the cluster's GPUs evenly between the tasks running at once (a fraction when there are more
    tasks than GPUs) and uses none on a CPU-only cluster. ``init_kwargs`` go to ``ray.init``.
    """

    name = "ray"
    in_process = False

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float | None = None,
                 runtime_env: dict[str, Any] | None = None, temp_dir: str | Path | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        self.ray = ray = import_ray()
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
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

    # ------------------------------------------------------------------------------------- resources
    def _resources(self) -> dict[str, float]:
        return dict(self.ray.cluster_resources())

    def _concurrent_workers(self, wanted: int) -> int:
        cpus = self._resources().get("CPU", 1.0)
        return max(1, min(wanted, int(cpus // self.cpus_per_worker) or 1))


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
                _, value = ray.get(ref)
            except Exception as exc:  # the worker died (out of memory, segfault): no value came back
                value = GovernanceError(f"the Ray task for {uri} died: {exc}",
                                                   hint="check the Ray worker logs; try --executor local")
            outcomes.append(value)
        return _settle(outcomes, return_exceptions)


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


def portable_tracking_uri(uri: str | None, in_process: bool) -> str:
    """The tracking URI jobs must write to: the one this process would use, with a relative SQLite path made
    absolute for executors whose workers may start in another folder."""
    from governance.host.tracking import resolve_tracking_uri

    resolved = resolve_tracking_uri(uri)
    if not in_process and resolved.startswith("sqlite:///"):
        db = resolved[len("sqlite:///"):]
        if db != ":memory:" and not db.startswith("/"):
            resolved = f"sqlite:///{Path(db).resolve()}"
    return resolved


@dataclass
class ExplainJob:
    """One model's explanation job as a picklable callable, so an executor can run it anywhere. With
    ``workdir_root`` each model gets its own folder below it."""

    spec: Any  # RunSpec
    workdir_root: str | None = None
    invocation: str | None = None
    progress: Callable[[str, float, str], None] | None = None

    def __call__(self, uri: str) -> Any:
        from governance.host.plugins import get_plugin_host
        from governance.run.pipeline import Pipeline

        host = get_plugin_host(allow=list(self.spec.plugins)) if self.spec.plugins is not None else get_plugin_host()
        workdir = Path(self.workdir_root) / workdir_name(uri) if self.workdir_root else None
        return Pipeline(uri, self.spec, host=host, workdir=workdir, progress=self.progress,
                        invocation=self.invocation or f"governance.explain({uri!r})").run()
