"""Plugin discovery and the method registry.

Plugins come through one entry-point group, ``governance.plugins``; the built-in methods use it too.
Each entry point is imported inside its own guard: a plugin that fails to import is recorded (and shown
by ``governance plugins`` and in reports), never fatal, unless strict mode is on
(``GOVERNANCE_STRICT_PLUGINS=1``, for plugin developers).

Selection, in this order: ``GOVERNANCE_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry points at all;
an allow-list (``--plugins a,b``, ``GOVERNANCE_PLUGINS=a,b`` or ``plugins.allow`` in the settings file) loads
only those; a block-list (``GOVERNANCE_BLOCK_PLUGINS=a,b`` or ``plugins.block`` in the settings file, see
:mod:`governance.host.settings`) skips those. Names are the
entry-point names, the same names ``--methods`` takes.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from governance.contract import hookspecs
from governance.contract.errors import ConfigError, PluginError

log = logging.getLogger("governance.plugins")

#: Host modules that implement hooks (model loaders), by their registered name. They cannot be blocked:
#: without them nothing loads.
ESSENTIAL_PLUGINS: dict[str, str] = {"governance.loaders": "governance.host.loaders"}


@dataclass
class PluginRecord:
    """What we know about one entry point, loaded or not."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | blocked | not-allowed | essential
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    #: "<hook>: <error>" for every hook implementation of this plugin that raised (the call was isolated)
    hook_errors: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


class PluginHost:
    """A pluggy PluginManager plus our own records and the registry of method classes."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
        block: Iterable[str] | None = None,
        strict: bool | None = None,
    ) -> None:
        env = os.environ
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        if env.get("GOVERNANCE_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda msg: log.warning("trace: %s", msg.rstrip()))
            self.pm.enable_tracing()
        self.records: list[PluginRecord] = []
        self._methods: dict[str, type] | None = None  # collected on first use: `governance --help` needs none
        self._method_plugin: dict[str, str] = {}
        self.strict = strict if strict is not None else env.get("GOVERNANCE_STRICT_PLUGINS", "") not in ("", "0")
        if autoload is None:
            autoload = env.get("GOVERNANCE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        from governance.host.settings import setting

        if allow is not None:
            self.allow = list(allow)
        elif "GOVERNANCE_PLUGINS" in env:
            self.allow = _split(env["GOVERNANCE_PLUGINS"])
        else:
            file_allow = setting("plugins.allow")
            self.allow = list(file_allow) if file_allow is not None else None
        if block is not None:
            self.block = set(block)
        elif "GOVERNANCE_BLOCK_PLUGINS" in env:
            self.block = set(_split(env["GOVERNANCE_BLOCK_PLUGINS"]) or [])
        else:
            self.block = set(setting("plugins.block") or [])
        essential = {n.rsplit(".", 1)[-1] for n in ESSENTIAL_PLUGINS} | set(ESSENTIAL_PLUGINS)
        if bad := sorted(self.block & essential):
            raise ConfigError(f"plugin(s) {', '.join(bad)} are part of the host and cannot be blocked")
        self._register_essentials()
        if autoload:
            self._load_entry_points()
        self.pm.check_pending()

    # ------------------------------------------------------------------------------------------- loading
    def _register_essentials(self) -> None:
        import importlib

        for name, modname in ESSENTIAL_PLUGINS.items():
            mod = importlib.import_module(modname)
            self.pm.register(mod, name=name)
            self.records.append(
                PluginRecord(name=name, module=modname, distribution="governance", version=_own_version(),
                             status="essential", hooks=self._hook_names(mod), builtin=True)
            )

    def _load_entry_points(self) -> None:
        eps = importlib_metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        known = {ep.name for ep in eps}
        if self.allow is not None and (unknown := sorted(set(self.allow) - known)):
            raise ConfigError(
                f"unknown plugin(s) in the allow-list: {', '.join(unknown)}",
                hint=f"installed plugins are: {', '.join(sorted(known)) or 'none'}",
            )
        seen: set[str] = set()
        for ep in sorted(eps, key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            rec = PluginRecord(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
                builtin=bool(dist and dist.metadata["Name"] == "governance"),
            )
            self.records.append(rec)
            if ep.name in self.block:
                rec.status = "blocked"
                self.pm.set_blocked(ep.name)
                continue
            if self.allow is not None and ep.name not in self.allow:
                rec.status = "not-allowed"
                continue
            try:
                plugin = ep.load()
                self._check_api_version(ep.name, plugin)
                self.pm.register(plugin, name=ep.name)
                rec.hooks = self._hook_names(plugin)
                rec.requirements = list(getattr(plugin, "REQUIREMENTS", []))
            except Exception as exc:  # a broken plugin must not break the tool
                rec.status = "failed"
                rec.error = f"{type(exc).__name__}: {exc}"
                log.warning("plugin %r (%s) failed to load: %s", ep.name, ep.value, rec.error)
                if self.strict:
                    raise PluginError(
                        f"plugin '{ep.name}' ({ep.value}) failed to load: {rec.error}",
                        hint="fix the plugin, or unset GOVERNANCE_STRICT_PLUGINS to skip it",
                    ) from exc
                rec.error += "\n" + traceback.format_exc(limit=5)

    def register_plugin(self, plugin: Any, name: str) -> None:
        """Register a plugin object directly (tests, notebooks). Methods are collected again."""
        self._check_api_version(name, plugin)
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.records.append(PluginRecord(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                                         hooks=self._hook_names(plugin)))
        self._methods = None

    @staticmethod
    def _check_api_version(name: str, plugin: Any) -> None:
        wanted = getattr(plugin, "GOVERNANCE_HOOK_API", None)
        if wanted is None:
            return
        major, minor = tuple(wanted)[:2]
        host_major, host_minor = hookspecs.HOOK_API_VERSION
        if major != host_major:
            raise PluginError(
                f"plugin '{name}' targets hook API {major}.{minor}, this governance offers {host_major}.{host_minor}",
                hint="install a plugin release made for this governance version",
            )
        if minor > host_minor:
            log.warning("plugin %r wants hook API %s.%s; host has %s.%s: newer hook arguments are absent",
                        name, major, minor, host_major, host_minor)

    def _hook_names(self, plugin: Any) -> list[str]:
        """Hooks a registered plugin implements (asked of pluggy: probing attributes would trigger a
        plugin's lazy imports)."""
        return sorted(caller.name for caller in (self.pm.get_hookcallers(plugin) or []))

    # ------------------------------------------------------------------------------------------- methods
    @property
    def methods(self) -> dict[str, type]:
        """Method name -> class, from every plugin's ``register_methods`` (called once, on first use: importing
        method classes imports numpy and more, which listing commands does not need)."""
        if self._methods is None:
            self._methods = {}
            self._method_plugin.clear()
            self._collect_methods(self._methods)
        return self._methods

    def _collect_methods(self, methods: dict[str, type]) -> None:
        from governance.contract.method import Method

        for plugin_name, caller in self.implementations("register_methods", registration_order=True):
            found: list[type] = []
            ok, _ = self._guarded(plugin_name, "register_methods", lambda: caller(register=found.append),
                                  fatal=True)
            if not ok:
                continue
            for cls in found:
                if not (isinstance(cls, type) and issubclass(cls, Method)):
                    self._fail(plugin_name, f"registered {cls!r}, which is not a governance.Method subclass")
                    continue
                if not getattr(cls, "name", None):
                    self._fail(plugin_name, f"method class {cls.__name__} has no 'name'")
                    continue
                if cls.name in methods and self._method_plugin[cls.name] != plugin_name:
                    self._fail(plugin_name, f"method name '{cls.name}' is already registered by plugin "
                                            f"'{self._method_plugin[cls.name]}'")
                    continue
                methods[cls.name] = cls
                self._method_plugin[cls.name] = plugin_name
                rec = self.record(plugin_name)
                if rec and cls.name not in rec.methods:
                    rec.methods.append(cls.name)

    # ------------------------------------------------------------------------------------------- calling hooks
    def implementations(self, hook_name: str, *, registration_order: bool = False) -> list[tuple[str, Any]]:
        """``(plugin name, caller)`` per plugin implementing ``hook_name``: each caller is a pluggy subset caller
        that runs only that plugin's implementation (plus any hook wrappers), so tracing and wrappers see every
        call. In pluggy's calling order (last registered first) unless ``registration_order``."""
        hook = getattr(self.pm.hook, hook_name)
        impls = [i for i in hook.get_hookimpls() if not (i.hookwrapper or getattr(i, "wrapper", False))]
        order = impls if registration_order else list(reversed(impls))
        plugins = {id(i.plugin): i.plugin for i in impls}
        out = []
        for impl in order:
            others = [p for key, p in plugins.items() if key != id(impl.plugin)]
            out.append((impl.plugin_name, self.pm.subset_hook_caller(hook_name, remove_plugins=others)))
        return out

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of ``hook_name`` with ``kwargs``, one plugin at a time. An implementation
        that raises is recorded as that plugin's error (``governance plugins``, the run's plugin list) and the
        others still run; strict mode makes it a PluginError. Returns ``(plugin, result)`` for non-None results."""
        results: list[tuple[str, Any]] = []
        for plugin_name, caller in self.implementations(hook_name):
            ok, value = self._guarded(plugin_name, hook_name, lambda caller=caller: caller(**kwargs))
            if ok:
                results.extend((plugin_name, v) for v in value or [] if v is not None)
        return results

    def _guarded(self, plugin_name: str, hook_name: str, call: Any, *, fatal: bool = False) -> tuple[bool, Any]:
        try:
            return True, call()
        except Exception as exc:  # a plugin's hook must never break the run or the report
            message = f"{hook_name} raised {type(exc).__name__}: {exc}"
            if fatal:
                self._fail(plugin_name, message)
                return False, None
            if self.strict:
                raise PluginError(f"plugin '{plugin_name}': {message}",
                                  hint="fix the plugin, or unset GOVERNANCE_STRICT_PLUGINS to record it and go on") from exc
            log.warning("plugin %r: %s", plugin_name, message)
            rec = self.record(plugin_name)
            if rec is not None:
                rec.hook_errors.append(message)
            return False, None

    def hook_errors(self) -> list[str]:
        """Every isolated hook failure so far, as ``"<plugin>: <hook> raised ..."``."""
        return [f"{r.name}: {e}" for r in self.records for e in r.hook_errors]

    def _fail(self, plugin_name: str, message: str) -> None:
        if self.strict:
            raise PluginError(f"plugin '{plugin_name}': {message}")
        log.warning("plugin %r: %s", plugin_name, message)
        rec = self.record(plugin_name)
        if rec:
            rec.status, rec.error = "failed", message

    def record(self, name: str) -> PluginRecord | None:
        if self._methods is None:
            self.methods  # noqa: B018 - a record's status includes register_methods failures
        return next((r for r in self.records if r.name == name), None)

    def plugin_of(self, method_name: str) -> str | None:
        self.methods  # noqa: B018 - make sure the registry is collected
        return self._method_plugin.get(method_name)

    def get_method(self, name: str) -> type:
        if name not in self.methods:
            failed = [r.name for r in self.records if r.status == "failed"]
            extra = f"; plugins that failed to load: {', '.join(failed)} (see `governance plugins`)" if failed else ""
            raise ConfigError(
                f"unknown method '{name}'",
                hint=f"available methods: {', '.join(sorted(self.methods)) or 'none'}{extra}",
            )
        return self.methods[name]

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def summary(self) -> list[dict[str, Any]]:
        self.methods  # noqa: B018 - records list their methods once collected
        return [r.to_dict() for r in self.records]


def _own_version() -> str:
    from governance import __version__

    return __version__


_default_host: PluginHost | None = None


def get_plugin_host(*, refresh: bool = False, **kwargs: Any) -> PluginHost:
    """The process-wide host (created on first use). Pass keyword options or ``refresh`` for a new one."""
    global _default_host
    if refresh or kwargs or _default_host is None:
        host = PluginHost(**kwargs)
        if not kwargs:
            _default_host = host
        return host
    return _default_host
