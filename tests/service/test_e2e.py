"""End to end against a real `mlflow server` (SQLite store, 127.0.0.1, one worker, fixed Fernet key):
registering a version produces a governance run through the webhook; webhook, watch and schedule
triggers for the same version collapse into one job."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

import pytest

from governance.service.queue import JobQueue

from .conftest import REPO, SECRET, child_env, free_port, governance_cmd, start, start_mlflow_server, stop, wait_http

pytestmark = pytest.mark.slow

FIXTURE_PLUGINS = REPO / "tests" / "fixture_plugins"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """mlflow server + `governance serve` (in-process worker, real report handler)."""

    tmp = tmp_path_factory.mktemp("e2e")
    mport, rport = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text("name: e2e gate\nrequired_methods: [occlusion]\nchecks:\n"
                      "  - metric: performance.accuracy\n    op: \">=\"\n    value: 0.5\n")
    server = start_mlflow_server(tmp, mport)
    tracking = f"http://127.0.0.1:{mport}"
    queue = tmp / "queue.db"
    from governance.report.signing import make_test_identity

    key, cert = make_test_identity(tmp / "keys", name="E2E Service Signer")
    gov_env = child_env(tmp, GOVERNANCE_WEBHOOK_SECRET=SECRET, MLFLOW_TRACKING_URI=tracking,
                        GOVERNANCE_QUEUE=f"sqlite:///{queue}", PYTHONPATH=str(FIXTURE_PLUGINS),
                        GOVERNANCE_ORT_THREADS="2", MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
                        # report settings shared by serve, watch and schedule (one settings fingerprint)
                        GOVERNANCE_PLUGINS="testplugin", GOVERNANCE_METHODS="occlusion", GOVERNANCE_MAX_SAMPLES="16",
                        GOVERNANCE_POLICY=str(policy), GOVERNANCE_OUTPUT_DIR=str(tmp / "reports"),
                        GOVERNANCE_SIGN_KEY=str(key), GOVERNANCE_SIGN_CERT=str(cert))
    receiver = None
    try:
        wait_http(f"{tracking}/health", 90, server)
        receiver = start(governance_cmd("serve", "--port", str(rport), "--alias", "champion",
                                        "--tag", "governance.request", "--retry-delay", "1", "--poll", "0.2"),
                         gov_env, tmp / "serve.log")
        wait_http(f"http://127.0.0.1:{rport}/health", 60, receiver)
        yield {"tracking": tracking, "receiver_url": f"http://127.0.0.1:{rport}/webhook", "queue": queue,
               "env": gov_env, "tmp": tmp, "cert": cert, "health": f"http://127.0.0.1:{rport}/health"}
    finally:
        if receiver is not None:
            stop(receiver)
        stop(server, grace=5)


@pytest.fixture
def gov(stack, monkeypatch, cli_invoke):
    """The real CLI, in this process (saves an interpreter start per call), with the stack's environment."""
    for key, value in stack["env"].items():
        if key.startswith(("GOVERNANCE_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    return cli_invoke


def wait_jobs(queue: JobQueue, predicate, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = queue.jobs(limit=100)
        if predicate(jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs never got there: {[(j.id, j.state, j.error) for j in queue.jobs()]}\n"
                         f"{log.read_text()[-3000:]}")


def test_webhook_install_is_idempotent_and_verified(stack, gov):
    args = ("webhook", "install", "--url", stack["receiver_url"], "--alias", "champion", "--tag", "governance.request",
            "--json")
    code, out, err = gov(*args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["action"] == "created" and doc["test"]["success"] and doc["test"]["status"] == 200
    assert set(doc["events"]) == {"model_version.created", "model_version_alias.created", "model_version_tag.set"}
    again = json.loads(gov(*args)[1])
    assert again["action"] == "updated" and again["id"] == doc["id"] and again["test"]["success"]
    listed = json.loads(gov("webhook", "list", "--json")[1])
    assert [w["id"] for w in listed] == [doc["id"]]


def test_wrong_secret_fails_the_installation_test(stack, gov, monkeypatch):
    monkeypatch.setenv("GOVERNANCE_WEBHOOK_SECRET", "a-different-secret-0123456789")
    code, out, err = gov("webhook", "install", "--name", "wrong-secret", "--url", stack["receiver_url"])
    assert code == 6 and "secret" in err.lower() and "FAILED (401)" in out
    # leave the server as it was: the webhook with the wrong secret would make every delivery fail twice
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack["tracking"])
    for w in client.list_webhooks():
        if w.name == "wrong-secret":
            client.delete_webhook(w.webhook_id)


def test_registering_a_version_produces_a_run(stack, gov, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from governance.testing.models import trained_breast_cancer_mlp

    assert gov("webhook", "install", "--url", stack["receiver_url"], "--alias", "champion",
               "--tag", "governance.request")[0] == 0
    queue = JobQueue(stack["queue"])
    log = stack["tmp"] / "serve.log"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["tracking"])
    import numpy as np

    mlp, bc = trained_breast_cancer_mlp(epochs=5)
    eval_file = stack["tmp"] / "eval.npz"
    np.savez(eval_file, X=bc.X[:32], y=bc.y[:32])
    mlflow.set_experiment("training")
    with mlflow.start_run():
        mlflow.log_artifact(str(eval_file), "governance")  # labelled data: the policy checks accuracy
        mlflow.pytorch.log_model(mlp, name="model", input_example=bc.X[:4], pip_requirements=["torch"],
                                 registered_model_name="e2e-mlp")  # pt2: the service refuses pickle

    jobs = wait_jobs(queue, lambda js: any(j.payload["model_uri"] == "models:/e2e-mlp/1" and j.final for j in js),
                     240, log)
    (job,) = [j for j in jobs if j.payload["model_uri"] == "models:/e2e-mlp/1"]
    assert job.state == "succeeded", job.error
    assert job.source == "webhook" and job.trigger == "created"
    res = job.result
    assert res["reported"] and res["verdict"] == "pass" and res["status"] == "pass" and res["run_status"] == "ok"
    pdf = Path(res["pdf"])
    # the job's own folder: another report on the same version can never overwrite what the job records
    assert pdf.is_file() and pdf.parent == stack["tmp"] / "reports" / "e2e-mlp-v1" / f"job-{job.id}"
    assert res["signer"] == "E2E Service Signer" and res["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    client = MlflowClient(tracking_uri=stack["tracking"])
    run = client.get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED" and any(k.startswith("occlusion.") for k in run.data.metrics)
    tags = client.get_model_version("e2e-mlp", "1").tags
    assert tags["governance.report_run_id"] == run.info.run_id and tags["governance.status"] == "pass"
    assert tags["governance.report_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert tags["governance.report_signer"] == "E2E Service Signer"
    code, out, err = gov("verify", str(pdf), "--trust", str(stack["cert"]))
    assert code == 0 and "signed by E2E Service Signer" in out, out + err

    # the alias event names the same version under the same settings: no second job
    client.set_registered_model_alias("e2e-mlp", "champion", "1")
    wait_jobs(queue, lambda js: any(j.id == job.id and j.duplicates >= 1 for j in js), 30, log)
    # an explicit request through a tag is a new job (the pipeline reuses the identical finished run)
    client.set_model_version_tag("e2e-mlp", "1", "governance.request", "2026-11-24")
    jobs = wait_jobs(queue, lambda js: any(j.trigger.startswith("tag:") and j.final for j in js), 120, log)
    (tag_job,) = [j for j in jobs if j.trigger.startswith("tag:")]
    # the explicit request reports again, reusing the identical finished run's explanations
    assert tag_job.state == "succeeded" and tag_job.result["mlflow_run_id"] == run.info.run_id

    # polling and the schedule find the version already handled: nothing new is queued
    code, _, err = gov("watch", "--once", "--backfill", "--no-worker", "--alias", "champion")
    assert code == 0 and "2 version(s) examined, 0 queued, 2 already" in err, err  # created + alias
    code, _, err = gov("schedule", "--alias", "champion", "--enqueue-only")
    assert code == 0 and "0 queued, 1 already" in err, err
    assert len(queue.jobs(limit=100)) == 2

    listing = json.loads(gov("jobs", "--json")[1])
    assert listing["counts"]["succeeded"] == 2 and listing["counts"]["failed"] == 0


def test_health_says_only_ok_without_the_secret(stack):
    with urllib.request.urlopen(stack["health"], timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    req = urllib.request.Request(stack["health"], headers={"Authorization": "Bearer not-the-secret"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    req = urllib.request.Request(stack["health"], headers={"Authorization": f"Bearer {SECRET}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert "alias champion" in doc["rules"] and "jobs" in doc and doc["worker"]["alive"]


def test_a_registered_pickle_payload_never_runs_in_the_worker(stack, gov, monkeypatch, tmp_path):
    """Issue 20: one webhook made the serve worker unpickle a registered model (running its payload) and
    mark the job succeeded. Now the job fails with the reason, and the payload never runs."""
    from tests.pickle_payload import register_payload_model

    assert gov("webhook", "install", "--url", stack["receiver_url"], "--alias", "champion",
               "--tag", "governance.request")[0] == 0
    marker = tmp_path / "PAYLOAD-RAN"
    uri = register_payload_model(stack["tracking"], "e2e-payload", marker, tmp_path)
    queue = JobQueue(stack["queue"])
    jobs = wait_jobs(queue, lambda js: any(j.payload["model_uri"] == uri and j.final for j in js), 180,
                     stack["tmp"] / "serve.log")
    (job,) = [j for j in jobs if j.payload["model_uri"] == uri]
    assert job.state == "failed" and "pickle-format PyTorch model" in job.error and "--trust-pickle" in job.error
    assert job.attempts == 1  # a refusal is permanent, not retried
    assert not marker.exists()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack["tracking"])
    exp = client.get_experiment_by_name("governance")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`governance.model_name` = 'e2e-payload'") \
        if exp else []
    assert runs == []  # refused before any MLflow write
