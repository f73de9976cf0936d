"""Where the service keeps its state and how it reads its secret.

Precedence for every setting: command-line option > environment variable > default. The webhook secret is
the exception: it is read from the environment only (``GOVERNANCE_WEBHOOK_SECRET``), never from the command
line, where it would end up in shell history and in ``ps`` output.
"""

from __future__ import annotations

import os
from pathlib import Path

from governance.contract.errors import ConfigError

SECRET_ENV = "GOVERNANCE_WEBHOOK_SECRET"
#: the previous secret, still accepted while a rotation is under way (optional)
PREVIOUS_SECRET_ENV = "GOVERNANCE_WEBHOOK_SECRET_PREVIOUS"
QUEUE_ENV = "GOVERNANCE_QUEUE"
HOME_ENV = "GOVERNANCE_HOME"
MIN_SECRET_LENGTH = 16


def state_dir() -> Path:
    """``$GOVERNANCE_HOME``, else ``$XDG_STATE_HOME/governance``, else ``~/.local/state/governance``."""
    from governance.host.settings import state_dir as host_state_dir

    return host_state_dir()


def default_queue_url() -> str:
    return os.environ.get(QUEUE_ENV) or f"sqlite:///{state_dir() / 'queue.db'}"


def queue_path(url: str | None) -> Path:
    """The SQLite file named by ``sqlite:///path`` (absolute: ``sqlite:////abs/path``), or a bare path."""
    url = url or default_queue_url()
    if url.startswith("sqlite:///"):
        raw = url[len("sqlite:///"):]
    elif "://" in url:
        raise ConfigError(
            f"unsupported queue URL {url!r}",
            hint="use sqlite:///relative/path.db, sqlite:////absolute/path.db or a plain file path",
        )
    else:
        raw = url
    if not raw or raw == ":memory:":
        raise ConfigError(
            f"the queue needs a file, got {url!r}",
            hint="the queue is shared by the receiver and the worker processes: give it a file path",
        )
    return Path(raw).expanduser()


def webhook_secrets(required: bool = True) -> list[str]:
    """The current secret and, during a rotation, the previous one. Raises ConfigError when missing."""
    current = os.environ.get(SECRET_ENV, "")
    previous = os.environ.get(PREVIOUS_SECRET_ENV, "")
    if not current:
        if not required:
            return []
        raise ConfigError(
            f"{SECRET_ENV} is not set",
            hint=f"export {SECRET_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') "
            "and give the same value to `governance webhook install`",
        )
    if len(current) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{SECRET_ENV} is too short ({len(current)} characters)",
            hint=f"use at least {MIN_SECRET_LENGTH} random characters, e.g. secrets.token_urlsafe(32)",
        )
    return [s for s in (current, previous) if s]


def tracking_uri(option: str | None) -> str | None:
    """``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (None lets MLflow apply its own default)."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or None
