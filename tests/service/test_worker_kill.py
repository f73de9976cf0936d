"""Kill -9 a worker process mid-job; a restarted worker completes the job exactly once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from governance.service.queue import JobQueue

from .conftest import child_env, governance_cmd, read_markers, start, stop

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def test_killed_worker_job_completes_once(tmp_path, handler_module):
    qfile = tmp_path / "queue.db"
    queue = JobQueue(qfile)
    job = queue.enqueue(kind="report", key="k1", payload={"model_uri": "models:/m/1", "name": "m", "version": "1"},
                        source="test", trigger="created").job
    env = child_env(tmp_path, SVC_MARKERS=str(handler_module), SVC_SLEEP="2", PYTHONPATH=os.environ["PYTHONPATH"])
    cmd = governance_cmd("jobs", "work", "--queue", f"sqlite:///{qfile}", "--handler", "svc_test_handlers:sleepy",
                         "--lease", "1.5", "--poll", "0.1", "--drain")

    first = start(cmd, env, tmp_path / "worker1.log")
    try:
        started = wait_for(lambda: [m for m in read_markers(handler_module) if m["event"] == "start"], 60, "job start")
        os.kill(first.pid, signal.SIGKILL)  # the worker only: its job process must notice and stop by itself
        first.wait(timeout=10)
        job_pid = started[0]["pid"]
        wait_for(lambda: not _alive(job_pid), 10, "the orphaned job process to exit")
        assert queue.get(job.id).state == "running"  # nobody finished it; its lease runs out
    finally:
        stop(first)

    second = start(cmd, env, tmp_path / "worker2.log")
    try:
        assert second.wait(timeout=90) == 0, (tmp_path / "worker2.log").read_text()
    finally:
        stop(second)
    time.sleep(2.5)  # longer than the handler's sleep: a surviving first attempt would have written "done" by now
    markers = read_markers(handler_module)
    done = [m for m in markers if m["event"] == "done"]
    final = queue.get(job.id)
    print(f"\nkill test: markers {[(m['attempt'], m['event']) for m in markers]}; job {final.state} after "
          f"{final.attempts} attempts; history {[e['event'] for e in queue.events(job.id)]}")
    assert len(done) == 1 and done[0]["attempt"] == 2
    assert final.state == "succeeded" and final.attempts == 2 and final.result == {"slept": True}
    assert "reclaimed" in [e["event"] for e in queue.events(job.id)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
