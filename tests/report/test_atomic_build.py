"""A report bundle is built beside its target and renamed into place (issue 20, deliverable 4): a build that
fails half-way leaves neither half a report nor a staging folder, and the previous report stays whole."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_failed_build_leaves_no_half_report_and_keeps_the_previous_one(finished_run, tmp_path, monkeypatch):
    """The bundle is built beside the target and renamed into place: a build that fails half-way (here: the
    PDF renderer raises) leaves the previous report untouched and no staging folder."""
    from tests.report.conftest import make_host
    from governance.contract.errors import ReportError
    from governance.report import build_report
    import governance.report.pdf as pdf_module

    out = tmp_path / "bundle" / "report"
    first = build_report(finished_run, out_dir=out, plugin_host=make_host(None, sections_hook=False))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pdf_module, "render_pdf", broken)
    with pytest.raises(ReportError, match="PDF rendering failed"):
        build_report(finished_run, out_dir=out, plugin_host=make_host(None, sections_hook=False))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and first.report_id.encode() in after[Path("report.json")]
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]  # no .report.building-* left
