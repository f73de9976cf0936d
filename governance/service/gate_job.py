"""The gate job: report on the version a gated alias was moved to and, unless the verdict passes, move it back.

Steps (``gate_job``): the report first (explained, or the identical finished run reused; its first page states the
decision), then the action, then the tags on both versions, then the notification. The action is idempotent and
leaves alone an alias that has moved on:

1. the ledger must still hold the alias where this move put it (no later move seen), and the registry must
   still point it there (read right before acting);
2. the ledger records the revert first (compare-and-set on the position), then MLflow moves the alias back or
   removes it; a retried job that finds the move already ``reverting`` or finished does not act twice.

MLflow has no compare-and-set on aliases: a move made by someone else in the few milliseconds between the last
read and the revert is overwritten; its webhook then arrives as a new move and is checked in turn.
"""

from __future__ import annotations

import logging
from typing import Any

from governance.report.gate import SERVICE, GateRequest, describe_version, gate_notification, gate_tags, restored_tag
from governance.service.gate_ledger import (FINAL, KEPT, LEFT_ALONE, REMOVED, REVERTED, REVERTING, GateLedger,
                                             Move)
from governance.service.queue import Job, JobQueue

log = logging.getLogger("governance.service.gate")


def _left_alone(ledger: GateLedger, move: Move, live: str | None) -> tuple[str, str, str | None]:
    detail = (f"@{move.alias} had moved on to {describe_version(live)} before the gate acted; "
              "left alone (that move is checked on its own)")
    ledger.finish(move.id, LEFT_ALONE, verdict="fail", detail=detail)
    return "left_alone", detail, None


def _reverted(ledger: GateLedger, move: Move, target: str | None) -> tuple[str, str, str | None]:
    action = "reverted" if target is not None else "removed"
    detail = (f"@{move.alias} moved back from version {move.to_version} to version {target}" if target is not None
              else f"@{move.alias} removed from version {move.to_version} (it pointed at no version before)")
    ledger.finish(move.id, REVERTED if target is not None else REMOVED, verdict="fail", detail=detail)
    return action, detail, target


def _recorded(move: Move) -> tuple[str, str, str | None]:
    """What the gate already did about a finished move (a retried job does not act twice)."""
    action = {KEPT: "kept", REVERTED: "reverted", REMOVED: "removed", LEFT_ALONE: "left_alone"}[move.state]
    return action, move.detail or "", move.target if move.state == REVERTED else None


def revert(client: Any, ledger: GateLedger, move: Move) -> tuple[str, str, str | None]:
    """Move the alias back (or remove it) unless it moved on. Returns ``(action, detail, restored version)``.
    Safe to call again for the same move: a finished move is not acted on twice."""
    from governance.host.aliases import alias_target, move_alias

    move = ledger.get(move.id)
    if move.state in FINAL:
        return _recorded(move)
    live = alias_target(client, move.name, move.alias)
    if move.state == REVERTING:  # an earlier attempt recorded the revert and stopped before finishing it
        if live == move.target:
            return _reverted(ledger, move, move.target)
        if live != move.to_version:
            return _left_alone(ledger, move, live)
    else:
        if ledger.position(move.scope, move.name, move.alias) != move.to_version or live != move.to_version:
            return _left_alone(ledger, move, live)
        target = ledger.revert_target(move)
        if not ledger.claim_revert(move, target):
            return _left_alone(ledger, move, ledger.position(move.scope, move.name, move.alias))
        move = ledger.get(move.id)
    move_alias(client, move.name, move.alias, move.target)
    return _reverted(ledger, move, move.target)


def decide_and_act(client: Any, ledger: GateLedger, move: Move, decision: dict[str, Any],
                   report_id: str | None) -> dict[str, Any]:
    """Keep or revert, then tag: the blocked (or passed) version, and the version the alias went back to. A move
    the gate already finished (a retried job) keeps what was done: no action, no new tags."""
    from governance.host.aliases import tag_version
    from governance.report.document import utc_now

    already = ledger.get(move.id)
    if already.state in FINAL:
        action, detail, restored = _recorded(already)
    elif decision["passes"]:
        action, detail, restored = "kept", f"@{move.alias} stays at version {move.to_version}", None
        ledger.finish(move.id, KEPT, verdict=decision["verdict"], detail=detail)
    else:
        action, detail, restored = revert(client, ledger, move)
    if already.state not in FINAL:
        at = utc_now()
        tag_version(client, move.name, str(move.to_version), gate_tags(decision, action, detail, at=at,
                                                                       report_id=report_id))
        if restored is not None:
            tag_version(client, move.name, restored, restored_tag(decision, at=at))
    return {"alias": move.alias, "move_id": move.id, "from_version": move.from_version,
            "to_version": move.to_version, "action": action, "detail": detail, "restored": restored,
            "verdict": decision["verdict"], "failed_checks": [c["id"] for c in decision["failed_checks"]]}


def _notify(spec: Any, ledger: GateLedger, move: Move, decision: dict[str, Any], outcome: dict[str, Any],
            result: Any = None) -> None:
    """Post ``gate.<action>`` once per move (a retried job does not notify twice once delivered)."""
    if not spec.notify or ledger.get(move.id).notified:
        return
    from governance.host.notify import post_notification

    delivery = post_notification(spec.notify, f"gate.{outcome['action']}",
                                 gate_notification(decision, outcome["action"], outcome["detail"], result))
    outcome["notification"] = delivery.to_dict()
    if delivery.ok:
        ledger.mark_notified(move.id)


def _report_or_fail_closed(job: Job, spec: Any, invocation: str, client: Any, ledger: GateLedger, move: Move,
                           request: GateRequest, run_tags: dict[str, str] | None = None) -> Any:
    """The report; when it cannot be made and will not be retried, the gate fails closed (moves the alias back,
    tags the version with the error) and the job fails with what the gate did."""
    from governance.api import report_model
    from governance.report.gate import decide
    from governance.service.worker import describe_error, is_transient

    try:
        return report_model(job.payload["model_uri"], spec=spec, gate=request, invocation=invocation,
                            subfolder=False, run_tags=run_tags)
    except Exception as exc:
        if is_transient(exc) and job.attempts < job.max_attempts:
            raise  # another attempt will come
        error = describe_error(exc).splitlines()[0]
        decision = decide(request, None, None, error=error)
        outcome = decide_and_act(client, ledger, move, decision, None)
        _notify(spec, ledger, move, decision, outcome)
        raise GateReportFailed(f"{error}; gate {outcome['action']}: {outcome['detail']}") from exc


class GateReportFailed(Exception):
    """The gated version's report could not be made; the message says what the gate did instead."""


def gate_job(job: Job, spec: Any, invocation: str, *, run_tags: dict[str, str] | None = None
             ) -> tuple[Any, dict[str, Any]]:
    """Run a ``kind == "gate"`` job with its prepared RunSpec (``handlers.report_job`` checks the version and picks
    the report folder first). Returns the ReportResult and the gate's outcome for the job's result."""
    from governance.host.tracking import client as tracking_client, resolve_tracking_uri

    info = job.payload["gate"]
    ledger = GateLedger(JobQueue(info["queue"]))
    move = ledger.get(int(info["move_id"]))
    ledger.attach_job(move.id, job.id)
    request = GateRequest(alias=move.alias, name=move.name, version=str(move.to_version), mode=SERVICE,
                          alias_before=move.from_version)
    client = tracking_client(resolve_tracking_uri(spec.tracking_uri))
    result = _report_or_fail_closed(job, spec, invocation, client, ledger, move, request, run_tags)
    outcome = decide_and_act(client, ledger, move, result.gate, result.report_id)
    log.info("gate job %s: %s (%s)", job.id, outcome["action"], outcome["detail"])
    _notify(spec, ledger, move, result.gate, outcome, result)
    return result, outcome
