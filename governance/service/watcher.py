"""Polling the registry: for stores without webhooks (file stores, managed MLflow, direct ``sqlite:///``
clients that fire none) and as the safety net behind webhooks (MLflow drops an event after 4 failed
deliveries and keeps no redelivery log).

Each pass:

* **new versions** (``created``): ``search_model_versions`` newest first, down to a cursor (the newest
  creation time seen, minus ``lookback_s`` for clock skew and versions still being registered). The
  cursor lives in the queue file, so a restarted watcher picks up what it missed while it was down; the
  first pass starts ``lookback_s`` back, or at the beginning with ``backfill``;
* **aliases**: ``search_registered_models`` and each model's alias map (``search_model_versions`` may not
  return aliases);
* **tags**: ``search_model_versions`` filtered on the tag.

Every trigger goes through the queue's idempotency key, so versions already queued or reported (also by
the webhook receiver) are skipped without a write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from governance.contract.errors import TrackingError
from governance.run.spec import RunSpec
from governance.service.jobs import job_spec
from governance.service.queue import JobQueue
from governance.service.triggers import TagRule, Trigger, TriggerRules

log = logging.getLogger("governance.service.watcher")

READY = "READY"
PENDING = "PENDING_REGISTRATION"


@dataclass
class PollResult:
    versions_seen: int = 0
    queued: list[int] = field(default_factory=list)
    already_known: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.versions_seen} version(s) examined, {len(self.queued)} queued, {self.already_known} already"
                f" queued or reported, {self.pending} still registering")


def _quote(value: str) -> str | None:
    """A filter-string literal, or None when the value cannot be quoted safely (filter client-side)."""
    return None if "'" in value or "\\" in value else f"'{value}'"


def _exact_names(patterns: tuple[str, ...]) -> list[str] | None:
    if not patterns or any(ch in p for p in patterns for ch in "*?["):
        return None
    quoted = [_quote(p) for p in patterns]
    return None if any(q is None for q in quoted) else list(patterns)


class Watcher:
    """Polls one tracking server for the triggers in ``rules`` and queues report jobs."""

    def __init__(
        self,
        queue: JobQueue,
        rules: TriggerRules,
        settings: RunSpec,
        *,
        client: Any = None,
        lookback_s: float = 600.0,
        backfill: bool = False,
        page_size: int = 200,
        max_pages: int = 100,
        max_attempts: int = 5,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        if client is None:
            from governance.host.tracking import client as tracking_client, resolve_tracking_uri

            client = tracking_client(resolve_tracking_uri(settings.tracking_uri))
        self.client = client
        self.queue = queue
        self.rules = rules
        self.settings = settings
        self.lookback_ms = int(lookback_s * 1000)
        self.backfill = backfill
        self.page_size = page_size
        self.max_pages = max_pages
        self.max_attempts = max_attempts
        self.on_enqueued = on_enqueued
        ident = json.dumps([settings.tracking_uri, sorted(rules.models)], sort_keys=True)
        self.cursor_name = "watch:" + hashlib.sha256(ident.encode()).hexdigest()[:16]

    # ----------------------------------------------------------------------------------- helpers
    def _pages(self, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        token = None
        for _ in range(self.max_pages):  # bounded: a huge registry is walked over several passes
            page = fetch(token)
            yield from page
            token = getattr(page, "token", None)
            if not token:
                return
        log.warning("stopped after %d pages of %d; the rest is seen on the next pass", self.max_pages, self.page_size)

    def _offer(self, trigger: Trigger, result: PollResult, fingerprint: str) -> None:
        spec = job_spec(trigger, self.settings, source="watch", max_attempts=self.max_attempts, fingerprint=fingerprint)
        enq = self.queue.enqueue(**spec, quiet=True)
        if enq.outcome == "duplicate":
            result.already_known += 1
            return
        result.queued.append(enq.job.id)
        log.info("queued job %s: %s %s (%s)", enq.job.id, trigger.model_uri, trigger.label, enq.outcome)
        if self.on_enqueued is not None:
            self.on_enqueued()

    def _name_filter(self) -> str | None:
        names = _exact_names(self.rules.models)
        if names is None:
            return None
        return "name IN (" + ", ".join(_quote(n) for n in names) + ")"  # type: ignore[misc]

    # ----------------------------------------------------------------------------------- passes
    def _new_versions(self, result: PollResult, fingerprint: str) -> None:
        stored = self.queue.get_cursor(self.cursor_name)
        now_ms = int(time.time() * 1000)
        if stored is not None:
            cursor = int(stored)
        else:
            cursor = 0 if self.backfill else now_ms - self.lookback_ms
        floor = cursor - self.lookback_ms
        newest, oldest_pending = cursor, None
        name_filter = self._name_filter()

        def fetch(token: str | None) -> Any:
            return self.client.search_model_versions(
                filter_string=name_filter, max_results=self.page_size,
                order_by=["creation_timestamp DESC"], page_token=token,
            )

        for mv in self._pages(fetch):
            created = int(mv.creation_timestamp or 0)
            if created < floor:
                break  # newest first: everything after this is older
            if not self.rules.model_selected(mv.name):
                continue
            result.versions_seen += 1
            newest = max(newest, created)
            status = str(mv.status or READY)
            if status == PENDING:
                result.pending += 1
                oldest_pending = created if oldest_pending is None else min(oldest_pending, created)
                continue
            if status != READY:
                continue  # FAILED_REGISTRATION: nothing to report on
            self._offer(Trigger(mv.name, str(mv.version), "created"), result, fingerprint)
        if oldest_pending is not None:  # come back for versions still being registered
            newest = min(newest, oldest_pending)
        self.queue.set_cursor(self.cursor_name, str(newest))

    def _aliases(self, result: PollResult, fingerprint: str) -> None:
        # search_registered_models has no IN: narrow the search only for a single exact name
        single = self._name_filter() is not None and len(self.rules.models) == 1
        rm_filter = f"name = {_quote(self.rules.models[0])}" if single else None

        def fetch(token: str | None) -> Any:
            return self.client.search_registered_models(filter_string=rm_filter, max_results=100, page_token=token)

        for rm in self._pages(fetch):
            if not self.rules.model_selected(rm.name):
                continue
            for alias, version in (rm.aliases or {}).items():
                if alias in self.rules.aliases:
                    result.versions_seen += 1
                    self._offer(Trigger(rm.name, str(version), "alias", alias), result, fingerprint)

    def _tags(self, rule: TagRule, result: PollResult, fingerprint: str) -> None:
        key = rule.key.replace("`", "")
        literal = _quote(rule.value) if rule.value is not None else "'%'"
        if literal is None:
            result.errors.append(f"tag value {rule.value!r} cannot be searched for; skipped")
            return
        op = "=" if rule.value is not None else "LIKE"
        tag_filter = f"tags.`{key}` {op} {literal}"
        name_filter = self._name_filter()
        flt = f"{name_filter} AND {tag_filter}" if name_filter else tag_filter

        def fetch(token: str | None) -> Any:
            return self.client.search_model_versions(filter_string=flt, max_results=self.page_size, page_token=token)

        for mv in self._pages(fetch):
            if not self.rules.model_selected(mv.name) or str(mv.status or READY) != READY:
                continue
            value = (mv.tags or {}).get(rule.key)
            if value is None or not rule.matches(rule.key, value):
                continue
            result.versions_seen += 1
            self._offer(Trigger(mv.name, str(mv.version), "tag", f"{rule.key}={value}"), result, fingerprint)

    def poll_once(self) -> PollResult:
        """One pass over every enabled trigger. Registry errors become TrackingError (the caller retries)."""
        result = PollResult()
        fingerprint = self.settings.fingerprint()
        try:
            if self.rules.created:
                self._new_versions(result, fingerprint)
            if self.rules.aliases:
                self._aliases(result, fingerprint)
            for rule in self.rules.tags:
                self._tags(rule, result, fingerprint)
        except Exception as exc:
            from governance.service.worker import is_transient

            if is_transient(exc):
                raise TrackingError(f"polling {self.settings.tracking_uri or 'the tracking store'} failed: {exc}",
                                    hint="check that the MLflow server is up; the next pass retries") from exc
            raise
        return result

    def run(self, *, interval_s: float, stop: threading.Event, max_passes: int | None = None) -> None:
        """Poll every ``interval_s`` until ``stop`` is set; an unreachable server is logged, not fatal."""
        passes = 0
        while not stop.is_set() and (max_passes is None or passes < max_passes):
            passes += 1
            try:
                log.info("watch pass %d: %s", passes, self.poll_once().summary())
            except TrackingError as exc:
                log.warning("watch pass %d failed: %s", passes, exc)
            stop.wait(interval_s)
