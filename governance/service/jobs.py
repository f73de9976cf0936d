"""What a report job carries and how its idempotency key is made.

A job is "report on ``models:/<name>/<version>`` with these settings" (a :class:`~governance.run.spec.RunSpec`).
Its key is ``sha256(name, version, request, settings fingerprint)``: the same version under the same settings is
one job however many webhooks, polls and schedules ask for it, and changing the policy or config file (their
*contents* are hashed, not their paths) makes the next trigger produce a new report.
"""

from __future__ import annotations

import hashlib
from typing import Any

from governance.run.spec import RunSpec
from governance.service.triggers import Trigger

JOB_KIND = "report"


def job_key(trigger: Trigger, fingerprint: str) -> str:
    raw = "\x1f".join((JOB_KIND, trigger.name, trigger.version, trigger.request, fingerprint))
    return hashlib.sha256(raw.encode()).hexdigest()


def job_spec(
    trigger: Trigger,
    settings: RunSpec,
    *,
    source: str,
    max_attempts: int = 5,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :meth:`JobQueue.enqueue` (and ``accept_delivery(job=...)``)."""
    fingerprint = fingerprint or settings.fingerprint()
    payload = {
        "model_uri": trigger.model_uri,
        "name": trigger.name,
        "version": trigger.version,
        "trigger": trigger.label,
        "settings": settings.to_dict(),
        "fingerprint": fingerprint,
        **(extra or {}),
    }
    return {
        "kind": JOB_KIND,
        "key": job_key(trigger, fingerprint),
        "payload": payload,
        "source": source,
        "trigger": trigger.label,
        "max_attempts": max_attempts,
    }
