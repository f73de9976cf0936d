"""Fixtures for the report tests: one realistic finished run (trained model, real figures), a plugin host
with a method that ships its own section template and a plugin that adds report sections, and a local
HTTP server that records every request (the report must never make one)."""

from __future__ import annotations

import http.server
import sys
import threading

import pytest

SECTION_TEMPLATE = """{% import "macros.html.j2" as m %}
<p class="marker">Plugin section for {{ explanation.method }} on {{ model.display_name }}:
deletion AUC {{ explanation.metrics.deletion_auc | num }} ({{ explanation.metrics.deletion_auc | pct }})</p>
{{ m.metrics_table(explanation.metrics) }}
<figure><img src="{{ figure_src.attribution_bars }}"><figcaption>Plugin figure: attribution bars</figcaption></figure>
<ul>{% for f in explanation.findings %}<li>{{ f }}</li>{% endfor %}</ul>
"""


class RecordingServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                recorder.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def http_recorder():
    srv = RecordingServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    from tests.report.fixtures import build_run

    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def section_package(tmp_path_factory):
    """An importable package holding a method's section template (``govtest_sections:section.html.j2``)."""
    root = tmp_path_factory.mktemp("pkgs")
    pkg = root / "govtest_sections"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "section.html.j2").write_text(SECTION_TEMPLATE, encoding="utf-8")
    (pkg / "broken.html.j2").write_text("{{ explanation.metrics.deletion_auc | no_such_filter }}", encoding="utf-8")
    sys.path.insert(0, str(root))
    yield "govtest_sections"
    sys.path.remove(str(root))
    sys.modules.pop("govtest_sections", None)


def make_host(section_ref: str | None, *, sections_hook: bool = True, failing_hook: bool = False):
    """A plugin host without entry points: a 'neflag' method with a section template, and a plugin that
    contributes report sections (and, optionally, one whose hook raises)."""
    from governance import Explanation, Method, hookimpl
    from governance.host.plugins import PluginHost

    class NeflagForTest(Method):
        name = "neflag"
        version = "0.1.0"
        title = "NeFLAG negative-flux attributions"
        description = "Attributions by aggregating the negative flux of the gradient field (test double)."
        reference = "Li et al., IJCAI 2023"
        report_template = section_ref

        def explain(self, ctx, **kwargs):  # pragma: no cover - the report tests never run methods
            return Explanation(method=self.name)

    class MethodsPlugin:
        @hookimpl
        def register_methods(self, register):
            register(NeflagForTest)

    class SectionsPlugin:
        @hookimpl
        def report_sections(self, report):
            n = len(report["explanations"])
            return [
                {"id": "fairness", "title": "Fairness screening",
                 "template": "govtest_sections:section.html.j2",
                 "context": {"explanation": report["explanations"][0], "figure_src": {}, "model": report["model"]},
                 "crosswalk": {"EU AI Act Annex IV": "2(g) discriminatory impact"}},
                {"id": "note", "title": "Deployment note", "html": f"<p class='supp-marker'>{n} explanations seen</p>"},
            ]

    class FailingPlugin:
        @hookimpl
        def report_sections(self, report):
            raise RuntimeError("sections plugin exploded")

    host = PluginHost(autoload=False)
    host.register_plugin(MethodsPlugin(), name="neflag-test")
    if sections_hook:
        host.register_plugin(SectionsPlugin(), name="sections-test")
    if failing_hook:
        host.register_plugin(FailingPlugin(), name="failing-sections")
    return host


POLICY = {
    "name": "Champion gate", "version": "3",
    "checks": [
        {"metric": "interpreter.fidelity", "op": ">=", "value": 0.9, "description": "interpreter agrees with the model"},
        {"metric": "neflag.deletion_auc", "op": "<=", "ref": "neflag.random_deletion_auc",
         "description": "attribution order removes evidence faster than a random order"},
        {"metric": "bort.audit_deviation", "op": "<=", "value": 0.05},
        {"metric": "performance.accuracy", "op": ">=", "value": 0.8},
    ],
}

CARD = {
    "owner": "Clinical AI team",
    "prepared_by": "A. Validator",
    "reviewer": "C. Challenger (model risk)",
    "approvers": [{"name": "Dr. B. Chief", "role": "Head of pathology"}],
    "intended_use": "Second-reading prioritisation of biopsy reports.",
    "extra": {"deployment_region": "EU"},
}
