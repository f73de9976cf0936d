"""The service gate end to end: a real `mlflow server` (SQLite store) sends real, signed alias webhooks to
`governance serve --gate champion`; a real worker runs the gate jobs. An alias moved to a failing version is moved
back within the worker's cycle, one moved to a passing version stays, a move that someone else overtook is left
alone, and every verdict and gate action reaches a local listener with a valid signature."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from governance.service.queue import JobQueue
from tests.notify_listener import NOTIFY_SECRET, Listener

from .conftest import REPO, SECRET, child_env, free_port, governance_cmd, start, start_mlflow_server, stop, wait_http

pytestmark = pytest.mark.slow

NAME = "gated-mlp"
FIXTURE_PLUGINS = REPO / "tests" / "fixture_plugins"


def _register(tracking: str, tmp: Path) -> None:
    """v1 trained (passes), v2 untrained (fails accuracy >= 0.9), v3 trained with another seed (passes)."""
    import mlflow
    import torch

    from governance.testing.models import breast_cancer_dataset, tabular_mlp, trained_breast_cancer_mlp

    ds = breast_cancer_dataset()
    np.savez(tmp / "eval.npz", X=ds.X[:64], y=ds.y[:64])
    torch.manual_seed(0)
    models = [trained_breast_cancer_mlp(epochs=5)[0], tabular_mlp().eval(),
              trained_breast_cancer_mlp(seed=1, epochs=6)[0]]
    mlflow.set_tracking_uri(tracking)
    try:
        mlflow.set_experiment("training")
        for model in models:
            with mlflow.start_run():
                mlflow.log_artifact(str(tmp / "eval.npz"), "governance")
                mlflow.pytorch.log_model(model, name="model", input_example=ds.X[:2], pip_requirements=["torch"],
                                         registered_model_name=NAME)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("gate-e2e")
    mport, rport = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text("name: gate e2e\nrequired_methods: [occlusion]\nchecks:\n"
                      "  - metric: performance.accuracy\n    op: \">=\"\n    value: 0.9\n")
    server = start_mlflow_server(tmp, mport)
    tracking = f"http://127.0.0.1:{mport}"
    listener = Listener().start()
    env = child_env(tmp, GOVERNANCE_WEBHOOK_SECRET=SECRET, GOVERNANCE_NOTIFY_SECRET=NOTIFY_SECRET,
                    MLFLOW_TRACKING_URI=tracking, GOVERNANCE_QUEUE=f"sqlite:///{tmp / 'queue.db'}",
                    PYTHONPATH=str(FIXTURE_PLUGINS), GOVERNANCE_ORT_THREADS="2", MLFLOW_HTTP_REQUEST_MAX_RETRIES="2")
    job_options = ["--plugins", "testplugin", "--methods", "occlusion", "--max-samples", "16", "--no-pdf",
                   "--policy", str(policy), "--out", str(tmp / "reports"), "--notify", listener.url]
    receiver = None
    try:
        wait_http(f"{tracking}/health", 120, server)
        _register(tracking, tmp)
        client = MlflowClient(tracking_uri=tracking)
        client.set_registered_model_alias(NAME, "champion", "1")  # where champion was before the service started
        receiver = start(governance_cmd("serve", "--port", str(rport), "--no-created", "--gate", "champion",
                                        "--no-worker", *job_options), env, tmp / "serve.log")
        wait_http(f"http://127.0.0.1:{rport}/health", 90, receiver)
        install = subprocess.run(governance_cmd("webhook", "install", "--url", f"http://127.0.0.1:{rport}/webhook",
                                                "--no-created", "--gate", "champion", "--json"),
                                 env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert install.returncode == 0, install.stdout + install.stderr
        assert set(json.loads(install.stdout)["events"]) == {"model_version_alias.created",
                                                             "model_version_alias.deleted"}
        yield {"tmp": tmp, "env": env, "client": client, "queue": JobQueue(tmp / "queue.db"), "listener": listener}
    finally:
        if receiver is not None:
            stop(receiver)
        stop(server, grace=5)
        listener.close()


class WorkerProcess:
    """`governance jobs work` as its own process (the in-process worker of serve is the same code)."""

    def __init__(self, stack) -> None:
        self.stack, self.proc = stack, None

    def start(self) -> None:
        self.proc = start(governance_cmd("jobs", "work", "--isolation", "thread", "--poll", "0.2",
                                         "--retry-delay", "1"), self.stack["env"], self.stack["tmp"] / "worker.log")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def worker(stack):
    w = WorkerProcess(stack)
    yield w
    w.stop()


def gate_jobs(stack) -> list:
    return sorted((j for j in stack["queue"].jobs(limit=200) if j.kind == "gate"), key=lambda j: j.id)


def wait_for(what, predicate, timeout, stack):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    logs = "".join(f"\n--- {n}\n{(stack['tmp'] / n).read_text()[-2500:]}" for n in ("serve.log", "worker.log")
                   if (stack["tmp"] / n).exists())
    raise AssertionError(f"{what} did not happen within {timeout} s: "
                         f"{[(j.id, j.state, j.payload['version'], j.error) for j in gate_jobs(stack)]}{logs}")


def champion(stack) -> str | None:
    version = stack["client"].get_registered_model(NAME).aliases.get("champion")
    return None if version is None else str(version)


def finished_gate_job(stack, version: str, after: int = 0):
    return lambda: next((j for j in gate_jobs(stack) if j.id > after and j.payload["version"] == version
                         and j.final), None)


def test_an_alias_moved_to_a_failing_version_is_moved_back(stack, worker):
    worker.start()
    moved_at = time.monotonic()
    stack["client"].set_registered_model_alias(NAME, "champion", "2")
    job = wait_for("the gate job for v2", finished_gate_job(stack, "2"), 240, stack)
    assert job.state == "succeeded", job.error
    assert job.source == "webhook" and job.trigger == "gate:champion"
    gate = job.result["gate"]
    assert gate["action"] == "reverted" and gate["from_version"] == "1" and gate["restored"] == "1"
    assert gate["failed_checks"] == ["performance.accuracy >= 0.9"] and job.result["verdict"] == "fail"
    assert champion(stack) == "1"
    print(f"moved back {time.monotonic() - moved_at:.1f} s after the move")
    blocked = stack["client"].get_model_version(NAME, "2").tags
    assert blocked["governance.gate"] == "blocked" and blocked["governance.gate.action"] == "reverted"
    assert "@champion moved back here from version 2" in stack["client"].get_model_version(NAME, "1").tags[
        "governance.gate.restored"]
    report = json.loads((Path(job.result["out_dir"]) / "report.json").read_text())
    assert report["gate"]["decision"] == "revert" and report["gate"]["alias_before"] == "1"

    listener = stack["listener"]
    reverted = listener.wait_for("gate.reverted")
    assert reverted.signature_ok and reverted.doc["model"] == {"name": NAME, "version": "2"}
    assert reverted.doc["alias"] == "champion"
    assert reverted.doc["failed_checks"][0]["id"] == "performance.accuracy >= 0.9"
    verdict = listener.wait_for("report.verdict")
    assert verdict.signature_ok and verdict.doc["verdict"] == "fail" and verdict.doc["gate"]["decision"] == "revert"

    listing = subprocess.run(governance_cmd("jobs"), env=stack["env"], capture_output=True, text=True, timeout=60)
    assert "gate reverted: @champion moved back from version 2 to version 1" in " ".join(listing.stdout.split())
    moves = json.loads(subprocess.run(governance_cmd("jobs", "gate", "--json"), env=stack["env"],
                                      capture_output=True, text=True, timeout=60).stdout)
    assert [(m["to_version"], m["state"]) for m in reversed(moves)] == [("2", "reverted"), ("1", "gate")]


def test_an_alias_moved_to_a_passing_version_stays(stack, worker):
    before = max(j.id for j in gate_jobs(stack))
    stack["client"].set_registered_model_alias(NAME, "champion", "3")
    job = wait_for("the gate job for v3", finished_gate_job(stack, "3", before), 240, stack)
    assert job.state == "succeeded", job.error
    assert job.result["gate"]["action"] == "kept" and job.result["verdict"] == "pass"
    assert champion(stack) == "3"
    assert stack["client"].get_model_version(NAME, "3").tags["governance.gate"] == "passed"
    kept = stack["listener"].wait_for("gate.kept")
    assert kept.signature_ok and kept.doc["model"]["version"] == "3"


def test_a_move_someone_else_overtook_is_left_alone(stack, worker):
    worker.stop()  # the moves below happen while no worker runs: the second overtakes the first
    before = max(j.id for j in gate_jobs(stack))
    stack["client"].set_registered_model_alias(NAME, "champion", "2")
    wait_for("the gate job for v2 queued", lambda: any(j.id > before and j.payload["version"] == "2"
                                                       for j in gate_jobs(stack)), 60, stack)
    stack["client"].set_registered_model_alias(NAME, "champion", "1")
    wait_for("the gate job for v1 queued", lambda: any(j.id > before and j.payload["version"] == "1"
                                                       for j in gate_jobs(stack)), 60, stack)
    drain = subprocess.run(governance_cmd("jobs", "work", "--drain", "--isolation", "thread", "--poll", "0.2"),
                           env=stack["env"], capture_output=True, text=True, timeout=600)
    assert drain.returncode == 0, drain.stderr[-3000:]
    overtaken = finished_gate_job(stack, "2", before)()
    assert overtaken.result["gate"]["action"] == "left_alone", overtaken.result
    assert "had moved on to version 1" in overtaken.result["gate"]["detail"]
    assert finished_gate_job(stack, "1", before)().result["gate"]["action"] == "kept"
    assert champion(stack) == "1"
    # four moves by people, four gate jobs: the revert's own webhook was no new move
    assert [j.payload["version"] for j in gate_jobs(stack)] == ["2", "3", "2", "1"]
