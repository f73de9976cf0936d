"""Plugin discovery through the real entry-point machinery, selection, isolation of broken plugins."""

from __future__ import annotations

import pytest

from governance import hookimpl
from governance.contract.errors import ConfigError, PluginError
from governance.host.plugins import PluginHost


def test_entry_point_plugin_is_discovered_and_broken_one_reported(test_plugins):
    host = test_plugins
    assert {"occlusion", "crash"} <= set(host.methods)
    rec = host.record("testplugin")
    assert rec.status == "loaded" and rec.distribution == "gov-testplugin" and rec.version == "0.1"
    assert rec.methods == ["occlusion", "crash"] and rec.hooks == ["register_methods"]
    broken = host.record("broken")
    assert broken.status == "failed" and "ModuleNotFoundError" in broken.error


def test_builtin_methods_use_the_same_entry_point_group():
    import importlib.metadata as md

    eps = {ep.name: ep for ep in md.entry_points(group="governance.plugins")}
    for name in ("neflag", "spectral", "interaction", "interpreter", "bort"):
        assert eps[name].value == f"governance_plugins.{name}"
        assert eps[name].dist.metadata["Name"] == "governance"


def test_allow_and_block_lists(test_plugins, monkeypatch):
    only = PluginHost(allow=["testplugin"])
    assert only.record("broken").status == "not-allowed"
    assert only.record("neflag").status == "not-allowed"
    blocked = PluginHost(block=["testplugin"])
    assert blocked.record("testplugin").status == "blocked" and "occlusion" not in blocked.methods
    monkeypatch.setenv("GOVERNANCE_BLOCK_PLUGINS", "testplugin,broken")
    env_blocked = PluginHost()
    assert env_blocked.record("broken").status == "blocked"
    with pytest.raises(ConfigError, match="unknown plugin"):
        PluginHost(allow=["no-such-plugin"])
    with pytest.raises(ConfigError, match="cannot be blocked"):
        PluginHost(block=["governance.loaders"])


def test_autoload_off_keeps_only_host_loaders(monkeypatch):
    monkeypatch.setenv("GOVERNANCE_DISABLE_PLUGIN_AUTOLOAD", "1")
    host = PluginHost()
    assert host.methods == {} and [r.name for r in host.records] == ["governance.loaders"]


def test_strict_mode_turns_import_failure_into_error(test_plugins):
    with pytest.raises(PluginError, match="'broken'"):
        PluginHost(strict=True)


def test_unknown_method_lists_available(test_plugins):
    with pytest.raises(ConfigError) as err:
        test_plugins.get_method("occlusoin")
    assert "occlusion" in err.value.hint and "broken" in err.value.hint


def test_hook_api_major_mismatch_is_refused():
    class FuturePlugin:
        GOVERNANCE_HOOK_API = (2, 0)

    host = PluginHost(autoload=False)
    with pytest.raises(PluginError, match="hook API 2.0"):
        host.register_plugin(FuturePlugin(), "future")


def test_misspelt_hook_fails_fast():
    class Typo:
        @hookimpl
        def register_method(self, register):  # missing "s"
            pass

    host = PluginHost(autoload=False)
    with pytest.raises(Exception, match="register_method"):
        host.register_plugin(Typo(), "typo")


def test_registering_a_non_method_is_reported():
    class Bad:
        @hookimpl
        def register_methods(self, register):
            register(object)

    host = PluginHost(autoload=False)
    host.register_plugin(Bad(), "bad")
    assert host.record("bad").status == "failed" and "not a governance.Method" in host.record("bad").error


def test_method_config_rejects_typos(test_plugins):
    cls = test_plugins.get_method("occlusion")
    assert cls.parse_config({"n_samples": 3}).n_samples == 3
    with pytest.raises(ConfigError) as err:
        cls.parse_config({"n_sample": 3})
    assert "n_sample" in str(err.value) and "n_samples" in err.value.hint
