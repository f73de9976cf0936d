"""Where each gated alias points, as governance last saw it, and every move it saw: two tables in the queue file.

MLflow's alias event names the version an alias now points at, never the one before. To move an alias *back*,
the gate must have seen where it was: this ledger remembers each gated alias's position and records every change
as a *move* (from, to, who saw it, what the gate did about it). Writes happen inside the queue's transactions, so a
move and the job that checks it are recorded together or not at all.

* The first look at a store (``governance serve`` starting, the first ``watch`` pass) records positions as a
  baseline: nothing is gated for what was already there.
* After that, any change is a move. An alias governance never saw on a model is a new alias: it pointed at no
  version before, so reverting it means removing it.
* The gate's own revert updates the position *before* it moves the alias, so the webhook MLflow fires for the
  revert finds nothing new.

Move states: ``pending`` (a gate job will decide) → ``kept`` | ``reverting`` → ``reverted`` | ``removed`` |
``left_alone`` (the alias had moved on: not touched); ``unset`` (the alias was removed: nothing to check);
``gate`` (the gate's own revert, recorded for the audit trail).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from governance.service.queue import JobQueue

PENDING, KEPT, REVERTING, REVERTED, REMOVED, LEFT_ALONE, UNSET, GATE = (
    "pending", "kept", "reverting", "reverted", "removed", "left_alone", "unset", "gate")
FINAL = (KEPT, REVERTED, REMOVED, LEFT_ALONE)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gate_positions (
        scope TEXT NOT NULL, name TEXT NOT NULL, alias TEXT NOT NULL, version TEXT,
        source TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (scope, name, alias))""",
    """CREATE TABLE IF NOT EXISTS gate_moves (
        id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, name TEXT NOT NULL, alias TEXT NOT NULL,
        from_version TEXT, to_version TEXT, source TEXT NOT NULL, observed_at REAL NOT NULL, state TEXT NOT NULL,
        target TEXT, verdict TEXT, detail TEXT, job_id INTEGER, notified INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS gate_moves_alias ON gate_moves (scope, name, alias, id)",
    "CREATE TABLE IF NOT EXISTS gate_syncs (scope TEXT PRIMARY KEY, at REAL NOT NULL)",
)


@dataclass
class Move:
    """One change of a gated alias, and what the gate did about it."""

    id: int
    scope: str
    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    source: str
    observed_at: float
    state: str
    target: str | None
    verdict: str | None
    detail: str | None
    job_id: int | None
    notified: int
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateLedger:
    """The gate's two tables in the queue file (created on first use)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        with queue.transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    # ----------------------------------------------------------------------------------- observing
    def synced(self, scope: str) -> bool:
        return self.queue.connection().execute("SELECT 1 FROM gate_syncs WHERE scope=?", (scope,)).fetchone() \
            is not None

    @staticmethod
    def mark_synced(db: sqlite3.Connection, scope: str, now: float) -> None:
        db.execute("INSERT INTO gate_syncs (scope, at) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE SET at=excluded.at",
                   (scope, now))

    @staticmethod
    def _set_position(db: sqlite3.Connection, scope: str, name: str, alias: str, version: str | None, source: str,
                      now: float) -> None:
        db.execute("INSERT INTO gate_positions (scope, name, alias, version, source, updated_at) VALUES (?,?,?,?,?,?)"
                   " ON CONFLICT(scope, name, alias) DO UPDATE SET version=excluded.version, source=excluded.source,"
                   " updated_at=excluded.updated_at", (scope, name, alias, version, source, now))

    @staticmethod
    def _insert_move(db: sqlite3.Connection, scope: str, name: str, alias: str, before: str | None,
                     after: str | None, source: str, state: str, now: float, detail: str | None = None) -> int:
        cur = db.execute(
            "INSERT INTO gate_moves (scope, name, alias, from_version, to_version, source, observed_at, state, detail,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)", (scope, name, alias, before, after, source, now, state,
                                                         detail, now))
        return int(cur.lastrowid)

    def observe(self, db: sqlite3.Connection, scope: str, name: str, alias: str, version: str | None, *,
                source: str, baseline: bool = False, now: float | None = None) -> Move | None:
        """Record that ``alias`` points at ``version`` (None: it does not exist). Returns the new *pending* move
        when this is a move onto a version the gate must check; None for no change, a baseline or a removal."""
        now = time.time() if now is None else now
        row = db.execute("SELECT version FROM gate_positions WHERE scope=? AND name=? AND alias=?",
                         (scope, name, alias)).fetchone()
        before = row["version"] if row is not None else None
        if row is not None and before == version:
            return None
        self._set_position(db, scope, name, alias, version, source, now)
        if baseline or (row is None and version is None):
            return None
        state = PENDING if version is not None else UNSET
        move_id = self._insert_move(db, scope, name, alias, before, version, source, state, now)
        return self._get(db, move_id) if state == PENDING else None

    # ----------------------------------------------------------------------------------- reading
    def _get(self, db: sqlite3.Connection, move_id: int) -> Move:
        row = db.execute("SELECT * FROM gate_moves WHERE id=?", (move_id,)).fetchone()
        if row is None:
            from governance.contract.errors import ConfigError

            raise ConfigError(f"no gate move {move_id} in {self.queue.path}", hint="was the queue file replaced?")
        return Move(**dict(row))

    def get(self, move_id: int) -> Move:
        return self._get(self.queue.connection(), move_id)

    def position(self, scope: str, name: str, alias: str) -> str | None:
        row = self.queue.connection().execute(
            "SELECT version FROM gate_positions WHERE scope=? AND name=? AND alias=?", (scope, name, alias)).fetchone()
        return row["version"] if row is not None else None

    def moves(self, *, limit: int = 50) -> list[Move]:
        rows = self.queue.connection().execute("SELECT * FROM gate_moves ORDER BY id DESC LIMIT ?", (limit,))
        return [Move(**dict(r)) for r in rows.fetchall()]

    def revert_target(self, move: Move) -> str | None:
        """Where to move the alias back to: the version it pointed at before ``move``, skipping versions the gate
        already found failing (v1 -> v2 (fail) -> v3 (fail) goes back to v1, not to the failing v2)."""
        db = self.queue.connection()
        candidate, before_id = move.from_version, move.id
        for _ in range(1000):  # bounded: each step goes to an older move
            if candidate is None:
                return None
            row = db.execute(
                "SELECT id, from_version, verdict FROM gate_moves WHERE scope=? AND name=? AND alias=? AND id<? AND"
                " to_version=? AND state!=? ORDER BY id DESC LIMIT 1",
                (move.scope, move.name, move.alias, before_id, candidate, GATE)).fetchone()
            if row is None or row["verdict"] != "fail":
                return candidate
            candidate, before_id = row["from_version"], row["id"]
        return candidate

    # ----------------------------------------------------------------------------------- the gate's writes
    def claim_revert(self, move: Move, target: str | None) -> bool:
        """Compare-and-set on the ledger: if the alias is still where ``move`` put it (no later move seen), record
        the revert to ``target`` (position first, so MLflow's event for it is no news) and return True."""
        now = time.time()
        with self.queue.transaction() as db:
            row = db.execute("SELECT version FROM gate_positions WHERE scope=? AND name=? AND alias=?",
                             (move.scope, move.name, move.alias)).fetchone()
            if row is None or row["version"] != move.to_version:
                return False
            self._set_position(db, move.scope, move.name, move.alias, target, GATE, now)
            self._insert_move(db, move.scope, move.name, move.alias, move.to_version, target, GATE, GATE, now,
                              detail=f"revert of move {move.id}")
            db.execute("UPDATE gate_moves SET state=?, target=?, verdict='fail', updated_at=? WHERE id=?",
                       (REVERTING, target, now, move.id))
        return True

    def finish(self, move_id: int, state: str, *, verdict: str | None, detail: str) -> None:
        with self.queue.transaction() as db:
            db.execute("UPDATE gate_moves SET state=?, verdict=?, detail=?, updated_at=? WHERE id=?",
                       (state, verdict, detail, time.time(), move_id))

    def attach_job(self, move_id: int, job_id: int) -> None:
        with self.queue.transaction() as db:
            db.execute("UPDATE gate_moves SET job_id=? WHERE id=?", (job_id, move_id))

    def mark_notified(self, move_id: int) -> None:
        with self.queue.transaction() as db:
            db.execute("UPDATE gate_moves SET notified=1 WHERE id=?", (move_id,))
