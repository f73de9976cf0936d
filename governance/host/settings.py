"""User settings file, lowest precedence: command-line options > environment variables > this file > defaults.

Looked up at ``$GOVERNANCE_CONFIG``, else ``./governance.toml``, else ``$XDG_CONFIG_HOME/governance/config.toml``
(``~/.config/governance/config.toml``)::

    tracking_uri = "http://mlflow.internal:5000"
    device = "auto"
    experiment = "governance"

    trust_pickle = false               # true: load pickle-format models (runs their code; see pickle_policy)

    [plugins]
    allow = ["neflag", "spectral"]     # load only these (like --plugins / GOVERNANCE_PLUGINS)
    block = ["interaction"]            # never load these (like GOVERNANCE_BLOCK_PLUGINS)

    [report]
    sign_key = "keys/key.pem"          # sign every report (PAdES); passphrase from GOVERNANCE_SIGN_PASSPHRASE
    sign_cert = "keys/cert.pem"
    trust = ["trusted-signers/"]       # what `governance verify` trusts when --trust is not given

Secrets (webhook secrets, MLflow tokens, key passphrases) are never read from this file: use environment
variables.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from governance.contract.errors import ConfigError

KNOWN_KEYS = {"tracking_uri", "device", "experiment", "plugins", "report", "trust_pickle"}


def state_dir() -> Path:
    """Where governance keeps state (the service queue, run locks): ``$GOVERNANCE_HOME``, else
    ``$XDG_STATE_HOME/governance``, else ``~/.local/state/governance``."""
    home = os.environ.get("GOVERNANCE_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state") / "governance"


def config_path() -> Path | None:
    env = os.environ.get("GOVERNANCE_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"GOVERNANCE_CONFIG points at {path}, which does not exist",
                              hint="fix the path or unset GOVERNANCE_CONFIG")
        return path
    local = Path("governance.toml")
    if local.is_file():
        return local
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "governance" / "config.toml"
    return xdg if xdg.is_file() else None


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text())
    except Exception as exc:
        raise ConfigError(f"cannot parse the settings file {path}: {exc}", hint="check its TOML syntax") from exc
    unknown = sorted(set(doc) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)}",
                          hint=f"known keys: {', '.join(sorted(KNOWN_KEYS))}")
    return doc


def settings() -> dict[str, Any]:
    """The settings file's content ({} when there is none)."""
    path = config_path()
    if path is None:
        return {}
    return _load(str(path.resolve()), path.stat().st_mtime)


def setting(key: str, default: Any = None) -> Any:
    value: Any = settings()
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value
