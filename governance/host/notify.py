"""Outgoing notifications: a small signed JSON document POSTed for every verdict and gate action.

A chat bot or a ticket system verifies it exactly as governance verifies MLflow's webhooks
(``governance.service.signing.verify`` accepts it with the header names below)::

    X-Governance-Event:        report.verdict | gate.promoted | gate.blocked | gate.reverted | ...
    X-Governance-Delivery-Id:  a fresh uuid4 per notification (the same on each retry)
    X-Governance-Timestamp:    unix seconds
    X-Governance-Signature:    v1,<base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{raw body}"))>

The secret comes from ``GOVERNANCE_NOTIFY_SECRET`` (never from the command line). A notification that cannot be
delivered after a few tries is logged and recorded, never fatal: news about a gate must not undo the gate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlparse

from governance.contract.errors import ConfigError

log = logging.getLogger("governance.notify")

SECRET_ENV = "GOVERNANCE_NOTIFY_SECRET"
MIN_SECRET_LENGTH = 16
EVENT_HEADER = "X-Governance-Event"
DELIVERY_ID_HEADER = "X-Governance-Delivery-Id"
TIMESTAMP_HEADER = "X-Governance-Timestamp"
SIGNATURE_HEADER = "X-Governance-Signature"
SCHEMA = "governance.notification/1"


@dataclass
class Delivery:
    """What happened to one notification."""

    url: str
    event: str
    delivery_id: str
    ok: bool
    status: int | None = None
    attempts: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def notify_secret() -> str:
    """The signing secret, or a ConfigError saying how to set it."""
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET_LENGTH:
        state = "is not set" if not secret else f"is too short ({len(secret)} characters)"
        raise ConfigError(f"--notify needs a signing secret: {SECRET_ENV} {state}",
                          hint=f"export {SECRET_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                               " and give the listener the same value")
    return secret


def check_notify(url: str | None) -> None:
    """Fail before any work when a notification URL is given but cannot be used."""
    if not url:
        return
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"invalid --notify URL {url!r}", hint="e.g. --notify https://bot.example.com/governance")
    notify_secret()


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature scheme over ``delivery_id.timestamp.body``."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _post_once(url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - http(s) checked above
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def post_notification(url: str, event: str, doc: Mapping[str, Any], *, secret: str | None = None,
                      attempts: int = 3, timeout: float = 5.0, backoff: float = 0.5) -> Delivery:
    """POST ``{"schema", "event", "sent_at", **doc}`` to ``url``, signed; retried on connection errors, 429 and
    5xx. Returns the delivery record (never raises for a listener that is down)."""
    secret = secret or notify_secret()
    delivery = Delivery(url=url, event=event, delivery_id=str(uuid.uuid4()), ok=False)
    body = json.dumps({"schema": SCHEMA, "event": event, "sent_at": _utc_now(), **doc}, sort_keys=True,
                      default=str).encode()
    for attempt in range(1, attempts + 1):
        delivery.attempts = attempt
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_ID_HEADER: delivery.delivery_id,
                   TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, delivery.delivery_id, timestamp, body)}
        try:
            delivery.status = _post_once(url, headers, body, timeout)
            delivery.error = None if delivery.status < 300 else f"the listener answered {delivery.status}"
        except OSError as exc:  # refused, unreachable, timed out
            delivery.status, delivery.error = None, f"{type(exc).__name__}: {exc}"
        delivery.ok = delivery.status is not None and 200 <= delivery.status < 300
        retry = delivery.status is None or delivery.status == 429 or delivery.status >= 500
        if delivery.ok or not retry:
            break
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    if not delivery.ok:
        log.warning("notification %s to %s not delivered after %d attempt(s): %s", event, url, delivery.attempts,
                    delivery.error)
    return delivery
