"""The receiver: every kind of bad delivery is refused without a job; good ones queue exactly one."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from governance.run.spec import RunSpec
from governance.service.queue import JobQueue
from governance.service.receiver import Receiver
from governance.service.signing import sign
from governance.service.triggers import TagRule, TriggerRules

from .conftest import SECRET, created, envelope, signed_headers


@pytest.fixture
def rx(tmp_path):
    q = JobQueue(tmp_path / "q.db")
    rules = TriggerRules(aliases=("champion",), tags=(TagRule.parse("governance.request"),), models=("fraud-*",))
    return Receiver(q, secrets=[SECRET], rules=rules, settings=RunSpec(tracking_uri="http://127.0.0.1:1"))


def jobs(rx):
    return rx.queue.jobs(limit=1000)


def test_valid_delivery_queues_one_job(rx):
    body = created("fraud-a", 3)
    status, doc = rx.handle(signed_headers(body), body)
    assert status == 202 and doc["status"] == "queued" and doc["job"] == "created"
    (job,) = jobs(rx)
    assert job.payload["model_uri"] == "models:/fraud-a/3" and job.source == "webhook" and job.trigger == "created"
    assert job.payload["settings"]["tracking_uri"] == "http://127.0.0.1:1"


def test_headers_are_case_insensitive(rx):
    body = created("fraud-a", 3)
    headers = {k.lower(): v for k, v in signed_headers(body).items()}
    assert rx.handle(headers, body)[0] == 202


def forged(body):
    h = signed_headers(body)
    h["X-MLflow-Signature"] = sign("an-attacker-guessed-this-one", h["X-MLflow-Delivery-Id"], h["X-MLflow-Timestamp"], body)
    return h


def tampered(body):
    h = signed_headers(body)
    return h, body.replace(b"fraud-a", b"fraud-b")


@pytest.mark.parametrize("case", ["forged", "unsigned", "tampered", "stale", "future", "no-id", "bad-ts",
                                  "not-json", "not-envelope", "bad-version"])
def test_bad_deliveries_create_no_job(rx, case):
    body = created("fraud-a", 3)
    headers = signed_headers(body)
    if case == "forged":
        headers = forged(body)
    elif case == "unsigned":
        headers.pop("X-MLflow-Signature")
    elif case == "tampered":
        headers, body = tampered(body)
    elif case == "stale":
        headers = signed_headers(body, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers = signed_headers(body, timestamp=int(time.time()) + 301)
    elif case == "no-id":
        headers.pop("X-MLflow-Delivery-Id")
    elif case == "bad-ts":
        headers["X-MLflow-Timestamp"] = "yesterday"
    elif case == "not-json":
        body = b"<xml/>"
        headers = signed_headers(body)
    elif case == "not-envelope":
        body = json.dumps({"name": "fraud-a", "version": "3"}).encode()
        headers = signed_headers(body)
    elif case == "bad-version":
        body = envelope("model_version.created", {"name": "fraud-a", "version": "3; DROP TABLE"})
        headers = signed_headers(body)
    status, doc = rx.handle(headers, body)
    expected = 400 if case in ("no-id", "bad-ts", "not-json", "not-envelope", "bad-version") else 401
    assert status == expected and doc["status"] == "rejected"
    assert jobs(rx) == [] and rx.queue.delivery_count() == 0


def test_replay_and_mlflow_retries_create_no_second_job(rx):
    body = created("fraud-a", 3)
    headers = signed_headers(body)
    assert rx.handle(headers, body)[0] == 202
    for _ in range(3):  # MLflow retries re-send the same id, timestamp and signature
        status, doc = rx.handle(dict(headers), body)
        assert status == 200 and doc["status"] == "duplicate"
    assert len(jobs(rx)) == 1 and jobs(rx)[0].duplicates == 0
    assert rx.stats["duplicate"] == 3


def test_same_version_from_other_events_collapses(rx):
    for body in (created("fraud-a", 3),
                 envelope("model_version_alias.created", {"name": "fraud-a", "alias": "champion", "version": "3"})):
        rx.handle(signed_headers(body), body)
    (job,) = jobs(rx)
    assert job.duplicates == 1
    tag = envelope("model_version_tag.set", {"name": "fraud-a", "version": "3", "key": "governance.request",
                                             "value": "2026-11-24"})
    status, doc = rx.handle(signed_headers(tag), tag)
    assert status == 202 and doc["job"] == "created" and len(jobs(rx)) == 2  # an explicit request is new


@pytest.mark.parametrize("body", [
    envelope("model_version_alias.created", {"name": "fraud-a", "alias": "staging", "version": "3"}),
    envelope("model_version_tag.set", {"name": "fraud-a", "version": "3", "key": "owner", "value": "me"}),
    envelope("registered_model.created", {"name": "fraud-a", "tags": {}, "description": None}),
    created("other-model", 1),
])
def test_filtered_events_are_acknowledged_without_a_job(rx, body):
    status, doc = rx.handle(signed_headers(body), body)
    assert status == 200 and doc["status"] == "ignored" and jobs(rx) == []


def test_mlflow_test_delivery_is_verified_not_queued(rx):
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.types import get_example_payload_for_event

    body = envelope("model_version.created", get_example_payload_for_event(WebhookEvent("model_version", "created")))
    status, doc = rx.handle(signed_headers(body), body)
    assert status == 200 and doc["status"] == "test" and jobs(rx) == []
    assert rx.handle(forged(body), body)[0] == 401


def test_queue_failure_answers_503_so_mlflow_retries(rx, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(rx.queue, "accept_delivery", broken)
    body = created("fraud-a", 3)
    assert rx.handle(signed_headers(body), body)[0] == 503


def test_old_delivery_ids_are_purged(rx):
    body = created("fraud-a", 3)
    rx.handle(signed_headers(body, delivery_id=str(uuid.uuid4())), body)
    assert rx.queue.delivery_count() == 1
    rx._last_purge = 0
    rx._maybe_purge(time.time() + 10_000)
    assert rx.queue.delivery_count() == 0


def test_health(rx):
    body = created("fraud-a", 3)
    rx.handle(signed_headers(body), body)
    rx.handle(forged(body), body)
    h = rx.health()
    assert h["jobs"]["queued"] == 1 and h["deliveries"] == {"job:created": 1, "rejected:bad-signature": 1}


def test_version_spellings_of_one_version_make_one_job(rx):
    """Issue 20: webhook versions "002" and "2" made two jobs for one version."""
    for version in ("002", "2", 2, "0002"):
        body = envelope("model_version.created", {"name": "fraud-a", "version": version, "source": "s"})
        assert rx.handle(signed_headers(body), body)[0] == 202
    (job,) = jobs(rx)
    assert job.payload["version"] == "2" and job.payload["model_uri"] == "models:/fraud-a/2" and job.duplicates == 3
    for version in ("0", "-1", "2.0", True, "", "1e3"):
        body = envelope("model_version.created", {"name": "fraud-a", "version": version, "source": "s"})
        status, doc = rx.handle(signed_headers(body), body)
        assert status == 400 and doc["reason"] == "malformed", version
    assert len(jobs(rx)) == 1


def test_health_details_need_the_webhook_secret(rx):
    body = created("fraud-a", 3)
    rx.handle(signed_headers(body), body)
    assert rx.health(authorised=rx.authorised({})) == {"status": "ok"}
    for header in ("Bearer wrong-secret-of-the-same-sort", "Basic " + SECRET, SECRET, "Bearer "):
        assert not rx.authorised({"Authorization": header}), header
    assert rx.authorised({"authorization": f"Bearer {SECRET}"})
    detail = rx.health(authorised=rx.authorised({"Authorization": f"Bearer {SECRET}"}))
    assert detail["jobs"]["queued"] == 1 and "alias champion" in detail["rules"]


def _get_health(app, headers: dict[str, str]) -> dict:
    """One GET /health through the ASGI app itself (no server, no HTTP client library needed)."""
    import asyncio

    sent: list[dict] = []
    scope = {"type": "http", "method": "GET", "path": "/health", "raw_path": b"/health", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
             "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    return json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_health_over_asgi_hides_rules_and_counts(rx):
    from governance.service.receiver import create_app

    app = create_app(rx)
    assert _get_health(app, {}) == {"status": "ok"}
    assert _get_health(app, {"Authorization": "Bearer nope"}) == {"status": "ok"}
    full = _get_health(app, {"Authorization": f"Bearer {SECRET}"})
    assert set(full) == {"status", "rules", "deliveries", "jobs"}
