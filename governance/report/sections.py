"""Rendering of report section templates (the method plugins' and the host's).

The contract a method's section template can rely on (``Method.report_template``, an HTML fragment):

* ``explanation``: the method's result as in ``report.json`` (``Explanation.to_dict()``): ``status``,
  ``summary``, ``metrics``, ``tables``, ``details``, ``findings``, ``warnings``, ``config``, ``seed``,
  ``seconds``, ``figures`` (name → file name) ...
* ``figure_src``: figure name → an ``src`` usable in ``<img src=...>`` (embedded data URI or local file).
* ``model``: the report's model identity block.
* filters ``num`` (a number to 4 significant digits, "n/a" for None/NaN), ``pct`` (a fraction as a
  percentage), ``sci`` (scientific notation).

Autoescaping is on: registry text is untrusted.
"""

from __future__ import annotations

import math
from typing import Any


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v) or math.isinf(v):
        return "n/a"
    if v == int(v) and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.{digits}g}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{100 * float(value):.{digits}f} %"
    except (TypeError, ValueError):
        return str(value)


def fmt_sci(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.{digits}e}"
    except (TypeError, ValueError):
        return str(value)


def add_filters(env: Any) -> Any:
    env.filters["num"] = fmt_num
    env.filters["pct"] = fmt_pct
    env.filters["sci"] = fmt_sci
    return env


def load_template_source(ref: str) -> str:
    """Read ``"package:relative/path"`` from an installed package."""
    from importlib import resources

    package, _, rel = ref.partition(":")
    return resources.files(package).joinpath(rel).read_text(encoding="utf-8")


def render_method_section(method_cls: Any, explanation: dict[str, Any], figure_src: dict[str, str] | None = None,
                          model: dict[str, Any] | None = None, env: Any = None) -> str:
    """Render a method's section template to an HTML fragment (used by the report and by plugin tests)."""
    import jinja2

    if env is None:
        env = add_filters(jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined))
    if not method_cls.report_template:
        return ""
    template = env.from_string(load_template_source(method_cls.report_template))
    return template.render(explanation=explanation, figure_src=figure_src or {}, model=model or {})
