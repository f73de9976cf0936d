"""Render ``report.json`` to HTML with Jinja2: host templates, user overrides, method and plugin sections.

Template lookup, first match wins: the user's folders (``--template-dir``, in order), then the shipped
``governance.templates`` package, then ``"package:relative/path"`` names resolved inside installed packages
(how plugin templates are named). So copying ``report.css`` or ``section_signoff.html.j2`` into your own
folder and editing it overrides just that part; ``method_<method>.html.j2`` overrides one method's
section. Autoescaping is always on: registry text and plugin output are untrusted.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
import traceback
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import jinja2
from markupsafe import Markup

from governance.report.sections import add_filters, load_template_source, render_method_section

log = logging.getLogger("governance.report")

MAIN_TEMPLATE = "report.html.j2"
GENERIC_METHOD_TEMPLATE = "method_generic.html.j2"


def package_template_dir() -> Path:
    return Path(str(resources.files("governance.templates")))


def _package_loader(name: str) -> tuple[str, None, Any] | None:
    if ":" not in name:
        return None
    try:
        return load_template_source(name), None, lambda: True
    except (ModuleNotFoundError, FileNotFoundError, OSError, ValueError):
        return None


_ACRONYMS = {"uri": "URI", "id": "ID", "auc": "AUC", "ig": "IG", "onnx": "ONNX", "mlflow": "MLflow", "sha256": "sha256",
             "rmse": "RMSE", "r2": "R²", "cpu": "CPU", "gpu": "GPU", "cuda": "CUDA", "url": "URL"}


def humanize(value: Any) -> str:
    """``ig_deletion_auc`` -> ``IG deletion AUC``."""
    words = [w for w in re.split(r"[_\-\s]+", str(value).strip()) if w]
    words = [_ACRONYMS.get(w.lower(), w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if words and words[0] == words[0].lower() else text


def format_dt(value: Any) -> str:
    """ISO timestamp -> ``2026-11-24 10:31 UTC``; anything else unchanged."""
    if not value:
        return "not recorded"
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
        return dt.strftime("%Y-%m-%d %H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M")


def data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def make_env(template_dirs: Iterable[Path] = ()) -> jinja2.Environment:
    user = [str(Path(d)) for d in template_dirs]
    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader(user + [str(package_template_dir())]),
        jinja2.FunctionLoader(_package_loader),
    ])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    add_filters(env)
    env.filters["humanize"] = humanize
    env.filters["dt"] = format_dt
    env.tests["markup"] = lambda v: isinstance(v, Markup)
    search = [Path(d) for d in user] + [package_template_dir()]

    def asset(name: str) -> str:
        """A file from the template folders (a logo, say) as a data URI, or "" when absent."""
        for d in search:
            p = (d / name).resolve()
            if p.is_file() and d.resolve() in p.parents:
                return data_uri(p)
        return ""

    env.globals["asset"] = asset
    return env


def template_roots(template_dirs: Iterable[Path] = ()) -> list[Path]:
    return [Path(d) for d in template_dirs] + [package_template_dir()]


# --------------------------------------------------------------------------------------------- figures
def figure_sources(exp: Mapping[str, Any], evidence_root: Path | None) -> tuple[dict[str, str], list[str]]:
    """Figure name -> data URI for one explanation, plus names whose file is missing."""
    srcs: dict[str, str] = {}
    missing: list[str] = []
    for name, filename in (exp.get("figures") or {}).items():
        path = evidence_root / "explanations" / str(exp.get("method")) / str(filename) if evidence_root else None
        if path is not None and path.is_file():
            srcs[name] = data_uri(path)
        else:
            missing.append(str(name))
    return srcs, missing


# --------------------------------------------------------------------------------------------- sections
def render_method_sections(doc: dict[str, Any], env: jinja2.Environment, methods: Mapping[str, type],
                           evidence_root: Path | None) -> dict[str, Markup]:
    """HTML of every explanation's subsection. A user override wins over the plugin's template, which
    wins over the generic section; a template that fails falls back to the generic one and is noted
    under limitations."""
    out: dict[str, Markup] = {}
    notes = doc["limitations"]["rendering"]
    for exp in doc["explanations"]:
        method = str(exp.get("method"))
        figs, missing = figure_sources(exp, evidence_root)
        if missing:
            notes.append(f"{method}: figure file(s) not found, not shown: {', '.join(missing)}")
        html = None
        override = f"method_{method}.html.j2"
        cls = methods.get(method)
        if exp.get("status") == "ok":
            try:
                html = env.get_template(override).render(explanation=exp, figure_src=figs, model=doc["model"])
            except jinja2.TemplateNotFound:
                html = None
            except Exception as exc:
                notes.append(f"{method}: the override template {override} failed ({type(exc).__name__}: {exc}); "
                             "the generic section is shown instead")
            if html is None and cls is not None and getattr(cls, "report_template", None):
                try:
                    html = render_method_section(cls, exp, figs, doc["model"], env=env)
                except Exception as exc:
                    log.warning("report: template of method %s failed:\n%s", method, traceback.format_exc())
                    notes.append(f"{method}: its section template {cls.report_template} failed "
                                 f"({type(exc).__name__}: {exc}); the generic section is shown instead")
                    html = None
        # figures the method's own template did not show are appended: every figure is evidence
        extra = [name for name, src in figs.items() if html and src not in html]
        generic = env.get_template(GENERIC_METHOD_TEMPLATE).render(
            explanation=exp, figure_src=figs, model=doc["model"], body=Markup(html) if html else None,
            extra_figures=extra)
        out[method] = Markup(generic)
    return out


def read_only(value: Any) -> Any:
    """A deep read-only view of a JSON document (mappings become MappingProxyType, lists tuples), handed to
    ``report_sections`` so that a plugin cannot change the report it is shown."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: read_only(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(read_only(v) for v in value)
    return value


def plugin_sections(doc: dict[str, Any], env: jinja2.Environment, host: Any) -> list[dict[str, Any]]:
    """Call every ``report_sections`` implementation through the host's guarded caller (a raising plugin is
    recorded, the others still contribute) and render what they return."""
    out: list[dict[str, Any]] = []
    if host is None:
        return out
    notes = doc["limitations"]["rendering"]
    before = len(host.hook_errors())
    results = host.call_each("report_sections", report=read_only(doc))
    notes.extend(f"plugin {e}" for e in host.hook_errors()[before:])
    for plugin, returned in results:
        for i, sec in enumerate(returned if isinstance(returned, list) else [returned]):
            rendered = _render_section(doc, env, plugin, i, sec, notes)
            if rendered is not None:
                number = f"S{len(out) + 1}"
                meta = {"number": number, **rendered["meta"]}
                doc["supplementary"].append(meta)
                out.append({**meta, "html": rendered["html"]})
    return out


def _render_section(doc: dict[str, Any], env: jinja2.Environment, plugin: str, index: int, sec: Any,
                    notes: list[str]) -> dict[str, Any] | None:
    if not isinstance(sec, Mapping):
        notes.append(f"plugin {plugin}: report_sections returned {type(sec).__name__}, not a dict")
        return None
    title = str(sec.get("title") or f"Section from {plugin}")
    try:
        if sec.get("template"):
            ctx = {"report": doc, "model": doc["model"], **dict(sec.get("context") or {})}
            html = env.get_template(str(sec["template"])).render(**ctx)
        elif sec.get("html") is not None:
            html = str(sec["html"])  # trusted markup the plugin produced (hook contract)
        else:
            raise ValueError("the section has neither 'template' nor 'html'")
    except Exception as exc:
        notes.append(f"plugin {plugin}: section '{title}' could not be rendered ({type(exc).__name__}: {exc})")
        return None
    sid = re.sub(r"[^a-z0-9_-]+", "-", str(sec.get("id") or f"{plugin}-{index}").lower())
    meta = {"id": f"supp-{sid}", "title": title, "plugin": plugin, "crosswalk": dict(sec.get("crosswalk") or {})}
    return {"meta": meta, "html": Markup(html)}


def render_html(doc: dict[str, Any], env: jinja2.Environment, *, method_html: Mapping[str, Markup],
                supplementary: list[dict[str, Any]], report_json_sha256: str) -> str:
    return env.get_template(MAIN_TEMPLATE).render(
        report=doc, model=doc["model"], method_html=method_html, supplementary=supplementary,
        report_json_sha256=report_json_sha256,
    )
