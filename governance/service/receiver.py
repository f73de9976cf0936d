"""The webhook receiver: verify, de-duplicate, queue, answer. No report work happens here.

Answers (MLflow retries 429 and 5xx, so only a failure to queue answers 5xx):

=====  ==================================================================================
202    queued (or collapsed onto an existing job for the same version and settings)
200    duplicate delivery id (an MLflow retry or a replay), ignored event, or MLflow's test payload
400    malformed: missing/invalid headers or a body that is not an MLflow envelope
401    unsigned, bad signature, or a timestamp outside the window (stale or replayed later)
413    body larger than the limit
503    the queue could not be written (MLflow will retry)
=====  ==================================================================================

Rejected requests create no job and record no delivery id (an attacker cannot burn real ids).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Mapping

from governance.service import signing
from governance.run.spec import RunSpec
from governance.service.jobs import job_spec
from governance.service.queue import JobQueue
from governance.service.triggers import MalformedDelivery, TriggerRules, is_test_delivery, parse_envelope

log = logging.getLogger("governance.service.receiver")

DEFAULT_WINDOW_S = 300.0
DEFAULT_MAX_BODY = 1 << 20


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


class Receiver:
    """Turns one HTTP delivery (headers + raw body) into an answer and, maybe, a job. Framework-free."""

    def __init__(
        self,
        queue: JobQueue,
        *,
        secrets: list[str],
        rules: TriggerRules,
        settings: RunSpec,
        window_seconds: float = DEFAULT_WINDOW_S,
        max_body: int = DEFAULT_MAX_BODY,
        max_attempts: int = 5,
        clock: Callable[[], float] = time.time,
        on_enqueued: Callable[[], None] | None = None,
        gate: Any = None,
    ) -> None:
        if not secrets:
            raise ValueError("the receiver needs at least one secret")
        self.queue = queue
        self.secrets = list(secrets)
        self.rules = rules
        self.settings = settings
        self.window_seconds = window_seconds
        self.max_body = max_body
        self.max_attempts = max_attempts
        self.clock = clock
        self.on_enqueued = on_enqueued
        self.gate = gate  # governance.service.gate.Gate: gated alias events go to it (serve --gate)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_purge = 0.0

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        now = self.clock()
        delivery_id = _header(headers, signing.DELIVERY_ID_HEADER)
        verdict = signing.verify(
            secrets=self.secrets,
            delivery_id=delivery_id,
            timestamp=_header(headers, signing.TIMESTAMP_HEADER),
            signature=_header(headers, signing.SIGNATURE_HEADER),
            body=body,
            now=now,
            window_seconds=self.window_seconds,
        )
        if not verdict.ok:
            self._count(f"rejected:{verdict.reason}")
            log.warning("delivery %r rejected (%s): %s", (delivery_id or "")[:64], verdict.reason, verdict.detail)
            return verdict.status, {"status": "rejected", "reason": verdict.reason, "detail": verdict.detail}
        assert delivery_id is not None  # verify() checked it
        try:
            event, data = parse_envelope(body)
        except MalformedDelivery as exc:
            # signed by MLflow but unusable: 400 (not retried) and no delivery record
            self._count("rejected:malformed")
            log.warning("delivery %s rejected (malformed): %s", delivery_id, exc)
            return 400, {"status": "rejected", "reason": "malformed", "detail": str(exc)}

        job = None
        if is_test_delivery(event, data):
            outcome, why = "test", "MLflow test payload: signature verified, nothing queued"
        elif self.gate is not None and self.gate.claims(event, data):
            outcome, why = "gate", f"gated alias @{data['alias']} of {data['name']}: no move to check"
            job = self.gate.delivery_job(event, data)
        else:
            trigger, why = self.rules.match(event, data)
            outcome = "ignored"
            if trigger is not None:
                outcome = "queued"
                job = job_spec(trigger, self.settings, source="webhook", max_attempts=self.max_attempts,
                               extra={"delivery_id": delivery_id})
        try:
            result = self.queue.accept_delivery(delivery_id, event=event, outcome=outcome, job=job, now=now)
        except Exception as exc:  # the queue is the one thing we cannot do without: let MLflow retry
            self._count("error:queue")
            log.exception("delivery %s: queue write failed", delivery_id)
            return 503, {"status": "error", "detail": f"queue unavailable: {type(exc).__name__}"}
        self._maybe_purge(now)
        if result.duplicate:
            self._count("duplicate")
            log.info("delivery %s is a duplicate: ignored", delivery_id)
            return 200, {"status": "duplicate", "delivery_id": delivery_id}
        if result.enqueued is None:
            self._count(outcome)
            log.info("delivery %s (%s): %s", delivery_id, event, why)
            return 200, {"status": outcome, "detail": why}
        enq = result.enqueued
        self._count(f"job:{enq.outcome}")
        log.info("delivery %s (%s): job %s %s (%s)", delivery_id, event, enq.job.id, enq.outcome, enq.job.trigger)
        if enq.created and self.on_enqueued is not None:
            self.on_enqueued()
        return 202, {"status": "queued", "job_id": enq.job.id, "job": enq.outcome, "trigger": enq.job.trigger}

    def _maybe_purge(self, now: float) -> None:
        """Delivery ids only need to be remembered while their timestamp could still pass the window."""
        if now - self._last_purge < 60:
            return
        self._last_purge = now
        try:
            self.queue.purge_deliveries(now - 2 * self.window_seconds - 60)
        except Exception:
            log.exception("purging old delivery ids failed")

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries ``Authorization: Bearer <webhook secret>`` (constant-time compare)."""
        import hmac

        value = _header(headers, "Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return any(hmac.compare_digest(token.strip().encode(), s.encode()) for s in self.secrets)

    def health(self, *, authorised: bool = True) -> dict[str, Any]:
        """``{"status": "ok"}``; the trigger rules, delivery counts and job counts only for a caller who
        presents the webhook secret (they tell an attacker which events and models are watched)."""
        if not authorised:
            return {"status": "ok"}
        with self._lock:
            stats = dict(self.stats)
        return {"status": "ok", "rules": self.rules.describe(), "deliveries": stats, "jobs": self.queue.counts()}


def create_app(receiver: Receiver, *, path: str = "/webhook", worker: Any = None) -> Any:
    """A Starlette ASGI app: ``POST <path>`` for MLflow, ``GET /health`` for probes (``{"status": "ok"}``;
    details with ``Authorization: Bearer <GOVERNANCE_WEBHOOK_SECRET>``).

    With a :class:`~governance.service.worker.Worker`, the app runs it in a background thread for its
    lifetime: started with the server, woken by each new job, and stopped (running jobs finish or are
    given back to the queue) before the server exits.
    """
    import contextlib

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def deliver(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > receiver.max_body):
            receiver._count("rejected:too-large")
            return JSONResponse({"status": "rejected", "reason": "too-large"}, status_code=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > receiver.max_body:
                receiver._count("rejected:too-large")
                return JSONResponse({"status": "rejected", "reason": "too-large"}, status_code=413)
            chunks.append(chunk)
        status, doc = await run_in_threadpool(receiver.handle, request.headers, b"".join(chunks))
        return JSONResponse(doc, status_code=status)

    async def health(request: Request) -> JSONResponse:
        authorised = receiver.authorised(request.headers)
        doc = await run_in_threadpool(lambda: receiver.health(authorised=authorised))
        if worker is not None and authorised:
            doc["worker"] = {"owner": worker.owner, "active_jobs": worker.active_jobs,
                             "alive": bool(thread and thread.is_alive())}
        return JSONResponse(doc)

    thread: threading.Thread | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        nonlocal thread
        if worker is not None:
            receiver.on_enqueued = worker.wake
            thread = threading.Thread(target=worker.run, name="governance-worker", daemon=True)
            thread.start()
            log.info("in-process worker %s started (concurrency %d)", worker.owner, worker.concurrency)
        try:
            yield
        finally:
            if worker is not None and thread is not None:
                worker.stop()
                await run_in_threadpool(thread.join)
                log.info("in-process worker stopped: %s", worker.stats)

    return Starlette(routes=[Route(path, deliver, methods=["POST"]), Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)
