"""Which MLflow store to talk to, and a fast check that it answers (MLflow's own client retries for minutes)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from governance.contract.errors import TrackingError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: URI schemes MLflow's own tracking stores understand (``mssql+pyodbc`` etc. count by their first part);
#: plugins add theirs through the ``mlflow.tracking_store`` entry-point group
BUILTIN_SCHEMES = frozenset({"http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
                             "databricks-uc", "uc", "file"})


def _known_scheme(scheme: str) -> bool:
    if scheme in BUILTIN_SCHEMES:
        return True
    from importlib.metadata import entry_points

    return scheme in {ep.name for ep in entry_points(group="mlflow.tracking_store")}


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > the settings file > the embedded ``sqlite:///mlflow.db``."""
    if explicit or os.environ.get("MLFLOW_TRACKING_URI"):
        return explicit or os.environ["MLFLOW_TRACKING_URI"]
    from governance.host.settings import setting

    return setting("tracking_uri") or DEFAULT_TRACKING_URI


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError with a fix when ``uri`` cannot be used. Cheap: no MLflow import for http."""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.lower().split("+", 1)[0] if "://" in uri or uri.startswith("sqlite:") else ""
    if scheme and not _known_scheme(scheme):
        raise TrackingError(
            f"tracking URI {uri!r} has the scheme {scheme}://, which no installed MLflow tracking store handles",
            hint="use http(s)://host:port for an MLflow server, sqlite:///path/mlflow.db, or a database URI "
            "(postgresql://, mysql://, mssql://); check --tracking-uri / MLFLOW_TRACKING_URI",
        )
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user-given tracking URI
                if resp.status >= 500:
                    raise TrackingError(f"the MLflow server at {uri} answered HTTP {resp.status}",
                                        hint="check the server's logs")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise TrackingError(f"the MLflow server at {uri} answered HTTP {exc.code}",
                                    hint="check the server's logs") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason})",
                hint="start it (`mlflow server ...`), fix --tracking-uri / MLFLOW_TRACKING_URI, or omit both "
                "to use the local store sqlite:///mlflow.db",
            ) from exc
    elif uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[-1] if ":///" in uri else ""
        if path and path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise TrackingError(f"the folder of the SQLite tracking store {uri} does not exist ({parent})",
                                    hint="create the folder, or point --tracking-uri at an existing location")
            if not os.access(parent, os.W_OK):
                raise TrackingError(f"the SQLite tracking store {uri} is in a read-only folder ({parent})",
                                    hint="use a writable location, e.g. --tracking-uri sqlite:////tmp/mlflow.db")
    elif uri.startswith("file:") or "://" not in uri:
        raise TrackingError(
            f"tracking URI {uri!r} is a file store, which MLflow 3.13+ refuses by default",
            hint="use a SQLite store (sqlite:///mlflow.db) or an MLflow server (http://host:5000)",
        )


def client(uri: str):
    """An MlflowClient for ``uri`` with bounded HTTP retries (fail in seconds, not minutes)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def pinned_store(uri: str) -> Iterator[None]:
    """Make ``uri`` the process's tracking AND registry store for the block, then restore what was there.

    ``mlflow.artifacts.download_artifacts("models:/name/1", tracking_uri=...)`` resolves the registry part
    through the process-wide registry URI, not through its argument; without this, a ``--tracking-uri``
    pointing at a server would download from ``sqlite:///mlflow.db``."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri,
             {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")})
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved[0], saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
