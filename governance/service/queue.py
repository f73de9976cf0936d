"""A durable job queue in one SQLite file, shared by the webhook receiver, workers, ``watch`` and ``schedule``.

Why SQLite: it ships with Python, survives restarts, and in WAL mode lets one process write while others
read. Every state change is one short ``BEGIN IMMEDIATE`` transaction, so two workers can never claim the
same job. The file must sit on a local disk (not NFS): SQLite's locking needs it.

Life of a job::

    queued ──claim──▶ running ──▶ succeeded
      ▲                  │ ╰────▶ failed      (permanent error, attempts exhausted, or its worker kept dying)
      ╰── back-off ──────┤
      ╰── lease expired ─╯        (the worker was killed: the next claim takes the job over)

* **Leases**: a claim stamps ``lease_token`` and ``lease_expires``; the worker renews the lease while the
  job runs. A killed worker stops renewing and the job is claimed again once the lease expires. Every
  later write is fenced by the token, so a worker that lost its lease cannot overwrite the new owner.
* **Idempotency**: each job has a unique ``key``. Enqueuing an existing key collapses onto that job
  (``duplicates`` counts it) unless the job failed for a transient reason, in which case it is queued again.
* **Deliveries**: webhook delivery ids are recorded in the same transaction as the job they create, so a
  retried or replayed delivery never creates a second job.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

#: why a job failed: the handler refused it, transient errors outlasted the attempts, or workers kept dying
ERROR_PERMANENT, ERROR_TRANSIENT, ERROR_LOST = "permanent", "transient", "lost"

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_after     REAL NOT NULL,
    lease_owner   TEXT,
    lease_token   TEXT,
    lease_expires REAL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    result        TEXT,
    error         TEXT,
    error_kind    TEXT,
    source        TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    duplicates    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, run_after);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_expires);
CREATE TABLE IF NOT EXISTS job_events (
    job_id  INTEGER NOT NULL,
    at      REAL NOT NULL,
    event   TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events (job_id);
CREATE TABLE IF NOT EXISTS deliveries (
    id          TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    event       TEXT,
    outcome     TEXT NOT NULL,
    job_id      INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_age ON deliveries (received_at);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""


#: one lock per queue file and process: threads of one process (the receiver's request threads) take turns
#: here instead of in SQLite's busy handler, whose sleeps (up to 100 ms each) made a long latency tail
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


@dataclass
class Job:
    """One row of the queue. ``payload`` and ``result`` are plain JSON objects."""

    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    run_after: float
    lease_owner: str | None
    lease_token: str | None
    lease_expires: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: str | None
    error_kind: str | None
    source: str
    trigger: str
    duplicates: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["payload"] = json.loads(d["payload"])
        d["result"] = json.loads(d["result"]) if d["result"] else None
        return cls(**d)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("lease_token")
        return d


@dataclass
class Enqueued:
    """What :meth:`JobQueue.enqueue` did: created a job, collapsed onto an existing one, or re-queued it."""

    job: Job
    outcome: str  # created | duplicate | requeued

    @property
    def created(self) -> bool:
        return self.outcome != "duplicate"


@dataclass
class DeliveryOutcome:
    duplicate: bool
    enqueued: Enqueued | None = None


class JobQueue:
    """Thread-safe handle on the queue file (one SQLite connection per thread)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._lock = _write_lock(self.path)
        self._init_schema()

    # ----------------------------------------------------------------------------------- plumbing
    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_ms / 1000)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN so read-then-write steps are atomic."""
        db = self._connect()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _init_schema(self) -> None:
        db = self._connect()
        db.executescript(_SCHEMA)
        with self._tx() as tx:
            row = tx.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                tx.execute("INSERT INTO meta (k, v) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row["v"]) > SCHEMA_VERSION:
                from governance.contract.errors import ConfigError

                raise ConfigError(
                    f"the queue {self.path} was written by a newer governance (schema {row['v']})",
                    hint="upgrade governance, or point --queue at another file",
                )

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for reads by modules that keep their own tables in the queue file."""
        return self._connect()

    def transaction(self) -> Any:
        """A write transaction (context manager yielding the connection) for modules that keep their own tables
        in the queue file and must write them atomically with a job (:meth:`enqueue_in`)."""
        return self._tx()

    def enqueue_in(self, db: sqlite3.Connection, *, now: float | None = None, **job: Any) -> Enqueued:
        """:meth:`enqueue` inside a :meth:`transaction` the caller holds."""
        return self._enqueue(db, now=time.time() if now is None else now, **job)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: int, event: str, detail: str | None = None, at: float | None = None) -> None:
        db.execute(
            "INSERT INTO job_events (job_id, at, event, detail) VALUES (?, ?, ?, ?)",
            (job_id, at if at is not None else time.time(), event, detail),
        )

    @staticmethod
    def _row(db: sqlite3.Connection, job_id: int) -> Job:
        return Job.from_row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    # ----------------------------------------------------------------------------------- producers
    def _enqueue(
        self,
        db: sqlite3.Connection,
        *,
        kind: str,
        key: str,
        payload: dict[str, Any],
        source: str,
        trigger: str,
        now: float,
        max_attempts: int = 5,
        quiet: bool = False,
    ) -> Enqueued:
        row = db.execute("SELECT * FROM jobs WHERE key=?", (key,)).fetchone()
        if row is None:
            cur = db.execute(
                "INSERT INTO jobs (key, kind, payload, state, attempts, max_attempts, run_after, created_at,"
                " updated_at, source, trigger) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (key, kind, json.dumps(payload, sort_keys=True), QUEUED, max_attempts, now, now, now, source, trigger),
            )
            job_id = int(cur.lastrowid)
            self._event(db, job_id, "queued", f"{source}: {trigger}", now)
            return Enqueued(self._row(db, job_id), "created")
        job = Job.from_row(row)
        if job.state == FAILED and job.error_kind in (ERROR_TRANSIENT, ERROR_LOST):
            db.execute(
                "UPDATE jobs SET state=?, attempts=0, run_after=?, updated_at=?, finished_at=NULL,"
                " error_kind=NULL, duplicates=duplicates+1 WHERE id=?",
                (QUEUED, now, now, job.id),
            )
            self._event(db, job.id, "requeued", f"{source}: {trigger} after a {job.error_kind} failure", now)
            return Enqueued(self._row(db, job.id), "requeued")
        if not quiet:
            db.execute("UPDATE jobs SET duplicates=duplicates+1, updated_at=? WHERE id=?", (now, job.id))
            self._event(db, job.id, "duplicate", f"{source}: {trigger}", now)
            job = self._row(db, job.id)
        return Enqueued(job, "duplicate")

    def enqueue(
        self,
        *,
        kind: str,
        key: str,
        payload: dict[str, Any],
        source: str,
        trigger: str,
        max_attempts: int = 5,
        now: float | None = None,
        quiet: bool = False,
    ) -> Enqueued:
        """Add a job, or collapse onto the job that already has this idempotency ``key``.

        ``quiet`` collapses without counting or logging the duplicate (pollers re-find the same versions on
        every pass; that is not news).
        """
        now = time.time() if now is None else now
        if quiet:  # most polls find nothing new: answer from a read, without the write lock
            row = self._connect().execute("SELECT * FROM jobs WHERE key=?", (key,)).fetchone()
            if row is not None:
                existing = Job.from_row(row)
                if not (existing.state == FAILED and existing.error_kind in (ERROR_TRANSIENT, ERROR_LOST)):
                    return Enqueued(existing, "duplicate")
        with self._tx() as db:
            return self._enqueue(db, kind=kind, key=key, payload=payload, source=source, trigger=trigger,
                                 max_attempts=max_attempts, now=now, quiet=quiet)

    def accept_delivery(
        self,
        delivery_id: str,
        *,
        event: str,
        outcome: str,
        job: dict[str, Any] | Callable[[sqlite3.Connection, float], dict[str, Any] | None] | None = None,
        now: float | None = None,
    ) -> DeliveryOutcome:
        """Record a webhook delivery id and (optionally) enqueue its job, atomically.

        Returns ``duplicate=True`` without touching the queue when the id was seen before: MLflow retries
        re-send the same id, so this is what makes retries and replays harmless. ``job`` may be a function
        ``(db, now) -> job | None`` run inside the same transaction, only for a new delivery (the promotion
        gate records the alias move it saw and queues its check together with the delivery id).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO deliveries (id, received_at, event, outcome) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (delivery_id, now, event, outcome),
            )
            if cur.rowcount == 0:
                return DeliveryOutcome(duplicate=True)
            if callable(job):
                job = job(db, now)
            if job is None:
                return DeliveryOutcome(duplicate=False)
            enq = self._enqueue(db, now=now, **job)
            db.execute("UPDATE deliveries SET job_id=?, outcome=? WHERE id=?", (enq.job.id, enq.outcome, delivery_id))
            return DeliveryOutcome(duplicate=False, enqueued=enq)

    def purge_deliveries(self, older_than: float) -> int:
        """Forget delivery ids received before ``older_than`` (unix s); older replays fail the time window."""
        with self._tx() as db:
            return db.execute("DELETE FROM deliveries WHERE received_at < ?", (older_than,)).rowcount

    # ----------------------------------------------------------------------------------- workers
    def claim(self, owner: str, lease_seconds: float, *, now: float | None = None) -> Job | None:
        """Take the next runnable job (queued and due, or running with an expired lease), or None."""
        now = time.time() if now is None else now
        db = self._connect()
        probe = db.execute(
            "SELECT 1 FROM jobs WHERE (state=? AND run_after<=?) OR (state=? AND lease_expires<?) LIMIT 1",
            (QUEUED, now, RUNNING, now),
        ).fetchone()
        if probe is None:  # the common idle case takes no write lock
            return None
        with self._tx() as db:
            lost = db.execute(
                "SELECT id, attempts, lease_owner FROM jobs WHERE state=? AND lease_expires<? AND attempts>=max_attempts",
                (RUNNING, now),
            ).fetchall()
            for row in lost:
                msg = (f"its worker stopped without finishing it {row['attempts']} time(s) (killed, out of memory"
                       " or crashed); not retried again")
                db.execute(
                    "UPDATE jobs SET state=?, error=?, error_kind=?, finished_at=?, updated_at=?, lease_owner=NULL,"
                    " lease_token=NULL, lease_expires=NULL WHERE id=?",
                    (FAILED, msg, ERROR_LOST, now, now, row["id"]),
                )
                self._event(db, row["id"], "failed", f"lease of {row['lease_owner']} expired; {msg}", now)
            row = db.execute(
                "SELECT id, state, lease_owner FROM jobs WHERE (state=? AND run_after<=?) OR (state=? AND lease_expires<?)"
                " ORDER BY run_after, id LIMIT 1",
                (QUEUED, now, RUNNING, now),
            ).fetchone()
            if row is None:
                return None
            token = uuid.uuid4().hex
            db.execute(
                "UPDATE jobs SET state=?, attempts=attempts+1, lease_owner=?, lease_token=?, lease_expires=?,"
                " started_at=?, updated_at=? WHERE id=?",
                (RUNNING, owner, token, now + lease_seconds, now, now, row["id"]),
            )
            if row["state"] == RUNNING:
                self._event(db, row["id"], "reclaimed", f"lease of {row['lease_owner']} expired; taken by {owner}", now)
            else:
                self._event(db, row["id"], "claimed", owner, now)
            return self._row(db, row["id"])

    def _fenced(self, job: Job, sql: str, args: tuple[Any, ...], event: str, detail: str | None) -> bool:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(sql + " WHERE id=? AND lease_token=? AND state=?", (*args, job.id, job.lease_token, RUNNING))
            if cur.rowcount == 0:
                return False
            self._event(db, job.id, event, detail, now)
            return True

    def renew(self, job: Job, lease_seconds: float) -> bool:
        """Extend the lease; False means the job was taken over (the worker must stop working on it)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires=?, updated_at=? WHERE id=? AND lease_token=? AND state=?",
                (now + lease_seconds, now, job.id, job.lease_token, RUNNING),
            )
            return cur.rowcount == 1

    def succeed(self, job: Job, result: dict[str, Any] | None) -> bool:
        now = time.time()
        return self._fenced(
            job,
            "UPDATE jobs SET state=?, result=?, error=NULL, error_kind=NULL, finished_at=?, updated_at=?,"
            " lease_token=NULL, lease_expires=NULL",
            (SUCCEEDED, json.dumps(result or {}, sort_keys=True, default=str), now, now),
            "succeeded", None,
        )

    def retry_later(self, job: Job, error: str, delay: float) -> bool:
        now = time.time()
        return self._fenced(
            job,
            "UPDATE jobs SET state=?, run_after=?, error=?, error_kind=?, updated_at=?, lease_owner=NULL,"
            " lease_token=NULL, lease_expires=NULL",
            (QUEUED, now + delay, error, ERROR_TRANSIENT, now),
            "retry", f"in {delay:.1f} s after attempt {job.attempts}: {error.splitlines()[0] if error else ''}",
        )

    def fail(self, job: Job, error: str, kind: str = ERROR_PERMANENT) -> bool:
        now = time.time()
        return self._fenced(
            job,
            "UPDATE jobs SET state=?, error=?, error_kind=?, finished_at=?, updated_at=?, lease_token=NULL,"
            " lease_expires=NULL",
            (FAILED, error, kind, now, now),
            "failed", f"{kind}: {error.splitlines()[0] if error else ''}",
        )

    def release(self, job: Job, why: str) -> bool:
        """Give an unfinished job back (graceful shutdown): queued again, this attempt not counted."""
        now = time.time()
        return self._fenced(
            job,
            "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), run_after=?, updated_at=?, lease_owner=NULL,"
            " lease_token=NULL, lease_expires=NULL",
            (QUEUED, now, now),
            "released", why,
        )

    # ----------------------------------------------------------------------------------- operators
    def get(self, job_id: int) -> Job | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def get_by_key(self, key: str) -> Job | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE key=?", (key,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self, *, states: tuple[str, ...] | None = None, limit: int = 50, ids: list[int] | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs", []
        where = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += list(states)
        if ids is not None:
            if not ids:
                return []
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [Job.from_row(r) for r in self._connect().execute(sql, args).fetchall()]

    def events(self, job_id: int) -> list[dict[str, Any]]:
        rows = self._connect().execute(
            "SELECT at, event, detail FROM job_events WHERE job_id=? ORDER BY rowid", (job_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        out = {s: 0 for s in STATES}
        out.update({r["state"]: r["n"] for r in rows})
        return out

    def delivery_count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def requeue(self, job_id: int) -> Job:
        """Run a failed or cancelled job again (``governance jobs retry``), with a fresh attempt budget."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state=?, attempts=0, run_after=?, updated_at=?, finished_at=NULL, error_kind=NULL"
                " WHERE id=? AND state IN (?, ?)",
                (QUEUED, now, now, job_id, FAILED, CANCELLED),
            )
            if cur.rowcount == 0:
                raise _not_in_state(db, job_id, "retried", "failed or cancelled")
            self._event(db, job_id, "requeued", "by an operator", now)
            return self._row(db, job_id)

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job (a running one finishes its current attempt first)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state=?, finished_at=?, updated_at=? WHERE id=? AND state=?",
                (CANCELLED, now, now, job_id, QUEUED),
            )
            if cur.rowcount == 0:
                raise _not_in_state(db, job_id, "cancelled", "queued")
            self._event(db, job_id, "cancelled", "by an operator", now)
            return self._row(db, job_id)

    # ----------------------------------------------------------------------------------- cursors
    def get_cursor(self, name: str) -> str | None:
        row = self._connect().execute("SELECT value FROM cursors WHERE name=?", (name,)).fetchone()
        return row["value"] if row else None

    def set_cursor(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (name, value, time.time()),
            )


def _not_in_state(db: sqlite3.Connection, job_id: int, verb: str, wanted: str) -> Exception:
    from governance.contract.errors import ConfigError

    row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        return ConfigError(f"no job {job_id} in the queue", hint="list jobs with `governance jobs`")
    return ConfigError(f"job {job_id} is {row['state']}; only {wanted} jobs can be {verb}")
