"""Which registry events ask for a report, shared by the webhook receiver, ``watch`` and ``schedule``.

A trigger names one model version and why it should be reported on:

* ``created``: a new version was registered (``model_version.created``);
* ``alias:<alias>``: an alias was set on (or moved to) a version (``model_version_alias.created``);
* ``tag:<key>=<value>``: a tag was set on a version (``model_version_tag.set``).

Automatic triggers (created, alias, schedule) mean "this version must have a report under the current
configuration": they share one idempotency key, so a version reported once is not reported again when an
alias moves to it or the schedule comes round. A tag is an explicit request: each distinct tag value is a
new request (set ``governance.request=<date>`` to ask again).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

from governance.contract.errors import ConfigError

EVENT_CREATED = "model_version.created"
EVENT_ALIAS = "model_version_alias.created"
EVENT_TAG = "model_version_tag.set"
SUPPORTED_EVENTS = (EVENT_CREATED, EVENT_ALIAS, EVENT_TAG)

_VERSION = re.compile(r"^[0-9]{1,12}$")
MAX_NAME = 256


def normalise_version(version: str | int) -> str:
    """MLflow version numbers as the registry prints them: ``"002"`` and ``2`` are version ``"2"``.
    Raises ValueError for anything that is not a positive whole number."""
    text = str(version).strip()
    if isinstance(version, bool) or not _VERSION.match(text) or int(text) < 1:
        raise ValueError(f"{version!r} is not a model version number (1, 2, ...)")
    return str(int(text))


class MalformedDelivery(ValueError):
    """The body is not an MLflow webhook envelope we can act on."""


@dataclass(frozen=True)
class Trigger:
    """One model version and the reason it should be reported on."""

    name: str
    version: str
    kind: str  # created | alias | tag | schedule
    detail: str = ""  # alias name, "key=value", or the scheduled alias

    def __post_init__(self) -> None:  # one spelling per version, so one job per version
        object.__setattr__(self, "version", normalise_version(self.version))

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind

    @property
    def request(self) -> str:
        """The part of the idempotency key that comes from the trigger (empty for automatic ones)."""
        return f"tag:{self.detail}" if self.kind == "tag" else ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


#: version tags governance writes itself (status, run id, hashes): a trigger on them would loop
RESERVED_TAG_PREFIX = "governance."
REQUEST_TAG = "governance.request"


@dataclass(frozen=True)
class TagRule:
    key: str
    value: str | None = None  # None: any value

    def __post_init__(self) -> None:
        if self.key.startswith(RESERVED_TAG_PREFIX) and self.key != REQUEST_TAG:
            raise ConfigError(
                f"tag {self.key!r} is written by governance itself; reacting to it would report in a loop",
                hint=f"use {REQUEST_TAG} (or a tag outside the governance. namespace) to request reports",
            )

    @classmethod
    def parse(cls, text: str) -> "TagRule":
        key, sep, value = text.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"invalid tag rule {text!r}", hint=f"use KEY or KEY=VALUE, e.g. {REQUEST_TAG}")
        return cls(key, value if sep else None)

    def matches(self, key: str, value: str) -> bool:
        return key == self.key and (self.value is None or value == self.value)

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


@dataclass(frozen=True)
class TriggerRules:
    """What to react to. ``models`` are shell-style patterns (``fraud-*``); empty means every model."""

    created: bool = True
    aliases: tuple[str, ...] = ()
    tags: tuple[TagRule, ...] = ()
    models: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not (self.created or self.aliases or self.tags):
            raise ConfigError(
                "no trigger is enabled",
                hint="keep --created, or add --alias NAME or --tag KEY[=VALUE]",
            )

    @property
    def events(self) -> list[str]:
        """The MLflow webhook events these rules need (what ``webhook install`` subscribes to)."""
        out = [EVENT_CREATED] if self.created else []
        if self.aliases:
            out.append(EVENT_ALIAS)
        if self.tags:
            out.append(EVENT_TAG)
        return out

    def model_selected(self, name: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(name, p) for p in self.models)

    def match(self, event: str, data: dict[str, Any]) -> tuple[Trigger | None, str]:
        """The trigger for a parsed delivery, or ``(None, why it is ignored)``."""
        if event not in SUPPORTED_EVENTS:
            return None, f"event {event} is not one governance reacts to"
        name, version = data["name"], data["version"]
        if not self.model_selected(name):
            return None, f"model {name!r} is not selected"
        if event == EVENT_CREATED:
            if not self.created:
                return None, "version-created triggers are off"
            return Trigger(name, version, "created"), ""
        if event == EVENT_ALIAS:
            alias = data["alias"]
            if alias not in self.aliases:
                return None, f"alias {alias!r} is not watched"
            return Trigger(name, version, "alias", alias), ""
        key, value = data["key"], data["value"]
        if not any(rule.matches(key, value) for rule in self.tags):
            return None, f"tag {key!r} is not watched"
        return Trigger(name, version, "tag", f"{key}={value}"), ""

    def describe(self) -> str:
        parts = ["new versions"] if self.created else []
        parts += [f"alias {a}" for a in self.aliases]
        parts += [f"tag {t}" for t in self.tags]
        scope = ", ".join(self.models) if self.models else "every model"
        return f"{' | '.join(parts)} on {scope}"


def _string(data: dict[str, Any], key: str, *, limit: int = MAX_NAME) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedDelivery(f"data.{key} must be a non-empty string")
    return value


def parse_envelope(body: bytes) -> tuple[str, dict[str, Any]]:
    """``(event, data)`` from an MLflow envelope ``{entity, action, timestamp, data}``.

    Only the fields governance uses are validated; unknown events pass through (and are ignored later).
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedDelivery(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedDelivery("body is not a JSON object")
    entity, action, data = doc.get("entity"), doc.get("action"), doc.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise MalformedDelivery("body lacks the entity/action/data envelope of an MLflow webhook")
    event = f"{entity}.{action}"
    if event not in SUPPORTED_EVENTS:
        return event, data
    clean: dict[str, Any] = {"name": _string(data, "name")}
    version = data.get("version")
    if not isinstance(version, (str, int)) or isinstance(version, bool):
        raise MalformedDelivery("data.version must be a version number")
    try:
        clean["version"] = normalise_version(version)
    except ValueError:
        raise MalformedDelivery("data.version must be a version number (1, 2, ...)") from None
    if event == EVENT_ALIAS:
        clean["alias"] = _string(data, "alias")
    elif event == EVENT_TAG:
        clean["key"] = _string(data, "key")
        value = data.get("value")
        if not isinstance(value, str):
            raise MalformedDelivery("data.value must be a string")
        clean["value"] = value
    elif event == EVENT_CREATED:
        clean["source"] = data.get("source")
    return event, clean


def is_test_delivery(event: str, data: dict[str, Any]) -> bool:
    """MLflow's ``test_webhook`` sends fixed example payloads (``mlflow/webhooks/types.py``)."""
    if data.get("name") != "example_model" or data.get("version") != "1":
        return False
    if event == EVENT_CREATED:
        return data.get("source") == "models:/123"
    if event == EVENT_ALIAS:
        return data.get("alias") == "example_alias"
    if event == EVENT_TAG:
        return data.get("key") == "example_key" and data.get("value") == "example_value"
    return False
