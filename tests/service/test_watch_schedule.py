"""Polling (watch) and recurring reports (schedule): against a fake paging client for the cursor logic and
a real SQLite MLflow store for the filter syntax MLflow accepts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from governance.run.spec import RunSpec
from governance.service.queue import JobQueue
from governance.service.scheduler import parse_duration, schedule_pass
from governance.service.triggers import TagRule, TriggerRules
from governance.service.watcher import Watcher


@dataclass
class MV:
    name: str
    version: str
    creation_timestamp: int
    status: str = "READY"
    tags: dict = field(default_factory=dict)


class Page(list):
    token = None


class FakeClient:
    """search_model_versions newest first with paging, like the SQL store; records every call."""

    def __init__(self, versions):
        self.versions = versions
        self.calls = 0

    def search_model_versions(self, filter_string=None, max_results=100, order_by=None, page_token=None):
        self.calls += 1
        rows = sorted(self.versions, key=lambda v: -v.creation_timestamp)
        start = int(page_token or 0)
        page = Page(rows[start:start + max_results])
        page.token = str(start + max_results) if start + max_results < len(rows) else None
        return page


def now_ms(offset_s: float = 0) -> int:
    return int((time.time() + offset_s) * 1000)


def test_first_pass_starts_at_the_lookback_unless_backfill(tmp_path):
    versions = [MV("m", "1", now_ms(-86400)), MV("m", "2", now_ms(-60))]
    q = JobQueue(tmp_path / "q.db")
    recent = Watcher(q, TriggerRules(), RunSpec(), client=FakeClient(versions), lookback_s=600).poll_once()
    assert [q.get(i).payload["version"] for i in recent.queued] == ["2"]
    q2 = JobQueue(tmp_path / "q2.db")
    full = Watcher(q2, TriggerRules(), RunSpec(), client=FakeClient(versions), backfill=True).poll_once()
    assert sorted(q2.get(i).payload["version"] for i in full.queued) == ["1", "2"]


def test_cursor_persists_and_stops_paging(tmp_path):
    versions = [MV("m", str(i), now_ms(-3600 + i)) for i in range(1, 51)]
    client = FakeClient(versions)
    q = JobQueue(tmp_path / "q.db")
    w = Watcher(q, TriggerRules(), RunSpec(), client=client, backfill=True, page_size=10, lookback_s=5)
    assert len(w.poll_once().queued) == 50 and client.calls == 5
    # a restarted watcher (new object, same queue file) continues from the stored cursor
    versions.append(MV("m", "51", now_ms()))
    client.calls = 0
    again = Watcher(q, TriggerRules(), RunSpec(), client=client, backfill=True, page_size=10, lookback_s=5)
    res = again.poll_once()
    assert [q.get(i).payload["version"] for i in res.queued] == ["51"] and client.calls == 1  # one page, not five
    assert res.already_known >= 1


def test_pending_versions_hold_the_cursor_back(tmp_path):
    versions = [MV("m", "1", now_ms(-3000), status="PENDING_REGISTRATION"), MV("m", "2", now_ms(-10))]
    client = FakeClient(versions)
    q = JobQueue(tmp_path / "q.db")
    w = Watcher(q, TriggerRules(), RunSpec(), client=client, backfill=True, lookback_s=1)
    first = w.poll_once()
    assert first.pending == 1 and [q.get(i).payload["version"] for i in first.queued] == ["2"]
    versions[0].status = "READY"
    second = w.poll_once()
    assert [q.get(i).payload["version"] for i in second.queued] == ["1"]


def test_model_patterns_filter_client_side(tmp_path):
    versions = [MV("fraud-a", "1", now_ms(-5)), MV("churn", "1", now_ms(-5))]
    q = JobQueue(tmp_path / "q.db")
    res = Watcher(q, TriggerRules(models=("fraud-*",)), RunSpec(), client=FakeClient(versions)).poll_once()
    assert [q.get(i).payload["name"] for i in res.queued] == ["fraud-a"]


# ------------------------------------------------------------------------------------------ real store


def test_watch_against_a_real_store(store, tmp_path):
    q = JobQueue(tmp_path / "q.db")
    settings = RunSpec(tracking_uri=store["uri"])
    rules = TriggerRules(aliases=("champion",), tags=(TagRule.parse("governance.request"),), models=("fraud-a", "fraud-b"))
    w = Watcher(q, rules, settings, client=store["client"], backfill=True)
    res = w.poll_once()
    jobs = {(j.payload["name"], j.payload["version"], j.trigger) for j in q.jobs(limit=100)}
    assert jobs == {("fraud-a", "1", "created"), ("fraud-a", "2", "created"), ("fraud-b", "1", "created"),
                    ("fraud-b", "2", "created"), ("fraud-b", "1", "tag:governance.request=please")}
    assert res.already_known == 1  # fraud-a@champion is v2, already queued as "created"
    assert w.poll_once().queued == []  # nothing new, and no write: duplicates are not even counted
    assert all(j.duplicates == 0 for j in q.jobs(limit=100))


def test_schedule_is_idempotent_until_the_settings_change(store, tmp_path):
    q = JobQueue(tmp_path / "q.db")
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_accuracy: 0.9\n")
    settings = RunSpec(tracking_uri=store["uri"], policy=str(policy))
    first = schedule_pass(q, ("champion",), settings, client=store["client"])
    assert sorted(first.targets) == ["models:/churn/1 (@champion)", "models:/fraud-a/2 (@champion)"]
    assert len(first.queued) == 2
    second = schedule_pass(q, ("champion",), settings, client=store["client"])
    assert second.queued == [] and sorted(second.already) == sorted(first.queued)
    policy.write_text("min_accuracy: 0.95\n")  # new policy contents: report again
    third = schedule_pass(q, ("champion",), settings, client=store["client"])
    assert len(third.queued) == 2 and not set(third.queued) & set(first.queued)
    only = schedule_pass(q, ("champion",), settings, models=("churn",), client=store["client"])
    assert only.targets == ["models:/churn/1 (@champion)"]


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400),
                                           ("0.5h", 1800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "5w", "soon"])
def test_parse_duration_rejects(text):
    from governance.contract.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_duration(text)
