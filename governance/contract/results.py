"""What methods return and what a run produces. Both serialise to plain JSON (``to_dict``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from governance.contract.evidence import Control, figure_verdicts

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"


def jsonable(value: Any) -> Any:
    """Plain-JSON copy of ``value`` (numpy scalars and arrays, paths and dataclasses included)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    return value


@dataclass
class Explanation:
    """One method's result.

    ``arrays`` are written to ``explanations/<method>/arrays.npz``; ``figures`` are PNG files the method
    wrote (use :meth:`governance.contract.method.MethodContext.save_figure`); ``tables`` are lists of row dicts;
    ``details`` holds anything else JSON-serialisable the report section wants (a formula, top terms).
    ``summary`` is one or two plain sentences a validator can read without knowing the method.
    """

    method: str
    status: str = STATUS_OK
    summary: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: headline figures beside their controls (see :mod:`governance.contract.evidence`)
    controls: list[Control] = field(default_factory=list)
    reason: str | None = None  # why skipped / failed
    # filled in by the host
    method_version: str | None = None
    title: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    seconds: float | None = None
    plugin: str | None = None
    error_type: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def add_control(self, metric: str, control_value: float, *, key: str, control: str,
                    better: Literal["higher", "lower"], margin: float, margin_rule: str = "",
                    control_spread: float | None = None, draws: int = 1, label: str | None = None,
                    note: str | None = None, value: float | None = None) -> Control:
        """Record that headline figure ``metric`` (``self.metrics[metric]`` unless ``value`` is given) was
        compared with the same figure on a control; returns the :class:`Control` (its ``verdict`` says whether
        the figure is informative)."""
        if value is None:
            if metric not in self.metrics:
                raise KeyError(f"add_control: {metric!r} is not one of this explanation's metrics; "
                               "set explanation.metrics[metric] first or pass value=")
            value = self.metrics[metric]
        c = Control(metric=metric, value=value, control_value=control_value, key=key, control=control,
                    better=better, margin=margin, margin_rule=margin_rule, control_spread=control_spread,
                    draws=draws, label=label, note=note)
        self.controls.append(c)
        return c

    def verdicts(self) -> dict[str, str]:
        """``{metric: "informative" | "not informative"}`` for every figure that has a control."""
        return figure_verdicts(self.controls)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "method", "method_version", "title", "plugin", "status", "summary", "reason", "metrics",
            "tables", "details", "findings", "warnings", "config", "seed", "seconds", "error_type",
        )}
        d["figures"] = {name: Path(p).name for name, p in self.figures.items()}
        d["arrays"] = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in self.arrays.items()}
        d["controls"] = [c.to_dict() for c in self.controls]
        d["verdicts"] = self.verdicts()
        return jsonable(d)


@dataclass
class RunResult:
    """A whole governance run over one model version."""

    model: dict[str, Any]
    runtime: dict[str, Any]
    data: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    plugins: list[dict[str, Any]]
    explanations: list[Explanation] = field(default_factory=list)
    peers: list[dict[str, Any]] = field(default_factory=list)
    #: {"evaluation": {metric: value, "n": ..., "on": "<data source>"} when labels exist,
    #:  "training_run": {"metrics": {...}, "params": {...}}} from the model's source run}
    performance: dict[str, Any] = field(default_factory=dict)
    #: command line / API call that produced the run (reproducibility annex)
    invocation: str | None = None
    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str = "running"  # running | ok | partial | failed
    config_hash: str | None = None
    workdir: Path | None = None
    reused: bool = False
    #: the RunSpec the run was made with (:meth:`governance.run.spec.RunSpec.to_dict`)
    spec: dict[str, Any] | None = None
    #: run-level problems that did not stop it (a plugin hook that raised, ...)
    warnings: list[str] = field(default_factory=list)

    def explanation(self, method: str) -> Explanation | None:
        return next((e for e in self.explanations if e.method == method), None)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": "governance.run/1",
            "status": self.status,
            "model": self.model,
            "runtime": self.runtime,
            "data": self.data,
            "config": self.config,
            "config_hash": self.config_hash,
            "environment": self.environment,
            "plugins": self.plugins,
            "peers": self.peers,
            "performance": self.performance,
            "invocation": self.invocation,
            "mlflow": {
                "run_id": self.mlflow_run_id,
                "experiment_id": self.experiment_id,
                "tracking_uri": self.tracking_uri,
            },
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "reused": self.reused,
            "spec": self.spec,
            "warnings": list(self.warnings),
            "explanations": [e.to_dict() for e in self.explanations],
        }
        return jsonable(d)


def explanation_from_dict(d: dict[str, Any], folder: Path | None = None) -> Explanation:
    """Rebuild an Explanation from its summary.json (arrays reloaded from ``folder/arrays.npz`` if present)."""
    fields = {k: d.get(k) for k in ("method", "method_version", "title", "plugin", "status", "summary", "reason",
                                     "seed", "seconds", "error_type") if k in d}
    e = Explanation(**fields)
    for key in ("metrics", "tables", "details", "config"):
        setattr(e, key, d.get(key) or {})
    e.findings, e.warnings = list(d.get("findings") or []), list(d.get("warnings") or [])
    e.controls = [Control.from_dict(c) for c in d.get("controls") or []]
    if folder is not None:
        e.figures = {name: Path(folder) / fname for name, fname in (d.get("figures") or {}).items()}
        npz = Path(folder) / "arrays.npz"
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as data:
                e.arrays = {k: data[k] for k in data.files}
    return e


def run_from_dict(d: dict[str, Any], workdir: Path | None = None) -> RunResult:
    """Rebuild a RunResult from run.json; ``workdir`` holds ``explanations/<method>/``."""
    mlf = d.get("mlflow") or {}
    run = RunResult(
        model=d.get("model") or {}, runtime=d.get("runtime") or {}, data=d.get("data") or {},
        config=d.get("config") or {}, environment=d.get("environment") or {}, plugins=d.get("plugins") or [],
        peers=d.get("peers") or [], performance=d.get("performance") or {}, invocation=d.get("invocation"),
        mlflow_run_id=mlf.get("run_id"), experiment_id=mlf.get("experiment_id"), tracking_uri=mlf.get("tracking_uri"),
        started_at=d.get("started_at"), finished_at=d.get("finished_at"), status=d.get("status", "unknown"),
        config_hash=d.get("config_hash"), workdir=workdir, reused=bool(d.get("reused")), spec=d.get("spec"),
        warnings=list(d.get("warnings") or []),
    )
    for ed in d.get("explanations") or []:
        folder = Path(workdir) / "explanations" / ed["method"] if workdir else None
        run.explanations.append(explanation_from_dict(ed, folder))
    return run
