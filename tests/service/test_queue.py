"""The SQLite queue: idempotency, exclusive claims, leases, fencing, retries, delivery de-duplication."""

from __future__ import annotations

import threading

import pytest

from governance.contract.errors import ConfigError
from governance.service.config import queue_path
from governance.service.queue import ERROR_LOST, ERROR_PERMANENT, ERROR_TRANSIENT, JobQueue


def spec(key: str, **kw):
    return {"kind": "report", "key": key, "payload": {"model_uri": f"models:/m/{key}", "name": "m", "version": key},
            "source": "test", "trigger": "created", **kw}


@pytest.fixture
def q(tmp_path):
    return JobQueue(tmp_path / "q.db")


def test_enqueue_collapses_on_key(q):
    a = q.enqueue(**spec("1"))
    b = q.enqueue(**spec("1"))
    c = q.enqueue(**spec("2"))
    assert a.outcome == "created" and b.outcome == "duplicate" and c.outcome == "created"
    assert b.job.id == a.job.id and b.job.duplicates == 1
    assert q.counts()["queued"] == 2
    quiet = q.enqueue(**spec("1"), quiet=True)
    assert quiet.outcome == "duplicate" and q.get(a.job.id).duplicates == 1  # quiet: not counted


def test_claim_is_exclusive_under_concurrency(tmp_path):
    path = tmp_path / "q.db"
    q = JobQueue(path)
    for i in range(60):
        q.enqueue(**spec(str(i)))
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = JobQueue(path)  # separate connections, as separate processes would have
        while True:
            job = mine.claim(f"w{n}", 30)
            if job is None:
                return
            with lock:
                claimed.append(job.id)
            assert mine.succeed(job, {"by": n})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 60
    assert q.counts()["succeeded"] == 60


def test_lease_expiry_reclaims_and_fences_the_old_owner(q):
    q.enqueue(**spec("1"))
    first = q.claim("a", lease_seconds=10, now=1e10)  # far future clock: the job is due
    assert first.attempts == 1 and q.claim("b", 10, now=1e10 + 5) is None  # lease still valid
    second = q.claim("b", 10, now=1e10 + 11)  # expired: taken over
    assert second.id == first.id and second.attempts == 2 and second.lease_owner == "b"
    assert not q.renew(first, 10) and not q.succeed(first, {"by": "a"})  # the old owner is fenced off
    assert q.succeed(second, {"by": "b"})
    job = q.get(first.id)
    assert job.state == "succeeded" and job.result == {"by": "b"}
    assert [e["event"] for e in q.events(job.id)] == ["queued", "claimed", "reclaimed", "succeeded"]


def test_job_whose_workers_keep_dying_fails(q):
    q.enqueue(**spec("1"), max_attempts=2)
    t = 1e10
    q.claim("a", 1, now=t)
    q.claim("b", 1, now=t + 2)
    assert q.claim("c", 1, now=t + 4) is None  # second lease expired with attempts exhausted
    job = q.jobs()[0]
    assert job.state == "failed" and job.error_kind == ERROR_LOST and "stopped without finishing" in job.error


def test_retry_backoff_and_final_states(q):
    q.enqueue(**spec("1"))
    job = q.claim("a", 30)
    assert q.retry_later(job, "boom", delay=3600)
    assert q.claim("a", 30) is None  # not due yet
    again = q.claim("a", 30, now=job.updated_at + 3601)
    assert again.attempts == 2 and q.get(job.id).error == "boom"
    assert q.fail(again, "bad model", ERROR_PERMANENT)
    assert q.get(job.id).state == "failed"
    # a new trigger collapses onto a permanent failure...
    assert q.enqueue(**spec("1")).outcome == "duplicate"
    # ...but an operator can retry it
    assert q.requeue(job.id).state == "queued" and q.get(job.id).attempts == 0


def test_transient_failure_is_requeued_by_a_new_trigger(q):
    q.enqueue(**spec("1"))
    job = q.claim("a", 30)
    q.fail(job, "server down", ERROR_TRANSIENT)
    again = q.enqueue(**spec("1"), quiet=True)
    assert again.outcome == "requeued" and again.job.state == "queued" and again.job.attempts == 0


def test_release_does_not_count_the_attempt(q):
    q.enqueue(**spec("1"))
    job = q.claim("a", 30)
    assert q.release(job, "shutdown")
    again = q.claim("b", 30)
    assert again.attempts == 1


def test_cancel_and_operator_errors(q):
    job = q.enqueue(**spec("1")).job
    assert q.cancel(job.id).state == "cancelled"
    assert q.claim("a", 30) is None
    with pytest.raises(ConfigError, match="only queued"):
        q.cancel(job.id)
    with pytest.raises(ConfigError, match="no job 99"):
        q.requeue(99)


def test_delivery_ids_deduplicate_atomically(q):
    first = q.accept_delivery("d-1", event="model_version.created", outcome="queued", job=spec("1"))
    again = q.accept_delivery("d-1", event="model_version.created", outcome="queued", job=spec("1"))
    other = q.accept_delivery("d-2", event="model_version.created", outcome="queued", job=spec("1"))
    ignored = q.accept_delivery("d-3", event="registered_model.created", outcome="ignored")
    assert first.enqueued.outcome == "created" and again.duplicate and again.enqueued is None
    assert other.enqueued.outcome == "duplicate" and other.enqueued.job.id == first.enqueued.job.id
    assert not ignored.duplicate and ignored.enqueued is None
    assert q.delivery_count() == 3 and q.counts()["queued"] == 1
    assert q.purge_deliveries(older_than=1e12) == 3


def test_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "q.db"
    JobQueue(path).enqueue(**spec("1"))
    q2 = JobQueue(path)
    assert q2.counts()["queued"] == 1 and q2.jobs()[0].payload["model_uri"] == "models:/m/1"
    q2.set_cursor("w", "42")
    assert JobQueue(path).get_cursor("w") == "42"


def test_queue_path(tmp_path, monkeypatch):
    monkeypatch.delenv("GOVERNANCE_QUEUE", raising=False)
    monkeypatch.setenv("GOVERNANCE_HOME", str(tmp_path / "gh"))
    assert queue_path(None) == tmp_path / "gh" / "queue.db"
    monkeypatch.delenv("GOVERNANCE_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert queue_path(None) == tmp_path / "xdg" / "governance" / "queue.db"
    assert queue_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"
    assert queue_path("rel/q.db").as_posix() == "rel/q.db"
    for bad in ("postgres://h/db", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            queue_path(bad)
