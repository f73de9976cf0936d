"""A real receiver process (`governance serve`) on loopback: HTTP behaviour and a bounded burst load test."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from governance.service.queue import JobQueue

from .conftest import SECRET, child_env, created, free_port, governance_cmd, signed_headers, start, stop, wait_http

pytestmark = pytest.mark.slow

N_BURST = 200
N_RETRIES = 50
N_SAME_VERSION = 20


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("receiver")
    port = free_port()
    queue = tmp / "queue.db"
    env = child_env(tmp, GOVERNANCE_WEBHOOK_SECRET=SECRET)
    proc = start(governance_cmd("serve", "--port", str(port), "--queue", f"sqlite:///{queue}", "--no-worker",
                                "--tracking-uri", "http://127.0.0.1:9", "--log-level", "warning"), env, tmp / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 60, proc)
        yield {"port": port, "queue": queue, "log": tmp / "serve.log", "proc": proc}
    finally:
        stop(proc)


def post(port: int, body: bytes, headers: dict[str, str], conn: http.client.HTTPConnection | None = None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhook", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        if own:
            conn.close()


def test_http_answers(receiver):
    """Over real HTTP: one good delivery queues one job; forged, replayed, stale, malformed and oversized
    ones are refused and create nothing."""
    port, queue = receiver["port"], JobQueue(receiver["queue"])
    body = created("http-model", 1)
    good = signed_headers(body)
    status, doc = post(port, body, good)
    assert status == 202 and doc["status"] == "queued"
    forged = dict(good, **{"X-MLflow-Signature": "v1,Zm9yZ2Vk"})
    other = created("http-model", 2)
    cases = {
        "forged": (401, post(port, body, dict(forged, **{"X-MLflow-Delivery-Id": str(uuid.uuid4())}))),
        "replayed": (200, post(port, body, good)),
        "stale": (401, post(port, other, signed_headers(other, timestamp=int(time.time()) - 3600))),
        "malformed": (400, post(port, b"{not json", signed_headers(b"{not json"))),
        "unsigned": (401, post(port, other, {k: v for k, v in signed_headers(other).items()
                                              if k != "X-MLflow-Signature"})),
    }
    for name, (expected, (status, doc)) in cases.items():
        assert status == expected, (name, doc)
    big = b"{" + b" " * (1 << 20) + b"}"
    assert post(port, big, signed_headers(big))[0] == 413
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/webhook")
    assert conn.getresponse().status == 405
    conn.close()
    jobs = [j for j in queue.jobs(limit=10_000) if j.payload["name"] == "http-model"]
    assert [j.payload["version"] for j in jobs] == ["1"]


def test_burst_loses_nothing_and_duplicates_nothing(receiver):
    """200 distinct deliveries in a burst, 50 MLflow-style retries of them and 20 deliveries for one version."""
    port, queue = receiver["port"], JobQueue(receiver["queue"])
    before = {j.payload["model_uri"] for j in queue.jobs(limit=10_000)}
    deliveries = []
    for i in range(N_BURST):
        body = created("load-model", i + 1)
        deliveries.append((body, signed_headers(body)))
    retries = [deliveries[i] for i in range(0, N_BURST, N_BURST // N_RETRIES)][:N_RETRIES]
    same = []
    for _ in range(N_SAME_VERSION):
        body = created("load-same", 1)
        same.append((body, signed_headers(body, delivery_id=str(uuid.uuid4()))))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def send(item):
        body, headers = item
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        try:
            status, _ = post(port, body, headers, local.conn)
        except (http.client.HTTPException, OSError):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, _ = post(port, body, headers, local.conn)
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            statuses[status] = statuses.get(status, 0) + 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, deliveries + same))
        list(pool.map(send, retries))
    wall = time.perf_counter() - t0

    jobs = [j for j in queue.jobs(limit=10_000) if j.payload["model_uri"] not in before]
    uris = [j.payload["model_uri"] for j in jobs]
    load_jobs = sorted(int(u.rsplit("/", 1)[1]) for u in uris if u.startswith("models:/load-model/"))
    same_jobs = [j for j in jobs if j.payload["name"] == "load-same"]
    lat = sorted(latencies)
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    sent = len(deliveries) + len(same) + len(retries)
    print(f"\nload test: {sent} deliveries in {wall:.2f} s ({sent / wall:.0f}/s) over 16 loopback connections; "
          f"answers {dict(sorted(statuses.items()))}; jobs queued {len(jobs)} (expected {N_BURST + 1}); "
          f"lost {N_BURST - len(set(load_jobs))}; duplicate jobs {len(uris) - len(set(uris))}; "
          f"retries absorbed {statuses.get(200, 0)}; same-version deliveries collapsed into "
          f"{len(same_jobs)} job ({same_jobs[0].duplicates if same_jobs else '-'} duplicates); "
          f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    assert load_jobs == list(range(1, N_BURST + 1))  # nothing lost
    assert len(uris) == len(set(uris)) == N_BURST + 1  # nothing duplicated
    assert statuses == {202: N_BURST + N_SAME_VERSION, 200: N_RETRIES}
    assert len(same_jobs) == 1 and same_jobs[0].duplicates == N_SAME_VERSION - 1
    assert wall < 120  # bounded; generous for a loaded 2-core machine


def test_restarted_receiver_keeps_jobs_and_delivery_ids(tmp_path):
    """Jobs and delivery ids live in the queue file: a replay after a restart still creates nothing."""
    port, queue = free_port(), tmp_path / "queue.db"
    env = child_env(tmp_path, GOVERNANCE_WEBHOOK_SECRET=SECRET)
    cmd = governance_cmd("serve", "--port", str(port), "--queue", f"sqlite:///{queue}", "--no-worker",
                         "--tracking-uri", "http://127.0.0.1:9")
    body = created("restart-model", 7)
    headers = signed_headers(body)
    for run in range(2):
        proc = start(cmd, env, tmp_path / f"serve{run}.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/health", 60, proc)
            status, doc = post(port, body, headers)
            assert (status, doc["status"]) == ((202, "queued") if run == 0 else (200, "duplicate"))
        finally:
            stop(proc)
        assert proc.returncode in (0, -15)  # uvicorn shuts down cleanly, then re-raises SIGTERM
    (job,) = JobQueue(queue).jobs()
    assert job.payload["model_uri"] == "models:/restart-model/7" and job.state == "queued"
