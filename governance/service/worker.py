"""The worker: claims jobs from the queue and runs a handler on each, ``concurrency`` at a time.

A handler is any callable ``handler(job) -> dict | None`` (the dict is stored as the job's result). It is
named by a ``"module:attribute"`` string so it can run in a child process: with ``isolation="process"``
(the command-line default) every job runs in a fresh spawned interpreter, so a crash, a leak or global
state (matplotlib's pyplot is not thread-safe) stays inside one job, and a job can be killed when it times
out or its lease is lost. ``isolation="thread"`` runs the handler in the worker's own threads (tests,
light handlers).

Errors decide what happens next (:func:`is_transient`):

* transient (the tracking server is unreachable, answers 429/5xx, ``TrackingError``, :class:`RetryLater`,
  a job process that died) -> queued again after an exponential back-off, until ``max_attempts``;
* anything else (``ModelResolutionError``, ``DataError``, ``ConfigError``, a bug) -> failed at once.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from governance.contract.errors import ConfigError, GovernanceError, TrackingError
from governance.service.queue import ERROR_PERMANENT, ERROR_TRANSIENT, FINAL_STATES, Job, JobQueue

log = logging.getLogger("governance.service.worker")

Handler = Callable[[Job], "dict[str, Any] | None"]


class RetryLater(Exception):
    """Raise from a handler to ask for another attempt later (e.g. the version is still being registered)."""


# MLflow error codes that mean "try again" (mlflow/protos/databricks.proto)
_TRANSIENT_MLFLOW_CODES = {
    "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED",
}


def _one_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryLater):
        return True
    if isinstance(exc, GovernanceError):
        return isinstance(exc, TrackingError)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from mlflow.exceptions import MlflowException, RestException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", "")
        if code in _TRANSIENT_MLFLOW_CODES:
            return True
        if code == "INTERNAL_ERROR":
            # a 5xx answered by the server, or the client's wrapper around a failed connection; a plain
            # MlflowException raised locally also defaults to INTERNAL_ERROR and is not retried
            return isinstance(exc, RestException) or str(exc.message).startswith("API request to")
    return False


def is_transient(exc: BaseException) -> bool:
    """True when another attempt may succeed. User errors (GovernanceError other than TrackingError) never
    are, even if caused by a network error deeper down; otherwise the cause chain is searched."""
    if isinstance(exc, GovernanceError):
        return isinstance(exc, TrackingError)
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if _one_transient(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def describe_error(exc: BaseException) -> str:
    """First line: what went wrong, for ``governance jobs``; a traceback follows for unexpected errors."""
    if isinstance(exc, (GovernanceError, RetryLater)):
        return f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n{tb}"


@dataclass
class RetryPolicy:
    """Exponential back-off with jitter: ``base * factor**(attempt-1)``, capped, ±``jitter`` fraction."""

    max_attempts: int = 5
    base_delay: float = 10.0
    factor: float = 2.0
    max_delay: float = 600.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        raw = min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))
        return max(0.0, raw * (1.0 + random.uniform(-self.jitter, self.jitter)))


def load_handler(spec: str) -> Handler:
    """Import ``"package.module:function"``."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"invalid handler {spec!r}", hint="name it as package.module:function")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import handler {spec!r}: {exc}", hint="check PYTHONPATH and the name") from None
    if not callable(obj):
        raise ConfigError(f"handler {spec!r} is not callable")
    return obj


# ------------------------------------------------------------------------------------------ child process
def _child_main(spec: str, job_dict: dict[str, Any], conn: Any, parent_pid: int) -> None:
    """Entry point of a job process: run the handler, send ("ok", result) or ("error", info) back."""

    def orphan_watch() -> None:  # a killed worker must not leave its job running on
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(0.2)

    threading.Thread(target=orphan_watch, daemon=True, name="orphan-watch").start()
    try:
        handler = load_handler(spec)
        result = handler(Job(**job_dict))
        conn.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the worker
        conn.send(("error", {"message": describe_error(exc), "transient": is_transient(exc)}))
    finally:
        conn.close()


@dataclass
class _Active:
    job: Job
    lost: threading.Event = field(default_factory=threading.Event)
    kill: threading.Event = field(default_factory=threading.Event)


@dataclass
class WorkerStats:
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost_lease: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


class Worker:
    """Claims and runs jobs; see the module docstring. ``run()`` blocks until :meth:`stop` or ``until()``."""

    def __init__(
        self,
        queue: JobQueue,
        handler: Handler | str,
        *,
        concurrency: int = 1,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        retry: RetryPolicy | None = None,
        isolation: str = "thread",
        job_timeout: float | None = None,
        grace_seconds: float = 30.0,
        owner: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if lease_seconds <= 0 or poll_interval <= 0:
            raise ConfigError("lease and poll interval must be positive")
        if isolation not in ("thread", "process"):
            raise ConfigError(f"unknown isolation {isolation!r}", hint="use thread or process")
        if isolation == "process" and not isinstance(handler, str):
            raise ConfigError("process isolation needs the handler as a 'module:function' string")
        self.queue = queue
        self.handler_spec = handler if isinstance(handler, str) else None
        self.handler: Handler = load_handler(handler) if isinstance(handler, str) else handler
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.retry = retry or RetryPolicy()
        self.isolation = isolation
        self.job_timeout = job_timeout
        self.grace_seconds = grace_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self) % 10000:04d}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._force = threading.Event()
        self._wake = threading.Event()
        self._active: dict[int, _Active] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(concurrency)

    # ----------------------------------------------------------------------------------- control
    def stop(self, *, force: bool = False) -> None:
        """Claim nothing more; let running jobs finish (``grace_seconds``), or give them back now (force)."""
        self._stop.set()
        if force:
            self._force.set()
        self._wake.set()

    def wake(self) -> None:
        """New work is waiting (called by an in-process receiver): skip the rest of the poll interval."""
        self._wake.set()

    @property
    def active_jobs(self) -> list[int]:
        with self._lock:
            return list(self._active)

    # ----------------------------------------------------------------------------------- main loop
    def run(self, *, until: Callable[[], bool] | None = None, max_jobs: int | None = None) -> WorkerStats:
        """Work until stopped, until ``until()`` is true (checked when idle), or after ``max_jobs`` claims.

        May be called again after ``until``/``max_jobs`` ended it; not after :meth:`stop`.
        """
        self._finished.clear()
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True, name="lease-heartbeat")
        heartbeat.start()
        claimed = 0
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="job")
        try:
            while not self._stop.is_set():
                if max_jobs is not None and claimed >= max_jobs:
                    break
                if not self._slots.acquire(timeout=self.poll_interval):
                    continue
                job = None
                try:
                    job = self.queue.claim(self.owner, self.lease_seconds)
                except Exception:  # a locked or vanished queue file must not kill the worker
                    log.exception("claiming a job failed; trying again")
                if job is None:
                    self._slots.release()
                    if until is not None and not self.active_jobs and until():
                        break
                    self._wake.wait(self.poll_interval)
                    self._wake.clear()
                    continue
                claimed += 1
                with self._lock:
                    self._active[job.id] = _Active(job)
                pool.submit(self._run_one, job)
        finally:
            self._shutdown(pool)
        return self.stats

    def _shutdown(self, pool: ThreadPoolExecutor) -> None:
        """After ``until``/``max_jobs``: wait for the running jobs. After :meth:`stop`: wait ``grace_seconds``,
        then give what still runs back to the queue (a forced stop gives it back at once)."""
        grace_deadline: float | None = None
        while self.active_jobs and not self._force.is_set():
            if self._stop.is_set():
                if grace_deadline is None:
                    grace_deadline = time.monotonic() + self.grace_seconds
                if time.monotonic() >= grace_deadline:
                    break
            time.sleep(0.1)
        with self._lock:
            leftovers = list(self._active.values())
        for active in leftovers:  # give them back at once instead of waiting for the lease to expire
            active.kill.set()
            if self.queue.release(active.job, f"worker {self.owner} stopped"):
                log.warning("job %s given back to the queue: the worker is stopping", active.job.id)
        pool.shutdown(wait=self.isolation == "process")
        self._finished.set()

    def _heartbeat(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while not self._finished.wait(interval):  # keeps renewing during the shutdown grace period
            with self._lock:
                actives = list(self._active.values())
            for active in actives:
                try:
                    if not self.queue.renew(active.job, self.lease_seconds):
                        active.lost.set()
                except Exception:
                    log.exception("renewing the lease of job %s failed", active.job.id)

    # ----------------------------------------------------------------------------------- one job
    def _run_one(self, job: Job) -> None:
        active = self._active[job.id]
        try:
            log.info("job %s attempt %s/%s: %s", job.id, job.attempts, job.max_attempts, job.trigger)
            status, value = self._execute(job, active)
            self._record(job, active, status, value)
        except Exception:
            log.exception("worker error on job %s", job.id)
        finally:
            with self._lock:
                self._active.pop(job.id, None)
            self._slots.release()
            self._wake.set()

    def _execute(self, job: Job, active: _Active) -> tuple[str, Any]:
        if self.isolation == "thread":
            try:
                return "ok", self.handler(job)
            except Exception as exc:  # noqa: BLE001
                return "error", {"message": describe_error(exc), "transient": is_transient(exc)}
        return self._execute_in_process(job, active)

    def _execute_in_process(self, job: Job, active: _Active) -> tuple[str, Any]:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_child_main, args=(self.handler_spec, job.__dict__, sender, os.getpid()),
            name=f"governance-job-{job.id}",
        )
        proc.start()
        sender.close()
        started = time.monotonic()
        eof = False
        try:
            while True:
                if eof:
                    time.sleep(0.05)
                elif receiver.poll(0.2):
                    try:
                        return receiver.recv()
                    except EOFError:
                        eof = True  # the process closed its end without a result: it is exiting
                if not proc.is_alive() and (eof or not receiver.poll(0)):
                    proc.join()
                    return "error", {
                        "message": f"the job process exited with code {proc.exitcode} without a result"
                                   " (crashed or killed, e.g. out of memory)",
                        "transient": True,
                    }
                if active.lost.is_set():
                    return "lost", None
                if active.kill.is_set():
                    return "stopped", None
                if self.job_timeout and time.monotonic() - started > self.job_timeout:
                    return "error", {"message": f"timed out after {self.job_timeout:.0f} s "
                                                "(raise --job-timeout if reports take longer)", "transient": False}
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=10)
            receiver.close()

    def _record(self, job: Job, active: _Active, status: str, value: Any) -> None:
        if status == "stopped":
            return  # released by _shutdown
        if status == "lost" or active.lost.is_set():
            self.stats.lost_lease += 1
            log.warning("job %s: lease lost (another worker took it over); result discarded", job.id)
            return
        if status == "ok":
            result = value if isinstance(value, dict) else ({"value": value} if value is not None else {})
            if self.queue.succeed(job, result):
                self.stats.succeeded += 1
                log.info("job %s succeeded", job.id)
            else:
                self.stats.lost_lease += 1
                log.warning("job %s finished after its lease was lost; result discarded", job.id)
            return
        message, transient = value["message"], bool(value["transient"])
        if transient and job.attempts < job.max_attempts:
            delay = self.retry.delay(job.attempts)
            if self.queue.retry_later(job, message, delay):
                self.stats.retried += 1
                log.warning("job %s attempt %s failed (transient), retry in %.1f s: %s",
                            job.id, job.attempts, delay, message.splitlines()[0])
            return
        kind = ERROR_TRANSIENT if transient else ERROR_PERMANENT
        if self.queue.fail(job, message, kind):
            self.stats.failed += 1
            log.error("job %s failed (%s): %s", job.id, kind, message.splitlines()[0])


def queue_idle(queue: JobQueue) -> Callable[[], bool]:
    """``until`` predicate for draining: nothing queued or running is left."""
    return lambda: (lambda c: c["queued"] == 0 and c["running"] == 0)(queue.counts())


def jobs_final(queue: JobQueue, ids: list[int]) -> Callable[[], bool]:
    """``until`` predicate: every job in ``ids`` reached a final state."""
    return lambda: all(j.state in FINAL_STATES for j in queue.jobs(ids=ids, limit=len(ids) or 1))
