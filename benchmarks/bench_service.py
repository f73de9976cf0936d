"""Benchmark of the registry automation: webhook receiver latency/throughput, queue operations, job overhead.

Peers measured in the same run:
  * receiver: a bare Starlette endpoint on the same uvicorn (reads the body, answers 202, no checks, no
    queue): the floor any receiver pays; the ratio is the price of signature + de-duplication + a durable
    SQLite commit;
  * queue: synchronous=FULL (the default: an acknowledged delivery survives power loss) vs NORMAL;
  * worker: a job in a fresh process (the default isolation) vs in a worker thread.

    python benchmarks/bench_service.py            # 1000 deliveries per receiver, 2000 queue cycles
    python benchmarks/bench_service.py --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from governance.service.queue import JobQueue
from governance.service.signing import sign
from governance.service.worker import Worker, queue_idle

SECRET = "bench-secret-0123456789-abcdefgh"
PEER_APP = textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def deliver(request):
        await request.body()
        return JSONResponse({"status": "queued"}, status_code=202)

    async def health(request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/webhook", deliver, methods=["POST"]), Route("/health", health)])
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def deliveries(n: int) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for i in range(n):
        body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "x",
                           "data": {"name": "bench", "version": str(i + 1), "source": "models:/m-1", "run_id": None,
                                    "tags": {}, "description": None}}).encode()
        did, ts = str(uuid.uuid4()), str(int(time.time()))
        out.append((body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did,
                           "X-MLflow-Timestamp": ts, "X-MLflow-Signature": sign(SECRET, did, ts, body)}))
    return out


def blast(port: int, items: list, connections: int) -> dict[str, float]:
    local = threading.local()
    lat: list[float] = []
    lock = threading.Lock()
    codes: dict[int, int] = {}

    def send(item):
        body, headers = item
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.perf_counter()
        local.c.request("POST", "/webhook", body=body, headers=headers)
        r = local.c.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        with lock:
            lat.append(dt)
            codes[r.status] = codes.get(r.status, 0) + 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, items))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": len(items), "wall": wall, "rate": len(items) / wall, "p50": statistics.median(lat) * 1e3,
            "p99": lat[int(0.99 * (len(lat) - 1))] * 1e3, "ok": codes.get(202, 0)}


def bench_receivers(tmp: Path, n: int, connections: int) -> list[tuple[str, dict[str, float]]]:
    env = {**os.environ, "GOVERNANCE_WEBHOOK_SECRET": SECRET, "GOVERNANCE_HOME": str(tmp / "home"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    (tmp / "peer_app.py").write_text(PEER_APP)
    rows = []
    for label, cmd in [
        ("bare Starlette endpoint (peer)", [sys.executable, "-m", "uvicorn", "peer_app:app", "--port", "{port}",
                                            "--log-level", "warning", "--no-access-log"]),
        ("governance serve (FULL sync)", [sys.executable, "-m", "governance", "serve", "--no-worker", "--port",
                                          "{port}", "--queue", f"sqlite:///{tmp}/q-serve.db", "--log-level", "warning"]),
    ]:
        port = free_port()
        proc = start([c.replace("{port}", str(port)) for c in cmd], env, tmp)
        try:
            wait(f"http://127.0.0.1:{port}/health")
            blast(port, deliveries(min(50, n)), connections)  # warm-up
            rows.append((label, blast(port, deliveries(n), connections)))
        finally:
            stop(proc)
    return rows


def bench_queue(tmp: Path, n: int) -> list[tuple[str, float]]:
    rows = []
    for sync in ("FULL", "NORMAL"):
        q = JobQueue(tmp / f"q-{sync}.db", synchronous=sync)
        t0 = time.perf_counter()
        for i in range(n):
            q.enqueue(kind="report", key=f"k{i}", payload={"i": i}, source="bench", trigger="created")
        for _ in range(n):
            q.succeed(q.claim("bench", 60), {})
        rows.append((f"enqueue+claim+succeed, synchronous={sync}", n / (time.perf_counter() - t0)))
    return rows


def noop(job):  # the benchmark's handler (importable by spawned job processes)
    return {}


def bench_worker(tmp: Path, n: int) -> list[tuple[str, float]]:
    sys.path.insert(0, str(Path(__file__).parent))
    rows = []
    for isolation in ("thread", "process"):
        q = JobQueue(tmp / f"w-{isolation}.db")
        for i in range(n):
            q.enqueue(kind="report", key=f"k{i}", payload={}, source="bench", trigger="created")
        w = Worker(q, "bench_service:noop", isolation=isolation, poll_interval=0.01)
        t0 = time.perf_counter()
        w.run(until=queue_idle(q))
        rows.append((f"{isolation} isolation", (time.perf_counter() - t0) / n * 1e3))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts (< 60 s)")
    args = ap.parse_args()
    n_http, n_queue, n_jobs, conns = (300, 500, 4, 16) if args.quick else (1000, 2000, 10, 16)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="bench-service-") as d:
        tmp = Path(d)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"\nwebhook receivers, {n_http} signed deliveries over {conns} keep-alive loopback connections")
        print(f"{'receiver':<34}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'202s':>7}")
        rows = bench_receivers(tmp, n_http, conns)
        for label, r in rows:
            print(f"{label:<34}{r['rate']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['ok']:>7}")
        peer, ours = rows[0][1], rows[1][1]
        print(f"ratio governance/peer: throughput x{ours['rate'] / peer['rate']:.2f}, "
              f"p50 latency x{ours['p50'] / peer['p50']:.2f}")
        print(f"\nqueue cycles ({n_queue} jobs, one thread)")
        q_rows = bench_queue(tmp, n_queue)
        for label, rate in q_rows:
            print(f"  {label:<48}{rate:>8.0f} jobs/s")
        print(f"  ratio FULL/NORMAL: x{q_rows[0][1] / q_rows[1][1]:.2f}")
        print(f"\nworker overhead per no-op job ({n_jobs} jobs)")
        w_rows = bench_worker(tmp, n_jobs)
        for label, ms in w_rows:
            print(f"  {label:<48}{ms:>8.1f} ms/job")
        print(f"  ratio process/thread: x{w_rows[1][1] / w_rows[0][1]:.1f}")


if __name__ == "__main__":
    main()
