"""The compliance report: ``report.json`` (source of truth) -> HTML (Jinja2) -> PDF/A-3b (WeasyPrint).

Public API (cheap to import: the heavy modules load on first use)::

    from governance.report import build_report, verify_report
    result = build_report(run, out_dir="report/", policy="policy.yaml", model_card="card.yaml")
    check = verify_report("report/report.pdf")   # check.ok, check.checks

See :mod:`governance.report.build` for the output folder, :mod:`governance.report.manifest` for what is
hashed, :mod:`governance.report.render` for template overrides and :mod:`governance.report.sections` for
the method-section template contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from governance.report.build import ReportResult, build_report
    from governance.report.publish import publish_report
    from governance.report.verify import VerifyResult, verify_report

_LAZY = {
    "build_report": "governance.report.build",
    "ReportResult": "governance.report.build",
    "verify_report": "governance.report.verify",
    "VerifyResult": "governance.report.verify",
    "publish_report": "governance.report.publish",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'governance.report' has no attribute {name!r}")
