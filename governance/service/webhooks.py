"""Create (or update) the MLflow webhook that feeds ``governance serve``, and list webhooks.

Traps this guards against (platform-facts.md W2, W11, W12):

* webhooks fire only from ``mlflow server``: a client writing to ``sqlite:///...`` directly fires none, so
  installing through such a URI is refused;
* MLflow never echoes the secret back: it comes from ``GOVERNANCE_WEBHOOK_SECRET``, the same variable the
  receiver reads, and ``--test`` proves both ends agree (the receiver answers MLflow's test payload with
  200 only when the signature verifies);
* the server must run with a fixed ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``, or after a restart deliveries
  fail silently; a failing test says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from governance.contract.errors import ConfigError, TrackingError
from governance.service.triggers import TriggerRules

DEFAULT_NAME = "governance"


@dataclass
class InstallResult:
    webhook: Any
    action: str  # created | updated
    test: Any = None  # WebhookTestResult when tested

    @property
    def test_ok(self) -> bool | None:
        return None if self.test is None else bool(self.test.success)


def _client(tracking_uri: str | None) -> Any:
    from governance.host.tracking import client, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if urlparse(uri).scheme not in ("http", "https"):
        raise ConfigError(
            f"webhooks need an MLflow tracking server, not {uri!r}",
            hint="pass --tracking-uri http://<mlflow-server>:5000 (a direct database or file store fires no "
            "webhooks; use `governance watch` for those)",
        )
    return client(uri)


def list_webhooks(tracking_uri: str | None, *, client: Any = None) -> list[Any]:
    client = client or _client(tracking_uri)
    out, token = [], None
    for _ in range(100):
        page = _call(client.list_webhooks, max_results=100, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    return out


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            raise TrackingError(
                f"MLflow refused the webhook call: {exc.message}",
                hint="the server needs a SQL backend store (webhooks are not supported on file stores) and a "
                "fixed MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY kept across restarts",
            ) from exc
        raise


def install_webhook(
    *,
    url: str,
    rules: TriggerRules,
    secret: str,
    tracking_uri: str | None = None,
    name: str = DEFAULT_NAME,
    description: str | None = None,
    test: bool = False,
    client: Any = None,
    extra_events: tuple[str, ...] = (),
) -> InstallResult:
    """Create the webhook named ``name``, or update it in place when it exists (idempotent). ``extra_events``
    are subscribed besides the rules' (the promotion gate also needs alias removals)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"invalid receiver URL {url!r}", hint="e.g. https://governance.example.com/webhook")
    client = client or _client(tracking_uri)
    events = rules.events + [e for e in extra_events if e not in rules.events]
    description = description or f"governance: reports on {rules.describe()}"
    existing = [w for w in list_webhooks(tracking_uri, client=client) if w.name == name]
    if existing:
        webhook = _call(client.update_webhook, existing[0].webhook_id, name=name, description=description, url=url,
                        events=events, secret=secret, status="ACTIVE")
        action = "updated"
    else:
        webhook = _call(client.create_webhook, name=name, url=url, events=events, description=description,
                        secret=secret, status="ACTIVE")
        action = "created"
    result = InstallResult(webhook, action)
    if test:
        result.test = _call(client.test_webhook, webhook.webhook_id, event=events[0])
    return result


def explain_test_failure(test: Any) -> str:
    """One sentence on what a failed ``test_webhook`` most likely means."""
    status = getattr(test, "response_status", None)
    if status == 401:
        return ("the receiver rejected the signature: GOVERNANCE_WEBHOOK_SECRET differs between `webhook install` "
                "and `governance serve`")
    if status is None:
        return ("MLflow could not reach the receiver (is `governance serve` running and reachable from the MLflow "
                "server? for http:// or private addresses the server needs MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https "
                "and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true)")
    if status >= 500:
        return (f"the receiver answered {status}; if it is healthy, the MLflow server may have lost its "
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (set a fixed key and re-run `governance webhook install`)")
    return f"the receiver answered {status}"
