"""The service's promotion gate (``governance serve --gate champion``, ``governance watch --gate champion``).

When someone moves a gated alias, governance checks the version it now points at: a *gate job* reports on it
under the service's policy and, when the verdict is not ``pass``, moves the alias back to where it pointed before
(or removes it when it pointed nowhere), tags both versions and records the action (``gate_job.py``). Without
``--gate`` nothing changes: the service only reports.

This module turns what the service sees into gate jobs: the receiver's alias webhooks (``model_version_alias
.created`` / ``.deleted``) and registry polls (serve's start-up look, every ``watch`` pass). Each observation goes
through the ledger (``gate_ledger.py``), which knows where the alias pointed before; a move and the job that
checks it are written in one queue transaction. A gate job's key names the move, so every move is checked once,
even when a version was reported before (its report would otherwise collapse onto the earlier job).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from governance.contract.errors import ConfigError
from governance.run.spec import RunSpec
from governance.service.gate_ledger import GateLedger, Move
from governance.service.jobs import job_spec
from governance.service.queue import JobQueue
from governance.service.triggers import EVENT_ALIAS, Trigger

log = logging.getLogger("governance.service.gate")

GATE_KIND = "gate"
EVENT_ALIAS_DELETED = "model_version_alias.deleted"
GATE_EVENTS = (EVENT_ALIAS, EVENT_ALIAS_DELETED)


@dataclass(frozen=True)
class GateRules:
    """Which aliases are gated (``--gate``), on which models (``--model`` patterns; empty: every model)."""

    aliases: tuple[str, ...]
    models: tuple[str, ...] = ()

    def gated(self, name: str, alias: str) -> bool:
        return alias in self.aliases and (not self.models or any(fnmatch.fnmatchcase(name, p) for p in self.models))

    def describe(self) -> str:
        return "gate " + ", ".join(f"@{a}" for a in self.aliases)


def check_gate_settings(settings: RunSpec) -> None:
    """A gate needs a verdict: a rendered report under a policy."""
    if settings.policy is None:
        raise ConfigError("--gate needs a policy: the gate moves an alias back when the policy's verdict is not pass",
                          hint="pass --policy FILE (or GOVERNANCE_POLICY, or report.policy in the settings file)")
    if not settings.render_report:
        raise ConfigError("--gate needs reports (the verdict is the report's)", hint="drop --explain-only")


@dataclass
class SyncResult:
    seen: int = 0
    queued: list[int] = field(default_factory=list)
    baseline: bool = False


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


class Gate:
    """Turns alias observations into gate jobs; one per service process (receiver, watcher)."""

    def __init__(self, queue: JobQueue, rules: GateRules, settings: RunSpec, *, max_attempts: int = 5,
                 on_enqueued: Callable[[], None] | None = None) -> None:
        check_gate_settings(settings)
        self.queue = queue
        self.rules = rules
        self.settings = settings
        self.max_attempts = max_attempts
        self.on_enqueued = on_enqueued
        self.ledger = GateLedger(queue)
        self.scope = settings.tracking_uri or ""
        self._fingerprint = settings.fingerprint()

    # ----------------------------------------------------------------------------------- jobs
    def job_for(self, move: Move, source: str) -> dict[str, Any]:
        """The queue entry of the gate job that checks ``move`` (its key names the move: one check per move)."""
        trigger = Trigger(move.name, str(move.to_version), GATE_KIND, move.alias)
        spec = job_spec(trigger, self.settings, source=source, max_attempts=self.max_attempts,
                        fingerprint=self._fingerprint,
                        extra={"gate": {"alias": move.alias, "move_id": move.id, "from_version": move.from_version,
                                        "scope": self.scope, "queue": str(self.queue.path.resolve())}})
        raw = "\x1f".join((GATE_KIND, self.scope, move.name, move.alias, str(move.to_version), str(move.id),
                           self._fingerprint))
        return {**spec, "kind": GATE_KIND, "key": hashlib.sha256(raw.encode()).hexdigest()}

    # ----------------------------------------------------------------------------------- webhooks
    def claims(self, event: str, data: dict[str, Any]) -> bool:
        """True for an alias event (set or removed) on a gated alias: the gate handles it, not the trigger rules."""
        if event not in GATE_EVENTS:
            return False
        name, alias = _text(data, "name"), _text(data, "alias")
        return name is not None and alias is not None and self.rules.gated(name, alias)

    def delivery_job(self, event: str, data: dict[str, Any]) -> Callable[[sqlite3.Connection, float], Any]:
        """For :meth:`JobQueue.accept_delivery`: records the observation and returns the gate job, if it is a move
        onto a version (run inside the delivery's transaction, so a retried delivery records nothing twice)."""
        version = str(data["version"]) if event == EVENT_ALIAS else None

        def in_transaction(db: sqlite3.Connection, now: float) -> dict[str, Any] | None:
            move = self.ledger.observe(db, self.scope, data["name"], data["alias"], version, source="webhook",
                                       now=now)
            return self.job_for(move, "webhook") if move is not None else None

        return in_transaction

    # ----------------------------------------------------------------------------------- polling
    def _positions(self, client: Any) -> list[tuple[str, str, str | None]]:
        out, token = [], None
        for _ in range(1000):  # bounded paging: 100 000 registered models
            page = client.search_registered_models(max_results=100, page_token=token)
            for rm in page:
                aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
                out += [(rm.name, a, aliases.get(a)) for a in self.rules.aliases if self.rules.gated(rm.name, a)]
            token = getattr(page, "token", None)
            if not token:
                break
        return out

    def sync(self, client: Any, *, source: str = "poll") -> SyncResult:
        """Look at every gated alias in the registry. The first look at a store is the baseline (nothing is
        gated for what was already there); later looks queue a gate job for every move the webhooks missed."""
        result = SyncResult(baseline=not self.ledger.synced(self.scope))
        positions = self._positions(client)
        now = time.time()
        with self.queue.transaction() as db:
            for name, alias, version in positions:
                result.seen += 1
                move = self.ledger.observe(db, self.scope, name, alias, version, source=source,
                                           baseline=result.baseline, now=now)
                if move is not None:
                    enq = self.queue.enqueue_in(db, now=now, **self.job_for(move, source))
                    result.queued.append(enq.job.id)
            self.ledger.mark_synced(db, self.scope, now)
        if result.baseline:
            log.info("gate: baseline of %d gated alias position(s) recorded", result.seen)
        for job_id in result.queued:
            log.info("gate: job %s queued for a move seen by %s", job_id, source)
        if result.queued and self.on_enqueued is not None:
            self.on_enqueued()
        return result
