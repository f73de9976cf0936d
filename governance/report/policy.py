"""Policy: thresholds on a run's metrics, giving pass/fail per check, an overall verdict and an exit code.

A policy file (YAML or TOML) lists checks on metrics named ``<method>.<metric>`` (each explanation's
``metrics``), ``performance.<metric>`` (evaluation-set metrics), ``training.<metric>`` (the model's training
run) and ``runtime.<key>`` (numeric runtime facts such as ``runtime.parity_max_abs_diff``)::

    name: champion gate
    on_missing: not_evaluated          # or "fail": a metric the run does not have fails the check
    required_methods: [interpreter]    # these methods must have run successfully
    checks:
      - metric: interpreter.fidelity
        op: ">="
        value: 0.9
      - metric: neflag.deletion_auc    # relative check: compare with another metric
        op: "<="
        ref: neflag.ig_deletion_auc
      - metric: bort.audit_deviation
        op: "<="
        value: 0.05
        severity: advisory             # a failed advisory check warns, it does not fail the verdict
      - metric: neflag.deletion_auc    # the figure must beat every control it was compared with
        informative: true              # (see governance.contract.evidence); no control: not evaluated

Verdict: ``fail`` when any required check fails; otherwise ``pass`` when at least one check passed;
``not_evaluated`` when nothing could be evaluated.
"""

from __future__ import annotations

import hashlib
import math
import operator
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from governance.contract.errors import ConfigError

PASS, FAIL, WARN, NOT_EVALUATED = "pass", "fail", "warn", "not_evaluated"
VERDICT_PASS, VERDICT_FAIL, VERDICT_NOT_EVALUATED = PASS, FAIL, NOT_EVALUATED

_OPS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">=": (">=", operator.ge), "ge": (">=", operator.ge), "≥": (">=", operator.ge),
    ">": (">", operator.gt), "gt": (">", operator.gt),
    "<=": ("<=", operator.le), "le": ("<=", operator.le), "≤": ("<=", operator.le),
    "<": ("<", operator.lt), "lt": ("<", operator.lt),
    "==": ("==", operator.eq), "eq": ("==", operator.eq),
    "!=": ("!=", operator.ne), "ne": ("!=", operator.ne),
}


class PolicyCheck(BaseModel):
    """One check. Exactly one of ``value`` (absolute threshold, with ``op``), ``ref`` (another metric times
    ``factor``, with ``op``) or ``informative: true`` (the figure beat every control it was compared with)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    op: str | None = None
    informative: bool | None = None
    value: float | None = None
    ref: str | None = None
    factor: float = 1.0
    tolerance: float = Field(0.0, ge=0.0, description="for == and !=: |a - b| <= tolerance counts as equal")
    severity: Literal["required", "advisory"] = "required"
    on_missing: Literal["not_evaluated", "fail"] | None = None
    id: str | None = None
    description: str | None = None

    @field_validator("op")
    @classmethod
    def _known_op(cls, v: str | None) -> str | None:
        if v is None:
            return None
        key = v.strip().lower()
        if key not in _OPS:
            raise ValueError(f"unknown operator {v!r}; use one of >=, >, <=, <, ==, !=")
        return _OPS[key][0]

    @model_validator(mode="after")
    def _one_target(self) -> "PolicyCheck":
        if self.informative is not None:
            if self.value is not None or self.ref is not None or self.op is not None:
                raise ValueError("an 'informative' check takes no op, value or ref")
            if self.informative is not True:
                raise ValueError("'informative' can only be true (drop the check to not require it)")
        elif (self.value is None) == (self.ref is None):
            raise ValueError("give exactly one of 'value' (a number), 'ref' (another metric's name) or "
                             "'informative: true'")
        elif self.op is None:
            raise ValueError("a threshold check needs 'op' (>=, >, <=, <, ==, !=)")
        if "." not in self.metric or (self.ref is not None and "." not in self.ref):
            raise ValueError("metric names look like '<method>.<metric>' (or performance./training./runtime.)")
        return self

    @property
    def check_id(self) -> str:
        if self.id:
            return self.id
        if self.informative:
            return f"{self.metric} informative"
        target = f"{self.value:g}" if self.value is not None else (
            self.ref if self.factor == 1 else f"{self.factor:g} × {self.ref}")
        return f"{self.metric} {self.op} {target}"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "policy"
    version: str | None = None
    description: str | None = None
    on_missing: Literal["not_evaluated", "fail"] = "not_evaluated"
    required_methods: list[str] = Field(default_factory=list)
    checks: list[PolicyCheck] = Field(default_factory=list)
    #: where it was read from and the sha256 of that file (reproducibility annex)
    source: str | None = None
    sha256: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> Any:
        return None if v is None else str(v)


# --------------------------------------------------------------------------------------------- loading
def load_policy(src: Path | str | Mapping[str, Any] | Policy) -> Policy:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) policy file, or validate a dict."""
    if isinstance(src, Policy):
        return src
    source, digest = "inline", None
    if isinstance(src, Mapping):
        raw: Any = dict(src)
    else:
        path = Path(src)
        if not path.is_file():
            raise ConfigError(f"policy file {path} does not exist", hint="pass --policy with a YAML or TOML file")
        data = path.read_bytes()
        source, digest = str(path), hashlib.sha256(data).hexdigest()
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                raw = tomllib.loads(data.decode("utf-8"))
            else:
                import yaml

                raw = yaml.safe_load(data.decode("utf-8")) or {}
        except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError
            raise ConfigError(f"policy file {path} cannot be parsed: {exc}",
                              hint="policies are YAML (.yaml/.yml) or TOML (.toml)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"policy {source} must be a mapping with a 'checks' list, got {type(raw).__name__}")
    try:
        policy = Policy(**{k: v for k, v in raw.items() if k not in ("source", "sha256")})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(policy)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid policy {source}: {problems}",
                          hint="see examples/policy.yaml for the format") from None
    policy.source, policy.sha256 = source, digest
    return policy


# --------------------------------------------------------------------------------------------- metrics
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def run_document(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a run document (``RunResult.to_dict()``) or a report.json (which holds it under ``run``)."""
    if str(doc.get("schema", "")).startswith("governance.report") and "run" in doc:
        return doc["run"]
    return doc


def collect_metrics(doc: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """All numeric metrics of a run by policy name, plus why some names have no value (method skipped...)."""
    run = run_document(doc)
    metrics: dict[str, float] = {}
    why_missing: dict[str, str] = {}
    for exp in run.get("explanations") or []:
        method = exp.get("method")
        if exp.get("status") != "ok":
            why_missing[method] = f"method '{method}' {exp.get('status')}: {exp.get('reason') or 'no reason given'}"
        for name, value in (exp.get("metrics") or {}).items():
            v = _number(value)
            if v is None:
                why_missing[f"{method}.{name}"] = "the metric is not a finite number"
            else:
                metrics[f"{method}.{name}"] = v
    perf = run.get("performance") or {}
    for name, value in (perf.get("evaluation") or {}).items():
        if (v := _number(value)) is not None:
            metrics[f"performance.{name}"] = v
    training = perf.get("training_run") or (run.get("model") or {}).get("training_run") or {}
    for name, value in (training.get("metrics") or {}).items():
        if (v := _number(value)) is not None:
            metrics[f"training.{name}"] = v
    for name, value in (run.get("runtime") or {}).items():
        if (v := _number(value)) is not None:
            metrics[f"runtime.{name}"] = v
    return metrics, why_missing


# --------------------------------------------------------------------------------------------- evaluation
def _missing_reason(name: str, why: dict[str, str]) -> str:
    if name in why:
        return why[name]
    method = name.split(".", 1)[0]
    if method in why:
        return why[method]
    return f"the run has no metric '{name}'"


def evaluate_policy(policy: Policy | Path | str | Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate every check against a run document; returns the policy result (plain JSON)."""
    policy = load_policy(policy)
    metrics, why = collect_metrics(doc)
    run = run_document(doc)
    results: list[dict[str, Any]] = []

    statuses = {e.get("method"): e for e in run.get("explanations") or []}
    for method in policy.required_methods:
        exp = statuses.get(method)
        ok = exp is not None and exp.get("status") == "ok"
        results.append({
            "id": f"method {method} ran", "metric": f"{method}.status", "op": "==", "expected": "ok",
            "actual": exp.get("status") if exp else "not run", "severity": "required",
            "status": PASS if ok else FAIL,
            "reason": None if ok else (f"{exp.get('status')}: {exp.get('reason') or 'no reason given'}"
                                       if exp else f"method '{method}' was not part of the run"),
            "description": "required method", "value": None, "ref": None, "factor": 1.0,
        })

    verdicts = figure_verdicts(run)
    for check in policy.checks:
        results.append(_evaluate_check(check, metrics, verdicts, why, check.on_missing or policy.on_missing))

    counts = {s: sum(r["status"] == s for r in results) for s in (PASS, FAIL, WARN, NOT_EVALUATED)}
    if counts[FAIL]:
        verdict = VERDICT_FAIL
    elif counts[PASS] or counts[WARN]:
        verdict = VERDICT_PASS
    else:
        verdict = VERDICT_NOT_EVALUATED
    return {
        "name": policy.name, "version": policy.version, "description": policy.description,
        "source": policy.source, "sha256": policy.sha256, "on_missing": policy.on_missing,
        "verdict": verdict, "counts": counts, "checks": results,
    }


def figure_verdicts(run: Mapping[str, Any]) -> dict[str, str]:
    """``{"<method>.<metric>": "informative" | "not informative"}`` for every figure that has a control."""
    return {f"{e.get('method')}.{metric}": verdict for e in run.get("explanations") or []
            if e.get("status") == "ok" for metric, verdict in (e.get("verdicts") or {}).items()}


def _evaluate_check(check: PolicyCheck, metrics: Mapping[str, float], verdicts: Mapping[str, str],
                    why: dict[str, str], on_missing: str) -> dict[str, Any]:
    actual: Any = metrics.get(check.metric)
    expected: Any = check.value
    reason = None
    if check.informative:
        expected, actual = "informative", verdicts.get(check.metric)
        if actual is None:
            reason = (f"no control was computed for {check.metric}" if check.metric in metrics
                      else _missing_reason(check.metric, why))
    else:
        if check.ref is not None:
            ref = metrics.get(check.ref)
            expected = None if ref is None else ref * check.factor
            if ref is None:
                reason = f"reference {_missing_reason(check.ref, why)}"
        if actual is None:
            reason = _missing_reason(check.metric, why)
    if actual is None or expected is None:
        status = FAIL if on_missing == "fail" else NOT_EVALUATED
    else:
        ok = _holds(check, actual, expected)
        status = PASS if ok else FAIL
        if not ok:
            reason = (f"{check.metric} did not beat its control(s) (section 7)" if check.informative
                      else f"{actual:.6g} {check.op} {expected:.6g} does not hold")
    if status == FAIL and check.severity == "advisory":
        status = WARN
    return {
        "id": check.check_id, "metric": check.metric, "op": check.op or "is", "expected": expected,
        "value": check.value, "ref": check.ref, "factor": check.factor, "actual": actual,
        "severity": check.severity, "status": status, "reason": reason, "description": check.description,
    }


def _holds(check: PolicyCheck, actual: Any, expected: Any) -> bool:
    if check.informative:
        return actual == "informative"
    if check.op in ("==", "!="):
        equal = abs(actual - expected) <= check.tolerance
        return equal if check.op == "==" else not equal
    return bool(_OPS[check.op][1](actual, expected))


def exit_code(verdict: str | None) -> int:
    """The CLI exit code for a verdict: EXIT_POLICY_FAILED (11) on fail, else 0."""
    from governance.contract.errors import EXIT_POLICY_FAILED

    return EXIT_POLICY_FAILED if verdict == VERDICT_FAIL else 0
