"""Kill -9 a worker while the real report handler is inside its MLflow run (issue 20): the job completes exactly
once on the second attempt, and the first attempt's run, left RUNNING by the killed worker, is closed as KILLED
with the reason. Real SQLite store, real model, real `governance jobs work` processes."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest

from governance.service.queue import JobQueue

from .conftest import child_env, governance_cmd, start, stop

pytestmark = pytest.mark.slow

HANDLER = textwrap.dedent('''
    """The production handler, with the first attempt held inside its MLflow run until the test kills it."""
    import json, os, time

    import governance.run.pipeline as pipeline
    from governance.service.handlers import report_job

    _run_methods = pipeline.run_methods

    def _held(*args, **kwargs):
        attempt = int(os.environ["KILLTEST_ATTEMPT"])
        with open(os.environ["KILLTEST_MARKERS"], "a") as fh:
            fh.write(json.dumps({"attempt": attempt, "event": "inside-run", "pid": os.getpid()}) + "\\n")
        if attempt == 1:
            time.sleep(600)  # the worker is killed meanwhile; the orphan watch ends this process
        return _run_methods(*args, **kwargs)

    def held_report(job):
        os.environ["KILLTEST_ATTEMPT"] = str(job.attempts)
        pipeline.run_methods = _held
        return report_job(job)
''')


def _markers(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


def test_killed_workers_running_run_is_closed_and_the_job_completes_once(registry, tmp_path):
    from tests.conftest import FIXTURE_PLUGINS

    from governance.run.spec import RunSpec
    from governance.service.jobs import job_spec
    from governance.service.triggers import Trigger

    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "killtest_handlers.py").write_text(HANDLER)
    markers = tmp_path / "markers.jsonl"
    experiment = "kill-test"
    spec = RunSpec(tracking_uri=registry.uri, methods=("occlusion",), plugins=("testplugin",), experiment=experiment,
                   data=str(registry.data["bc"]), output_dir=str(tmp_path / "reports"), pdf=False, seed=99)
    queue = JobQueue(tmp_path / "queue.db")
    job = queue.enqueue(**job_spec(Trigger("bc-mlp", "1", "created"), spec, source="test")).job
    env = child_env(tmp_path, KILLTEST_MARKERS=str(markers),
                    PYTHONPATH=os.pathsep.join([str(tmp_path / "handlers"), str(FIXTURE_PLUGINS)]))
    cmd = governance_cmd("jobs", "work", "--queue", f"sqlite:///{tmp_path / 'queue.db'}", "--handler",
                         "killtest_handlers:held_report", "--lease", "2", "--poll", "0.2", "--drain",
                         "--retry-delay", "0")

    first = start(cmd, env, tmp_path / "worker1.log")
    try:
        _wait(lambda: _markers(markers), 240, "the first attempt to enter its MLflow run")
        running = [r for r in registry.runs(experiment) if r.info.status == "RUNNING"]
        assert len(running) == 1 and running[0].data.tags["governance.job_attempt"] == "1"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop(first)
    _wait(lambda: not _alive(_markers(markers)[0]["pid"]), 20, "the orphaned job process to exit")
    dead_run = running[0].info.run_id
    assert registry.client().get_run(dead_run).info.status == "RUNNING"  # what the killed worker left

    second = start(cmd, env, tmp_path / "worker2.log")
    try:
        assert second.wait(timeout=400) == 0, (tmp_path / "worker2.log").read_text()[-3000:]
    finally:
        stop(second)
    final = queue.get(job.id)
    assert final.state == "succeeded" and final.attempts == 2, (final.state, final.error)
    client = registry.client()
    dead = client.get_run(dead_run)
    assert dead.info.status == "KILLED" and dead.data.tags["governance.status"] == "killed"
    assert f"job {job.id} attempt 1 did not finish" in dead.data.tags["governance.killed_reason"]
    runs = registry.runs(experiment)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    (done,) = [r for r in runs if r.info.status == "FINISHED"]
    assert done.info.run_id == final.result["mlflow_run_id"] and done.data.tags["governance.job_attempt"] == "2"
    assert client.get_model_version("bc-mlp", "1").tags["governance.run_id"] == done.info.run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
