"""MLflow webhook signatures (MLflow 3.3+; checked against 3.17 deliveries, platform-facts.md W3-W4).

``X-MLflow-Signature: v1,<base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{raw_body}"))>`` where
``delivery_id`` and ``timestamp`` are the ``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` header values
exactly as sent and the body is hashed as raw bytes, before any JSON parsing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Iterable

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_VERSION = "v1"

_DELIVERY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def sign(secret: str, delivery_id: str, timestamp: str | int, body: bytes) -> str:
    """The header value MLflow sends for this delivery (also used by tests and ``webhook send``)."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one delivery's headers. ``reason`` is a short machine-readable code."""

    ok: bool
    reason: str = "ok"
    detail: str = ""
    status: int = 200


def _reject(reason: str, detail: str, status: int) -> Verdict:
    return Verdict(False, reason, detail, status)


def verify(
    *,
    secrets: Iterable[str],
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window_seconds: float,
) -> Verdict:
    """Check headers, signature (constant time) and freshness, in that order; nothing is parsed first.

    The signature is checked before the timestamp so that an unsigned request learns nothing about the
    clock. Several ``v1,<sig>`` values separated by spaces are accepted (a sender rotating secrets);
    several secrets are accepted (the receiver rotating them).
    """
    if not delivery_id or not _DELIVERY_ID.match(delivery_id):
        return _reject("malformed", f"missing or invalid {DELIVERY_ID_HEADER} header", 400)
    if not timestamp or not _TIMESTAMP.match(timestamp):
        return _reject("malformed", f"missing or invalid {TIMESTAMP_HEADER} header (unix seconds)", 400)
    if not signature:
        return _reject("unsigned", f"missing {SIGNATURE_HEADER} header", 401)
    given = [part.strip() for part in signature.split(" ") if part.strip()]
    if not given or len(given) > 8:
        return _reject("bad-signature", "unreadable signature header", 401)
    matched = False
    for secret in secrets:
        expected = sign(secret, delivery_id, timestamp, body).encode()
        for candidate in given:
            # compare every pair: the time taken does not depend on which one matched
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        return _reject("bad-signature", "signature does not match", 401)
    age = now - int(timestamp)
    if abs(age) > window_seconds:
        return _reject(
            "stale",
            f"timestamp is {age:+.0f} s from the receiver's clock (window ±{window_seconds:.0f} s)",
            401,
        )
    return Verdict(True)
