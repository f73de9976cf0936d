"""The commands, in process: jobs management, configuration errors with their exit codes, schedule/watch
running jobs with a marker handler."""

from __future__ import annotations

import json

import pytest

from governance.service.queue import JobQueue

from .conftest import SECRET, read_markers


@pytest.fixture
def qurl(tmp_path, monkeypatch):
    path = tmp_path / "queue.db"
    monkeypatch.setenv("GOVERNANCE_QUEUE", f"sqlite:///{path}")
    return path


def add(path, key, **kw):
    return JobQueue(path).enqueue(kind="report", key=key, source="test", trigger="created",
                                  payload={"model_uri": f"models:/m/{key}", "name": "m", "version": key}, **kw).job


def test_jobs_list_show_retry_cancel(qurl, cli_invoke):
    code, out, _ = cli_invoke("jobs")
    assert code == 0 and "empty" in out
    a, b = add(qurl, "1"), add(qurl, "2")
    q = JobQueue(qurl)
    job = q.claim("w", 30)
    q.fail(job, "ModelResolutionError: no such model\n  hint: check the name")
    code, out, _ = cli_invoke("jobs")
    assert code == 0 and "1 queued" in out and "1 failed" in out and "ModelResolutionError" in out
    code, out, _ = cli_invoke("jobs", "--json", "--state", "failed")
    doc = json.loads(out)
    assert [j["id"] for j in doc["jobs"]] == [a.id] and doc["counts"]["failed"] == 1
    assert "lease_token" not in doc["jobs"][0]
    code, out, _ = cli_invoke("jobs", "show", str(a.id))
    assert code == 0 and "hint: check the name" in out and "claimed" in out and "failed" in out
    assert cli_invoke("jobs", "retry", str(a.id))[0] == 0 and q.get(a.id).state == "queued"
    assert cli_invoke("jobs", "cancel", str(b.id))[0] == 0 and q.get(b.id).state == "cancelled"
    code, _, err = cli_invoke("jobs", "cancel", str(b.id))
    assert code == 2 and "only queued jobs can be cancelled" in err
    assert cli_invoke("jobs", "show", "999")[0] == 2


def test_jobs_work_drains_the_queue(qurl, cli_invoke, handler_module):
    for key in ("1", "2", "3"):
        add(qurl, key)
    code, _, err = cli_invoke("jobs", "work", "--drain", "--isolation", "thread", "--poll", "0.05",
                              "--handler", "svc_test_handlers:marker")
    assert code == 0 and "3 succeeded" in err
    assert sorted(m["job"] for m in read_markers(handler_module)) == [1, 2, 3]


def test_serve_needs_a_secret(qurl, cli_invoke, monkeypatch):
    monkeypatch.delenv("GOVERNANCE_WEBHOOK_SECRET", raising=False)
    code, _, err = cli_invoke("serve", "--port", "1")
    assert code == 2 and "GOVERNANCE_WEBHOOK_SECRET is not set" in err and "secrets.token_urlsafe" in err
    monkeypatch.setenv("GOVERNANCE_WEBHOOK_SECRET", "short")
    code, _, err = cli_invoke("serve", "--port", "1")
    assert code == 2 and "too short" in err


def test_configuration_errors(qurl, cli_invoke, monkeypatch):
    monkeypatch.setenv("GOVERNANCE_WEBHOOK_SECRET", SECRET)
    code, _, err = cli_invoke("webhook", "install", "--url", "http://127.0.0.1:1/webhook",
                              "--tracking-uri", "sqlite:///x.db")
    assert code == 2 and "need an MLflow tracking server" in err and "governance watch" in err
    code, _, err = cli_invoke("webhook", "install", "--url", "ftp://x", "--tracking-uri", "http://127.0.0.1:1")
    assert code == 2 and "invalid receiver URL" in err
    code, _, err = cli_invoke("watch", "--once", "--tag", "governance.status")
    assert code == 2 and "loop" in err
    code, _, err = cli_invoke("watch", "--once", "--no-created")
    assert code == 2 and "no trigger is enabled" in err
    code, _, err = cli_invoke("schedule", "--alias", "champion", "--every", "soon")
    assert code == 2 and "invalid duration" in err


def test_schedule_and_watch_run_their_jobs(qurl, cli_invoke, handler_module, tmp_path, store):
    uri, client = store["uri"], store["client"]
    client.create_registered_model("cli-model")
    client.create_model_version("cli-model", source=str(tmp_path))
    client.set_registered_model_alias("cli-model", "cli-alias", "1")
    common = ("--tracking-uri", uri, "--model", "cli-model", "--isolation", "thread", "--poll", "0.05",
              "--handler", "svc_test_handlers:marker")
    code, _, err = cli_invoke("schedule", "--alias", "cli-alias", *common)
    assert code == 0 and "1 queued" in err, err
    code, _, err = cli_invoke("schedule", "--alias", "cli-alias", *common)
    assert code == 0 and "0 queued, 1 already" in err
    # the same version found by polling collapses onto the scheduled job; a new version is run
    client.create_model_version("cli-model", source=str(tmp_path))
    code, _, err = cli_invoke("watch", "--once", *common)
    assert code == 0 and "1 queued, 1 already" in err and "1 succeeded" in err, err
    assert [m["job"] for m in read_markers(handler_module)] == [1, 2]
    assert [j.payload["version"] for j in JobQueue(qurl).jobs()] == ["2", "1"]
