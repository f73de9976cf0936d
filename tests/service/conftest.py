"""Helpers for the service tests: free loopback ports, child processes stopped by their own id, signed
deliveries, marker handlers. Everything listens on 127.0.0.1 and writes under tmp_path."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from governance.service.signing import sign

SECRET = "test-secret-0123456789-abcdefghij"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (bounded); fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s ({last})")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own process group, so that it and its children can be stopped by that id."""
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what survives."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GOVERNANCE_"))}
    home = tmp / "home"
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_DATA_HOME", ".local/share"), ("MPLCONFIGDIR", "mpl")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               PYTHONUNBUFFERED="1", GOVERNANCE_HOME=str(tmp / "state"))
    env.update(extra)
    return env


def start_mlflow_server(tmp: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store under ``tmp`` and webhooks enabled (private
    addresses allowed, a fresh encryption key, a 1 s webhook cache)."""
    from cryptography.fernet import Fernet

    env = child_env(tmp, MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https", MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
                    MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(), MLFLOW_WEBHOOK_CACHE_TTL="1")
    return start([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                  "--default-artifact-root", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                  "--workers", "1"], env, tmp / "mlflow.log")


def governance_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "governance", *args]


def envelope(event: str, data: dict[str, Any]) -> bytes:
    entity, _, action = event.rpartition(".")
    return json.dumps({"entity": entity, "action": action, "timestamp": "2026-11-24T00:00:00+00:00",
                       "data": data}).encode()


def signed_headers(body: bytes, *, secret: str = SECRET, delivery_id: str | None = None,
                   timestamp: int | None = None) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts,
            "X-MLflow-Signature": sign(secret, delivery_id, ts, body)}


def created(name: str, version: str | int) -> bytes:
    return envelope("model_version.created", {"name": name, "version": str(version), "source": f"models:/m-{name}",
                                              "run_id": None, "tags": {}, "description": None})


@pytest.fixture
def handler_module(tmp_path, monkeypatch):
    """A module of test handlers on sys.path (and importable by spawned job processes via PYTHONPATH)."""
    folder = tmp_path / "handlers"
    folder.mkdir()
    (folder / "svc_test_handlers.py").write_text(textwrap.dedent('''
        import json, os, time
        from pathlib import Path

        def _log(job, event):
            with open(os.environ["SVC_MARKERS"], "a") as fh:
                fh.write(json.dumps({"job": job.id, "attempt": job.attempts, "event": event, "pid": os.getpid()}) + "\\n")
                fh.flush()
                os.fsync(fh.fileno())

        def marker(job):
            _log(job, "done")
            return {"model": job.payload["model_uri"]}

        def sleepy(job):
            _log(job, "start")
            time.sleep(float(os.environ.get("SVC_SLEEP", "3")))
            _log(job, "done")
            return {"slept": True}

        def crash_once(job):
            if job.attempts == 1:
                _log(job, "crash")
                os._exit(9)
            _log(job, "done")
            return {}

        def forever(job):
            _log(job, "start")
            time.sleep(600)
    '''))
    markers = tmp_path / "markers.jsonl"
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("SVC_MARKERS", str(markers))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return markers


def read_markers(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A SQLite MLflow store with three registered models (no artifacts needed: the handler is a marker)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("service-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in ("fraud-a", "fraud-b", "churn"):
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, source=str(root / name))
    client.set_registered_model_alias("fraud-a", "champion", "2")
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_model_version_tag("fraud-b", "1", "governance.request", "please")
    return {"uri": uri, "client": client, "root": root}
