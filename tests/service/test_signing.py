"""The signature scheme, checked against MLflow's own signer (the oracle) and the rejection rules."""

from __future__ import annotations

import pytest

from governance.service.signing import sign, verify

SECRET = "s3cret-value-for-tests-0000"


@pytest.mark.parametrize("body", [b'{"a": 1}', "{\"name\": \"m\u00e9t\u00e9o\"}".encode(), b""])
def test_sign_matches_mlflow(body):
    from mlflow.webhooks.delivery import _generate_hmac_signature

    expected = _generate_hmac_signature(SECRET, "d-1", "1764000000", body.decode())
    assert sign(SECRET, "d-1", "1764000000", body) == expected
    assert sign(SECRET, "d-1", 1764000000, body) == expected


def _verify(**kw):
    args = dict(secrets=[SECRET], delivery_id="d-1", timestamp="1000", body=b"{}", now=1000.0, window_seconds=300)
    args["signature"] = sign(SECRET, "d-1", "1000", b"{}")
    args.update(kw)
    return verify(**args)


def test_valid():
    assert _verify().ok


@pytest.mark.parametrize("kw, reason, status", [
    ({"delivery_id": None}, "malformed", 400),
    ({"delivery_id": "x" * 200}, "malformed", 400),
    ({"delivery_id": "bad id\n"}, "malformed", 400),
    ({"timestamp": None}, "malformed", 400),
    ({"timestamp": "-5"}, "malformed", 400),
    ({"timestamp": "1000.5"}, "malformed", 400),
    ({"signature": None}, "unsigned", 401),
    ({"signature": "v1,AAAA"}, "bad-signature", 401),
    ({"body": b"{ }"}, "bad-signature", 401),  # one byte changed
    ({"secrets": ["another-secret-entirely-xx"]}, "bad-signature", 401),
    ({"now": 1000.0 + 301}, "stale", 401),
    ({"now": 1000.0 - 301}, "stale", 401),  # from the future
])
def test_rejections(kw, reason, status):
    v = _verify(**kw)
    assert not v.ok and v.reason == reason and v.status == status


def test_signature_covers_id_and_timestamp():
    good = sign(SECRET, "d-1", "1000", b"{}")
    assert not _verify(delivery_id="d-2", signature=good).ok
    assert not _verify(timestamp="1001", signature=good, now=1001.0).ok


def test_window_edges_and_rotation():
    assert _verify(now=1300.0).ok and _verify(now=700.0).ok
    # receiver rotating: the previous secret still verifies
    assert _verify(secrets=["new-secret-xxxxxxxxxxxxxx", SECRET]).ok
    # sender rotating: several signatures, one valid
    both = sign("old-secret-xxxxxxxxxxxxxx", "d-1", "1000", b"{}") + " " + sign(SECRET, "d-1", "1000", b"{}")
    assert _verify(signature=both).ok
