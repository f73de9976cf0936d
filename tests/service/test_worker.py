"""The worker: handlers, error classification, back-off, bounded concurrency, process isolation."""

from __future__ import annotations

import threading
import time

import pytest

from governance.contract.errors import ConfigError, DataError, MethodError, ModelResolutionError, TrackingError
from governance.service.queue import JobQueue
from governance.service.worker import RetryLater, RetryPolicy, Worker, is_transient, queue_idle

from .conftest import read_markers

FAST = RetryPolicy(max_attempts=3, base_delay=0.05, factor=2, max_delay=0.2, jitter=0)


def spec(key: str, **kw):
    return {"kind": "report", "key": key, "payload": {"model_uri": f"models:/m/{key}", "name": "m", "version": key},
            "source": "test", "trigger": "created", **kw}


def _mlflow_exc(code: str, rest: bool = False):
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import ErrorCode

    if rest:
        return RestException({"error_code": code, "message": "server says no"})
    return MlflowException("x", error_code=ErrorCode.Value(code))


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize("exc, expected", [
    (RetryLater("not ready"), True),
    (TrackingError("down"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (lambda: __import__("requests").exceptions.ConnectionError("refused"), True),
    (lambda: _mlflow_exc("TEMPORARILY_UNAVAILABLE"), True),
    (lambda: _mlflow_exc("RESOURCE_EXHAUSTED"), True),
    (lambda: _mlflow_exc("REQUEST_LIMIT_EXCEEDED"), True),
    (lambda: _mlflow_exc("INTERNAL_ERROR", rest=True), True),  # a 5xx from the server
    (lambda: __import__("mlflow").exceptions.MlflowException("API request to http://x failed with exception y"), True),
    (lambda: _mlflow_exc("INTERNAL_ERROR"), False),  # raised locally: a bug, not the network
    (lambda: _mlflow_exc("RESOURCE_DOES_NOT_EXIST"), False),
    (lambda: _mlflow_exc("INVALID_PARAMETER_VALUE", rest=True), False),
    (ModelResolutionError("no such model"), False),
    (DataError("bad data"), False),
    (ConfigError("bad option"), False),
    (MethodError("refused"), False),
    (ValueError("bug"), False),
    (lambda: _chained(RuntimeError("wrapped"), ConnectionResetError()), True),
    (lambda: _chained(DataError("user error"), ConnectionResetError()), False),  # user errors win
])
def test_is_transient(exc, expected):
    exc = exc() if callable(exc) and not isinstance(exc, BaseException) else exc
    assert is_transient(exc) is expected


def test_backoff_grows_and_is_capped():
    p = RetryPolicy(base_delay=10, factor=2, max_delay=600, jitter=0)
    assert [p.delay(a) for a in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert p.delay(20) == 600
    jittered = RetryPolicy(base_delay=10, jitter=0.2)
    assert all(8 <= jittered.delay(1) <= 12 for _ in range(50))


def run_all(q, handler, **kw):
    w = Worker(q, handler, poll_interval=0.02, retry=FAST, **kw)
    w.run(until=queue_idle(q))
    return w


def test_success_transient_retry_and_permanent_failure(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    for key in ("ok", "flaky", "bad", "down"):
        q.enqueue(**spec(key), max_attempts=3)
    calls: dict[str, int] = {}

    def handler(job):
        v = job.payload["version"]
        calls[v] = calls.get(v, 0) + 1
        if v == "flaky" and job.attempts < 3:
            raise TrackingError("server briefly unavailable")
        if v == "bad":
            raise ModelResolutionError("no such version", hint="check the name")
        if v == "down":
            raise ConnectionRefusedError("refused")
        return {"v": v}

    w = run_all(q, handler)
    jobs = {j.payload["version"]: j for j in q.jobs()}
    assert jobs["ok"].state == "succeeded" and jobs["ok"].result == {"v": "ok"} and calls["ok"] == 1
    assert jobs["flaky"].state == "succeeded" and jobs["flaky"].attempts == 3 and calls["flaky"] == 3
    assert jobs["bad"].state == "failed" and jobs["bad"].error_kind == "permanent" and calls["bad"] == 1
    assert "ModelResolutionError: no such version" in jobs["bad"].error and "hint: check the name" in jobs["bad"].error
    assert jobs["down"].state == "failed" and jobs["down"].error_kind == "transient" and calls["down"] == 3
    assert w.stats.succeeded == 2 and w.stats.failed == 2 and w.stats.retried == 4


def test_bug_keeps_its_traceback(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))

    def handler(job):
        return {}["missing"]

    run_all(q, handler)
    job = q.jobs()[0]
    assert job.state == "failed" and job.error.startswith("KeyError") and "Traceback" in job.error


def test_concurrency_is_bounded(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    for i in range(8):
        q.enqueue(**spec(str(i)))
    lock = threading.Lock()
    running, peak = [0], [0]

    def handler(job):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return {}

    run_all(q, handler, concurrency=3)
    assert q.counts()["succeeded"] == 8 and 1 < peak[0] <= 3


def test_lease_is_renewed_while_a_long_job_runs(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))
    stolen = []

    def handler(job):
        time.sleep(0.9)  # several leases long
        stolen.append(JobQueue(tmp_path / "q.db").claim("thief", 5))
        return {}

    run_all(q, handler, lease_seconds=0.3)
    assert stolen == [None] and q.jobs()[0].state == "succeeded" and q.jobs()[0].attempts == 1


def test_process_isolation_survives_a_crashing_job(tmp_path, handler_module):
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))
    run_all(q, "svc_test_handlers:crash_once", isolation="process")
    job = q.jobs()[0]
    assert job.state == "succeeded" and job.attempts == 2
    assert [m["event"] for m in read_markers(handler_module)] == ["crash", "done"]
    assert "retry" in [e["event"] for e in q.events(job.id)]


def test_process_isolation_timeout(tmp_path, handler_module):
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))
    run_all(q, "svc_test_handlers:forever", isolation="process", job_timeout=1.0)
    job = q.jobs()[0]
    assert job.state == "failed" and "timed out" in job.error and job.error_kind == "permanent"


def test_graceful_stop_gives_unfinished_jobs_back(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))
    started = threading.Event()

    def handler(job):
        started.set()
        time.sleep(1.0)
        return {}

    w = Worker(q, handler, poll_interval=0.02, grace_seconds=0.1)
    t = threading.Thread(target=w.run)
    t.start()
    assert started.wait(10)
    w.stop()
    t.join(10)
    job = q.jobs()[0]
    assert job.state == "queued" and job.attempts == 0 and q.events(job.id)[-1]["event"] == "released"
    time.sleep(1.2)  # the abandoned thread finishes: its late result must not land
    assert q.jobs()[0].state == "queued"


def test_worker_validates_its_options(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    with pytest.raises(ConfigError):
        Worker(q, lambda j: {}, isolation="process")
    with pytest.raises(ConfigError):
        Worker(q, "no_colon")
    with pytest.raises(ConfigError, match="cannot import"):
        Worker(q, "governance.nothing_here:fn")
    with pytest.raises(ConfigError):
        Worker(q, lambda j: {}, concurrency=0)


def test_real_handler_retries_an_unreachable_server(tmp_path, monkeypatch):
    """The production handler against a closed port: transient, retried with back-off, then final."""
    from governance.service.handlers import report_job
    from governance.run.spec import RunSpec
    from governance.service.jobs import job_spec
    from governance.service.triggers import Trigger

    from .conftest import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    q = JobQueue(tmp_path / "q.db")
    settings = RunSpec(tracking_uri=f"http://127.0.0.1:{free_port()}")
    q.enqueue(**job_spec(Trigger("m", "1", "created"), settings, source="test", max_attempts=2))
    w = run_all(q, report_job)
    job = q.jobs()[0]
    assert job.state == "failed" and job.error_kind == "transient" and job.attempts == 2 and w.stats.retried == 1
    assert "API request to" in job.error
    assert [e["event"] for e in q.events(job.id)] == ["queued", "claimed", "retry", "claimed", "failed"]


def test_max_jobs_waits_for_the_running_job(tmp_path):
    """Ending on max_jobs is not a stop: the claimed job runs to the end, however long the grace period."""
    q = JobQueue(tmp_path / "q.db")
    q.enqueue(**spec("1"))
    q.enqueue(**spec("2"))

    def handler(job):
        time.sleep(0.5)
        return {}

    Worker(q, handler, poll_interval=0.02, grace_seconds=0.05).run(max_jobs=1)
    states = sorted(j.state for j in q.jobs())
    assert states == ["queued", "succeeded"]
