"""Envelope parsing and trigger rules."""

from __future__ import annotations

import json

import pytest

from governance.contract.errors import ConfigError
from governance.run.spec import RunSpec
from governance.service.jobs import job_key, job_spec
from governance.service.triggers import (
    MalformedDelivery, TagRule, Trigger, TriggerRules, is_test_delivery, parse_envelope,
)


def env(entity, action, data):
    return json.dumps({"entity": entity, "action": action, "timestamp": "x", "data": data}).encode()


def test_parse_mlflow_examples():
    """The example payloads MLflow itself ships are parsed and recognised as test deliveries."""
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.types import get_example_payload_for_event

    for event in ("model_version.created", "model_version_alias.created", "model_version_tag.set"):
        entity, action = event.split(".")
        data = get_example_payload_for_event(WebhookEvent(entity, action))
        parsed_event, parsed = parse_envelope(env(entity, action, data))
        assert parsed_event == event and parsed["name"] == "example_model" and parsed["version"] == "1"
        assert is_test_delivery(parsed_event, parsed)


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'{"entity": "model_version"}', b"\xff\xfe",
    env("model_version", "created", {"version": "1"}),
    env("model_version", "created", {"name": "m", "version": "one"}),
    env("model_version", "created", {"name": "m", "version": True}),
    env("model_version", "created", {"name": "", "version": "1"}),
    env("model_version_alias", "created", {"name": "m", "version": "1"}),
    env("model_version_tag", "set", {"name": "m", "version": "1", "key": "k", "value": 3}),
])
def test_malformed(body):
    with pytest.raises(MalformedDelivery):
        parse_envelope(body)


def test_unknown_event_passes_through_and_is_ignored():
    event, data = parse_envelope(env("registered_model", "created", {"name": "m"}))
    trigger, why = TriggerRules().match(event, data)
    assert trigger is None and "not one governance reacts to" in why


def test_rules():
    rules = TriggerRules(created=False, aliases=("champion",), tags=(TagRule.parse("review=requested"),
                                                                     TagRule.parse("audit")), models=("fraud-*",))
    assert rules.events == ["model_version_alias.created", "model_version_tag.set"]
    assert rules.match("model_version.created", {"name": "fraud-a", "version": "1"})[0] is None
    assert rules.match("model_version_alias.created", {"name": "fraud-a", "version": "2", "alias": "champion"})[0] \
        == Trigger("fraud-a", "2", "alias", "champion")
    assert rules.match("model_version_alias.created", {"name": "fraud-a", "version": "2", "alias": "dev"})[0] is None
    assert rules.match("model_version_alias.created", {"name": "other", "version": "2", "alias": "champion"})[0] is None
    t, _ = rules.match("model_version_tag.set", {"name": "fraud-b", "version": "3", "key": "audit", "value": "x"})
    assert t.label == "tag:audit=x" and t.request == "tag:audit=x"
    assert rules.match("model_version_tag.set", {"name": "fraud-b", "version": "3", "key": "review",
                                                 "value": "no"})[0] is None
    with pytest.raises(ConfigError):
        TriggerRules(created=False)
    with pytest.raises(ConfigError):
        TagRule.parse("=x")


def test_keys_collapse_automatic_triggers_but_not_tag_requests(tmp_path):
    s = RunSpec()
    fp = s.fingerprint()
    created, alias, sched = (Trigger("m", "3", "created"), Trigger("m", "3", "alias", "champion"),
                             Trigger("m", "3", "schedule", "champion"))
    assert job_key(created, fp) == job_key(alias, fp) == job_key(sched, fp)
    assert job_key(Trigger("m", "4", "created"), fp) != job_key(created, fp)
    tag1, tag2 = Trigger("m", "3", "tag", "review=1"), Trigger("m", "3", "tag", "review=2")
    assert len({job_key(created, fp), job_key(tag1, fp), job_key(tag2, fp)}) == 3


def test_fingerprint_follows_file_contents_not_paths(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_accuracy: 0.9\n")
    a = RunSpec(policy=str(policy), output_dir=str(tmp_path / "out1"))
    b = RunSpec(policy=str(policy), output_dir=str(tmp_path / "out2"))
    assert a.fingerprint() == b.fingerprint()  # where the report goes does not change it
    before = a.fingerprint()
    policy.write_text("min_accuracy: 0.95\n")
    assert a.fingerprint() != before
    assert RunSpec(methods=("b", "a")).fingerprint() == RunSpec(methods=("a", "b")).fingerprint()
    spec = job_spec(Trigger("m", "1", "created"), a, source="test")
    assert spec["payload"]["settings"]["policy"] == str(policy) and spec["key"] == job_key(Trigger("m", "1", "created"),
                                                                                           a.fingerprint())
    with pytest.raises(ConfigError):
        RunSpec(policy=str(tmp_path / "missing.yaml")).fingerprint()


def test_trigger_versions_are_normalised():
    from governance.service.triggers import normalise_version

    assert Trigger("m", "002", "created") == Trigger("m", "2", "created")
    assert Trigger("m", "002", "created").model_uri == "models:/m/2"
    assert [normalise_version(v) for v in ("1", "010", 7)] == ["1", "10", "7"]
    for bad in ("0", "", "x", "-3", "1.0", True):
        with pytest.raises(ValueError):
            normalise_version(bad)
