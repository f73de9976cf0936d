"""Recurring reports on every version that carries an alias (``governance schedule``).

A pass finds, for each registered model, the version behind each alias and queues a report job for it.
The job key is the same as for a ``created`` or ``alias`` trigger (version + settings fingerprint), so a
pass queues nothing for a version already reported under the current settings: run it from cron as often
as you like. Change the policy or config file and the next pass reports again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from governance.contract.errors import ConfigError
from governance.run.spec import RunSpec
from governance.service.jobs import job_spec
from governance.service.queue import JobQueue
from governance.service.triggers import Trigger, TriggerRules

log = logging.getLogger("governance.service.scheduler")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"`` -> seconds."""
    m = _DURATION.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"invalid duration {text!r}", hint="use a positive number with s, m, h or d, e.g. 6h")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class ScheduleResult:
    queued: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    @property
    def job_ids(self) -> list[int]:
        return self.queued + self.already


def schedule_pass(
    queue: JobQueue,
    aliases: tuple[str, ...],
    settings: RunSpec,
    *,
    models: tuple[str, ...] = (),
    client: Any = None,
    max_attempts: int = 5,
) -> ScheduleResult:
    """Queue a report for every version behind one of ``aliases`` (on models matching ``models``)."""
    if not aliases:
        raise ConfigError("schedule needs at least one --alias", hint="e.g. governance schedule --alias champion")
    rules = TriggerRules(created=False, aliases=tuple(aliases), models=tuple(models))
    if client is None:
        from governance.host.tracking import client as tracking_client, resolve_tracking_uri

        client = tracking_client(resolve_tracking_uri(settings.tracking_uri))
    fingerprint = settings.fingerprint()
    result = ScheduleResult()
    token = None
    for _ in range(1000):  # bounded paging: 100 000 registered models
        page = client.search_registered_models(max_results=100, page_token=token)
        for rm in page:
            if not rules.model_selected(rm.name):
                continue
            for alias, version in sorted((rm.aliases or {}).items()):
                if alias not in aliases:
                    continue
                trigger = Trigger(rm.name, str(version), "schedule", alias)
                enq = queue.enqueue(**job_spec(trigger, settings, source="schedule", max_attempts=max_attempts,
                                               fingerprint=fingerprint))
                result.targets.append(f"{trigger.model_uri} (@{alias})")
                if enq.outcome == "duplicate":
                    result.already.append(enq.job.id)
                    log.info("%s@%s -> v%s: already %s (job %s)", rm.name, alias, version, enq.job.state, enq.job.id)
                else:
                    result.queued.append(enq.job.id)
                    log.info("%s@%s -> v%s: job %s %s", rm.name, alias, version, enq.job.id, enq.outcome)
        token = getattr(page, "token", None)
        if not token:
            break
    return result
