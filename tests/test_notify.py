"""Outgoing notifications (governance/host/notify.py): signed as MLflow signs its webhooks, received by a real
local HTTP server, retried on 5xx, never fatal when the listener is down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket

import pytest

from governance.contract.errors import ConfigError
from governance.host.notify import SECRET_ENV, check_notify, post_notification
from tests.notify_listener import NOTIFY_SECRET, Listener


@pytest.fixture
def listener(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, NOTIFY_SECRET)
    srv = Listener().start()
    yield srv
    srv.close()


def test_a_notification_arrives_with_a_valid_signature(listener):
    delivery = post_notification(listener.url, "gate.blocked", {"model": {"name": "m", "version": "3"}})
    assert delivery.ok and delivery.status == 200 and delivery.attempts == 1
    (got,) = listener.received
    assert got.signature_ok, got.reason
    assert got.doc["event"] == "gate.blocked" and got.doc["model"] == {"name": "m", "version": "3"}
    assert got.doc["schema"] == "governance.notification/1" and got.headers["X-Governance-Event"] == "gate.blocked"
    # the scheme written out by hand: v1,base64(HMAC-SHA256(secret, "<id>.<timestamp>.<raw body>"))
    msg = f"{got.headers['X-Governance-Delivery-Id']}.{got.headers['X-Governance-Timestamp']}.".encode() + got.body
    expected = "v1," + base64.b64encode(hmac.new(NOTIFY_SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    assert got.headers["X-Governance-Signature"] == expected


def test_a_listener_with_another_secret_rejects_it(listener):
    listener.secret = "some-other-secret-0123456789"
    post_notification(listener.url, "report.verdict", {"verdict": "pass"})
    assert listener.received[0].signature_ok is False and listener.received[0].reason == "bad-signature"


def test_5xx_is_retried_with_the_same_delivery_id_and_4xx_is_not(listener):
    listener.statuses = [503, 502]
    delivery = post_notification(listener.url, "report.verdict", {}, backoff=0.01)
    assert delivery.ok and delivery.attempts == 3
    assert len({r.headers["X-Governance-Delivery-Id"] for r in listener.received}) == 1
    listener.received.clear()
    listener.statuses = [400]
    refused = post_notification(listener.url, "report.verdict", {}, backoff=0.01)
    assert not refused.ok and refused.attempts == 1 and refused.status == 400 and len(listener.received) == 1


def test_an_unreachable_listener_is_recorded_not_raised(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, NOTIFY_SECRET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    delivery = post_notification(f"http://127.0.0.1:{port}/x", "gate.reverted", {}, attempts=2, backoff=0.01)
    assert not delivery.ok and delivery.status is None and delivery.attempts == 2 and "Error" in delivery.error


def test_notify_needs_a_secret_and_an_http_url(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    check_notify(None)  # no --notify: nothing to check
    with pytest.raises(ConfigError, match=f"{SECRET_ENV} is not set"):
        check_notify("https://bot.example.com/hook")
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(ConfigError, match="too short"):
        check_notify("https://bot.example.com/hook")
    monkeypatch.setenv(SECRET_ENV, NOTIFY_SECRET)
    with pytest.raises(ConfigError, match="invalid --notify URL"):
        check_notify("ftp://bot.example.com/hook")
    check_notify("https://bot.example.com/hook")


def test_the_verifier_in_docs_gate_md_accepts_a_real_notification(listener):
    """docs/gate.md shows listeners how to verify: run that snippet on what governance really sent."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "gate.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in b]
    scope: dict = {}
    exec(block, scope)  # noqa: S102 - our own documentation
    post_notification(listener.url, "gate.kept", {"alias": "champion"})
    got = listener.received[0]
    assert scope["verify"](NOTIFY_SECRET, got.headers, got.body)
    assert not scope["verify"](NOTIFY_SECRET, got.headers, got.body + b" ")
