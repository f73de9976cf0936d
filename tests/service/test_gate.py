"""The service gate's bookkeeping and its revert, on a real queue file and a real SQLite MLflow registry: the
first look is a baseline, every later move queues one gate job (atomically with its webhook delivery id), the
revert goes back to where the alias was (skipping versions already found failing), is idempotent, and leaves
alone an alias that moved on."""

from __future__ import annotations

import json

import pytest

from governance.report.gate import SERVICE, GateRequest, decide
from governance.run.spec import RunSpec
from governance.service.gate import GATE_KIND, Gate, GateRules
from governance.service.gate_job import decide_and_act, revert
from governance.service.gate_ledger import GateLedger
from governance.service.queue import JobQueue
from governance.service.receiver import Receiver
from governance.service.triggers import TriggerRules

from .conftest import SECRET, envelope, signed_headers

MODEL = "gate-m"
FAIL = {"name": "release gate", "verdict": "fail",
        "checks": [{"id": "performance.accuracy >= 0.9", "metric": "performance.accuracy", "status": "fail"}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A SQLite registry with MODEL v1..v4 (no artifacts: nothing here loads a model)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("gate-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for _ in range(4):
        client.create_model_version(MODEL, source=str(root / "m"))
    return {"uri": uri, "client": client}


@pytest.fixture
def gate(tmp_path, registry, monkeypatch):
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  - metric: performance.accuracy\n    op: '>='\n    value: 0.9\n")
    client = registry["client"]
    client.set_registered_model_alias(MODEL, "champion", "1")
    for alias in ("staging",):
        try:
            client.delete_registered_model_alias(MODEL, alias)
        except Exception:
            pass
    queue = JobQueue(tmp_path / "queue.db")
    settings = RunSpec(tracking_uri=registry["uri"], policy=str(policy))
    return Gate(queue, GateRules(aliases=("champion",)), settings)


def alias_now(client, alias="champion"):
    version = client.get_registered_model(MODEL).aliases.get(alias)
    return None if version is None else str(version)


def test_first_look_is_a_baseline_then_every_move_is_one_gate_job(gate, registry):
    client = registry["client"]
    first = gate.sync(client)
    assert first.baseline and first.queued == [] and gate.ledger.position(gate.scope, MODEL, "champion") == "1"
    client.set_registered_model_alias(MODEL, "champion", "2")
    moved = gate.sync(client)
    assert not moved.baseline and len(moved.queued) == 1
    job = gate.queue.get(moved.queued[0])
    assert job.kind == GATE_KIND and job.trigger == "gate:champion" and job.payload["model_uri"] == f"models:/{MODEL}/2"
    assert job.payload["gate"]["from_version"] == "1"
    assert gate.sync(client).queued == []  # no change, no job
    client.delete_registered_model_alias(MODEL, "champion")
    assert gate.sync(client).queued == []  # a removal needs no check ...
    assert gate.ledger.moves(limit=1)[0].state == "unset"  # ... but is recorded
    client.set_registered_model_alias(MODEL, "champion", "2")  # the same version again, from nowhere: a new move
    again = gate.sync(client)
    assert len(again.queued) == 1 and again.queued != moved.queued
    assert gate.queue.get(again.queued[0]).payload["gate"]["from_version"] is None


def _receiver(gate):
    return Receiver(gate.queue, secrets=[SECRET], settings=gate.settings, gate=gate,
                    rules=TriggerRules(created=False, aliases=("champion", "staging")))


def _deliver(receiver, event, data, delivery_id=None):
    body = envelope(event, data)
    return receiver.handle(signed_headers(body, delivery_id=delivery_id), body)


def test_webhooks_record_each_move_once_with_its_job(gate, registry):
    gate.sync(registry["client"])  # baseline: champion -> 1
    receiver = _receiver(gate)
    moved = {"name": MODEL, "alias": "champion", "version": "3"}
    status, doc = _deliver(receiver, "model_version_alias.created", moved, delivery_id="d-1")
    assert status == 202 and doc["trigger"] == "gate:champion"
    assert _deliver(receiver, "model_version_alias.created", moved, delivery_id="d-1") == (
        200, {"status": "duplicate", "delivery_id": "d-1"})  # MLflow's retry: no second move
    status, doc = _deliver(receiver, "model_version_alias.created", moved)  # another delivery, same position
    assert status == 200 and doc["status"] == "gate"
    assert [m.to_version for m in gate.ledger.moves()] == ["3"] and gate.queue.counts()["queued"] == 1
    onward = {"name": MODEL, "alias": "champion", "version": "4"}
    assert _deliver(receiver, "model_version_alias.created", onward, delivery_id="d-2")[0] == 202
    # a late retry of the first delivery is a duplicate, not a move back from 4 to 3
    assert _deliver(receiver, "model_version_alias.created", moved, delivery_id="d-1")[1]["status"] == "duplicate"
    assert [m.to_version for m in gate.ledger.moves()] == ["4", "3"] and gate.queue.counts()["queued"] == 2
    status, _ = _deliver(receiver, "model_version_alias.deleted", {"name": MODEL, "alias": "champion"})
    assert status == 200 and gate.ledger.position(gate.scope, MODEL, "champion") is None
    # an alias that is watched but not gated still gets its ordinary report job
    status, doc = _deliver(receiver, "model_version_alias.created", {"name": MODEL, "alias": "staging",
                                                                     "version": "2"})
    assert status == 202 and doc["trigger"] == "alias:staging"


def _move_to(gate, client, version):
    """Someone moves champion to ``version`` and the gate sees it (as the webhook would report it)."""
    client.set_registered_model_alias(MODEL, "champion", version)
    with gate.queue.transaction() as db:
        return gate.ledger.observe(db, gate.scope, MODEL, "champion", version, source="webhook")


def test_revert_goes_back_and_a_second_run_does_not_act_again(gate, registry):
    client = registry["client"]
    gate.sync(client)
    move = _move_to(gate, client, "2")
    assert revert(client, gate.ledger, move) == ("reverted", "@champion moved back from version 2 to version 1", "1")
    assert alias_now(client) == "1" and gate.ledger.get(move.id).state == "reverted"
    # MLflow's event for the revert itself is no news: the ledger already holds the alias at 1
    with gate.queue.transaction() as db:
        assert gate.ledger.observe(db, gate.scope, MODEL, "champion", "1", source="webhook") is None
    # idempotent: someone moves the alias on by hand; running the same revert again must not touch it
    client.set_registered_model_alias(MODEL, "champion", "4")
    assert revert(client, gate.ledger, move)[0] == "reverted"
    assert alias_now(client) == "4"


def test_an_alias_that_moved_on_is_left_alone(gate, registry):
    client = registry["client"]
    gate.sync(client)
    move = _move_to(gate, client, "2")
    client.set_registered_model_alias(MODEL, "champion", "3")  # moved on; its webhook has not arrived yet
    action, detail, restored = revert(client, gate.ledger, move)
    assert action == "left_alone" and restored is None and "moved on to version 3" in detail
    assert alias_now(client) == "3"
    # a later move the ledger saw wins even when the registry reads "2" again (its webhook not yet in)
    _move_to(gate, client, "3")  # the late webhook of the move above
    move = _move_to(gate, client, "2")
    _move_to(gate, client, "4")
    client.set_registered_model_alias(MODEL, "champion", "2")
    assert revert(client, gate.ledger, move)[0] == "left_alone" and alias_now(client) == "2"


def test_no_previous_version_means_the_alias_is_removed(gate, registry):
    client = registry["client"]
    client.delete_registered_model_alias(MODEL, "champion")
    gate.sync(client)  # baseline: champion unset
    move = _move_to(gate, client, "2")
    assert move.from_version is None
    assert revert(client, gate.ledger, move)[0] == "removed" and alias_now(client) is None


def test_the_revert_skips_versions_already_found_failing(gate, registry):
    client = registry["client"]
    gate.sync(client)  # champion -> 1
    to_two = _move_to(gate, client, "2")
    to_three = _move_to(gate, client, "3")
    assert revert(client, gate.ledger, to_two)[0] == "left_alone"  # v2 failed, but the alias was already at 3
    assert gate.ledger.revert_target(to_three) == "1"  # back past the failing v2
    assert revert(client, gate.ledger, to_three) == ("reverted", "@champion moved back from version 3 to version 1",
                                                     "1")


def test_a_revert_interrupted_after_its_ledger_write_is_completed(gate, registry):
    client = registry["client"]
    gate.sync(client)
    move = _move_to(gate, client, "2")
    assert gate.ledger.claim_revert(move, "1")  # the attempt died here, before MLflow was asked
    assert alias_now(client) == "2" and gate.ledger.get(move.id).state == "reverting"
    assert revert(client, gate.ledger, move)[0] == "reverted" and alias_now(client) == "1"


def test_both_versions_are_tagged_with_what_happened_and_why(gate, registry):
    client = registry["client"]
    gate.sync(client)
    move = _move_to(gate, client, "3")
    decision = decide(GateRequest("champion", MODEL, "3", SERVICE, "1"), "fail", FAIL)
    outcome = decide_and_act(client, gate.ledger, move, decision, "GR-TEST")
    assert outcome["action"] == "reverted" and outcome["restored"] == "1"
    blocked = client.get_model_version(MODEL, "3").tags
    assert blocked["governance.gate"] == "blocked" and blocked["governance.gate.action"] == "reverted"
    assert blocked["governance.gate.failed_checks"] == "performance.accuracy >= 0.9"
    assert blocked["governance.gate.report_id"] == "GR-TEST"
    assert "failed 1 required check(s)" in blocked["governance.gate.reason"]
    restored = client.get_model_version(MODEL, "1").tags["governance.gate.restored"]
    assert "@champion moved back here from version 3" in restored
    assert json.loads(json.dumps(outcome))["verdict"] == "fail"


def test_a_version_whose_report_cannot_be_made_does_not_keep_the_alias(gate, registry, tmp_path):
    """Fail closed: the versions here have no model files, so no report can ever be made; on the job's last
    attempt the gate moves the alias back anyway and the job fails saying so."""
    from governance.service.gate_job import GateReportFailed
    from governance.service.handlers import report_job

    client = registry["client"]
    gate.sync(client)
    client.set_registered_model_alias(MODEL, "champion", "2")
    (job_id,) = gate.sync(client).queued
    job = gate.queue.claim("test", 60)
    assert job.id == job_id
    job.attempts = job.max_attempts  # the last attempt: nothing is retried after it
    job.payload["settings"]["output_dir"] = str(tmp_path / "reports")
    with pytest.raises(GateReportFailed, match="gate reverted: @champion moved back from version 2 to version 1"):
        report_job(job)
    assert alias_now(client) == "1"
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["governance.gate"] == "blocked" and tags["governance.gate.reason"].startswith("no report could be made")
