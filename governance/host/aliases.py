"""Registry writes of the promotion gate: where an alias points, moving or removing it, tagging a version.

MLflow has no compare-and-set on aliases: whoever moves one reads it right before the move (the gate does, and
says so in its docs). Every MLflow failure here becomes a TrackingError naming the call that failed.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from governance.contract.errors import ConfigError, ModelResolutionError, TrackingError

_ALIAS = re.compile(r"^[\w\-]{1,255}$")
_VERSION_LIKE = re.compile(r"^[vV]\d+$")
#: MLflow's SQL store keeps model-version tag values in a 5000-character column
MAX_TAG_VALUE = 5000


def check_alias_name(alias: str) -> str:
    """The alias, or a ConfigError saying why MLflow would refuse it (checked before any work is done)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ConfigError(f"invalid alias {alias!r}",
                          hint="aliases are letters, digits, '_' and '-' (at most 255), e.g. --to champion")
    if alias.lower() == "latest" or _VERSION_LIKE.match(alias):
        raise ConfigError(f"alias {alias!r} is reserved by MLflow", hint="use a name such as champion or production")
    return alias


def pin_version(client: Any, model_uri: str) -> tuple[str, str]:
    """``(name, version)`` of a registry reference (``models:/NAME/3``, ``@alias``, ``/latest``), resolved once so
    that the report, the tags and the alias move all name the same version even if ``latest`` moves meanwhile."""
    from governance.host.registry import lookup_version, parse_model_uri

    ref = parse_model_uri(model_uri)
    if ref.kind not in ("registry", "alias", "latest"):
        raise ModelResolutionError(f"{model_uri} is not a registered model version, so no alias can point at it",
                                   hint="use models:/NAME/VERSION (or models:/NAME@ALIAS, models:/NAME/latest)")
    mv = lookup_version(client, ref)
    return str(mv.name), str(mv.version)


def _call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            raise TrackingError(f"MLflow refused to {what}: {exc.message}", hint="check the tracking server and "
                                "your permissions on the registered model") from exc
        raise


def alias_target(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at now, or None when the registered model has no such alias."""
    rm = _call(f"read registered model {name}", client.get_registered_model, name)
    version = (getattr(rm, "aliases", None) or {}).get(alias)
    return None if version is None else str(version)


def move_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it when ``version`` is None."""
    if version is None:
        _call(f"remove alias @{alias} of {name}", client.delete_registered_model_alias, name, alias)
    else:
        _call(f"move alias @{alias} of {name} to version {version}", client.set_registered_model_alias,
              name, alias, str(version))


def tag_version(client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set model-version tags, values cut to what the store keeps (the cut is marked with an ellipsis)."""
    for key, value in tags.items():
        text = str(value)
        if len(text) > MAX_TAG_VALUE:
            text = text[: MAX_TAG_VALUE - 1] + "…"
        _call(f"tag {name} version {version} with {key}", client.set_model_version_tag, name, str(version), key, text)
