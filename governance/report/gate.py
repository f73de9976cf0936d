"""The promotion gate's rule: a version may hold a gated alias only when its report's policy verdict is ``pass``.

One rule, written once, read by three places that must say the same thing: the report (its first page and the
``gate`` block of report.json), ``governance promote`` and the service gate. ``not_evaluated`` (no check could be
evaluated) is not a pass: a gate that lets through what it could not check is no gate.

Two modes:

* ``promote``: someone asks to move the alias; the decision is ``promote`` or ``block`` (the alias stays);
* ``service``: someone already moved the alias; the decision is ``keep`` or ``revert`` (moved back, or removed
  when it pointed at no version before).

What was finally *done* (the action) can differ from the decision only in the service, when the alias has moved
on meanwhile (``left_alone``); the action is recorded in the version tags (:func:`gate_tags`) and the job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

PROMOTE, SERVICE = "promote", "service"
#: action -> was the version let through
ACTIONS = {"promoted": True, "unchanged": True, "kept": True,
           "blocked": False, "reverted": False, "removed": False, "left_alone": False}
TAG = "governance.gate"


@dataclass(frozen=True)
class GateRequest:
    """What the gate is asked about: version ``version`` of ``name`` holding ``alias``; ``alias_before`` is where
    the alias points now (promote) or pointed before it was moved to this version (service); None: nowhere."""

    alias: str
    name: str
    version: str
    mode: str = PROMOTE
    alias_before: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in (PROMOTE, SERVICE):
            raise ValueError(f"unknown gate mode {self.mode!r}")
        object.__setattr__(self, "version", str(self.version))
        if self.alias_before is not None:
            object.__setattr__(self, "alias_before", str(self.alias_before))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed_checks(policy: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The required checks that failed: what blocks a version (advisory checks only warn)."""
    return [{"id": c.get("id"), "metric": c.get("metric"), "reason": c.get("reason")}
            for c in (policy or {}).get("checks") or [] if c.get("status") == "fail"]


def _why(verdict: str | None, policy: Mapping[str, Any] | None) -> str:
    name = (policy or {}).get("name") or "the policy"
    if policy is None:
        return "no policy was applied, so nothing shows that the version may hold the alias"
    if verdict == "pass":
        return f"policy '{name}' passed"
    if verdict == "fail":
        ids = [c["id"] for c in failed_checks(policy)]
        return f"policy '{name}' failed {len(ids)} required check(s): {'; '.join(ids)}"
    return f"policy '{name}' could not evaluate any check (verdict {verdict}); the gate needs a pass"


def describe_version(version: str | None) -> str:
    """"version 3", or "no version" for an alias that pointed nowhere."""
    return f"version {version}" if version is not None else "no version"


def alias_at(alias: str, version: str | None) -> str:
    """"@champion at version 3", or "@champion unset"."""
    return f"@{alias} at version {version}" if version is not None else f"@{alias} unset"


def decide(request: GateRequest, verdict: str | None, policy: Mapping[str, Any] | None, *,
           error: str | None = None) -> dict[str, Any]:
    """The decision record (plain JSON) for a verdict: what the report's first page and the tags say. ``error``:
    no report could be made (the gate fails closed: a version without a passing report does not pass)."""
    passes = verdict == "pass" and error is None
    at, v = f"@{request.alias}", request.version
    why = f"no report could be made ({error})" if error is not None else _why(verdict, policy)
    if request.mode == PROMOTE:
        decision = "promote" if passes else "block"
        if passes and request.alias_before == v:
            statement = f"{at} already points at version {v}; {why}, so it stays."
        elif passes:
            statement = f"{why}: {at} moves from {describe_version(request.alias_before)} to version {v}."
        elif request.alias_before == v:
            statement = (f"{why}: version {v} is blocked. {at} already pointed at it before this check; promote "
                         "never removes an alias, so it was left there.")
        else:
            statement = f"{why}: version {v} is blocked, leaving {alias_at(request.alias, request.alias_before)}."
    else:
        decision = "keep" if passes else "revert"
        moved = f"{at} was moved to version {v} (from {describe_version(request.alias_before)})"
        if passes:
            statement = f"{moved}; {why}, so it stays."
        else:
            back = (f"moves {at} back to version {request.alias_before}" if request.alias_before is not None
                    else f"removes {at} (it pointed at no version before)")
            statement = (f"{moved}; {why}, so governance {back}, unless the alias has moved on meanwhile "
                         "(the version tags record what was done).")
    return {**request.to_dict(), "verdict": verdict, "passes": passes, "decision": decision,
            "policy": (policy or {}).get("name"), "failed_checks": failed_checks(policy), "reason": why,
            "statement": statement}


def gate_tags(decision: Mapping[str, Any], action: str, detail: str, *, at: str,
              report_id: str | None) -> dict[str, str]:
    """The tags on the version the gate decided about: ``governance.gate`` is ``passed`` or ``blocked``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown gate action {action!r}")
    checks = "; ".join(str(c["id"]) for c in decision.get("failed_checks") or []) or "none"
    return {TAG: "passed" if ACTIONS[action] else "blocked", f"{TAG}.alias": str(decision["alias"]),
            f"{TAG}.action": action, f"{TAG}.detail": detail, f"{TAG}.reason": str(decision["reason"]),
            f"{TAG}.failed_checks": checks, f"{TAG}.report_id": report_id or "none", f"{TAG}.at": at}


def restored_tag(decision: Mapping[str, Any], *, at: str) -> dict[str, str]:
    """The tag on the version the service moved the alias back to."""
    return {f"{TAG}.restored": f"{at}: @{decision['alias']} moved back here from version {decision['version']} "
                               f"because {decision['reason']}"}


@dataclass
class Promotion:
    """What ``governance promote`` did (or, with ``dry_run``, would do)."""

    request: GateRequest
    policy: str | None
    dry_run: bool = False
    decision: dict[str, Any] | None = None
    action: str | None = None  # promoted | unchanged | blocked (None for a dry run)
    detail: str | None = None
    report: Any = None  # ReportResult
    alias_after: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    #: a dry run's look at the version's last report (any settings)
    last_verdict: str | None = None
    last_report_id: str | None = None

    @property
    def blocked(self) -> bool:
        return self.action == "blocked"

    @property
    def exit_code(self) -> int:
        """EXIT_POLICY_FAILED (11) when the version was blocked, else 0."""
        from governance.contract.errors import EXIT_POLICY_FAILED

        return EXIT_POLICY_FAILED if self.blocked else 0

    def plan(self) -> str:
        """The dry run's sentence: what promote would do, and what it would not touch."""
        r = self.request
        return (f"would report on models:/{r.name}/{r.version} under policy '{self.policy}' (explaining it, or reusing "
                f"an identical finished run), write and log the report, then: if the verdict is pass, move "
                f"@{r.alias} from {describe_version(r.alias_before)} to version {r.version}; otherwise leave "
                f"{alias_at(r.alias, r.alias_before)}, tag version {r.version} {TAG}=blocked and exit 11")

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "policy": self.policy, "dry_run": self.dry_run,
                "plan": self.plan() if self.dry_run else None, "decision": self.decision, "action": self.action,
                "detail": self.detail, "alias_after": self.alias_after, "tags": self.tags,
                "report": self.report.to_dict() if self.report is not None else None,
                "notifications": self.notifications, "last_verdict": self.last_verdict,
                "last_report_id": self.last_report_id, "exit_code": self.exit_code}


# ------------------------------------------------------------------------------------------ notifications
def _model(result: Any) -> dict[str, Any]:
    return {k: (result.model or {}).get(k) for k in ("name", "version", "uri")}


def report_notification(result: Any) -> dict[str, Any]:
    """The ``report.verdict`` notification's document for a ReportResult."""
    return {"model": _model(result), "verdict": result.verdict, "status": result.status,
            "run_status": result.run_status, "report_id": result.report_id,
            "report_sha256": result.pdf_sha256 or result.json_sha256, "mlflow_run_id": result.run_id,
            "policy": (result.policy or {}).get("name"), "failed_checks": failed_checks(result.policy),
            "gate": {k: result.gate.get(k) for k in ("alias", "mode", "decision")} if result.gate else None}


def gate_notification(decision: Mapping[str, Any], action: str, detail: str, result: Any = None) -> dict[str, Any]:
    """The ``gate.<action>`` notification's document."""
    return {"model": {"name": decision["name"], "version": decision["version"]}, "alias": decision["alias"],
            "mode": decision["mode"], "action": action, "passed": ACTIONS[action], "detail": detail,
            "alias_before": decision.get("alias_before"), "verdict": decision.get("verdict"),
            "policy": decision.get("policy"), "reason": decision.get("reason"),
            "failed_checks": decision.get("failed_checks") or [],
            "report_id": getattr(result, "report_id", None), "mlflow_run_id": getattr(result, "run_id", None)}
