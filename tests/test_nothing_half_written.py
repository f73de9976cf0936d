"""Nothing half-written (issue 20, deliverable 4), on the session's real SQLite store: temp folders are removed
on success and failure (counted), a read-only output folder fails before any MLflow write, two identical jobs at
once make one run, and after a reuse the version's tags name the run that was reported."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

BC = "models:/bc-mlp/1"


@pytest.fixture
def tmpdir_count(tmp_path, monkeypatch):
    """A private TMPDIR; returns a function listing what is in it."""
    tmp = tmp_path / "TMPDIR"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return lambda: sorted(p.name for p in tmp.iterdir())


def _runs(registry, experiment):
    return registry.runs(experiment)


def test_temp_folders_are_removed_on_success_and_failure(registry, test_plugins, cli_invoke, tmpdir_count, tmp_path):
    """Issue 20: every job left a governance-run-* folder with a copy of the model in TMPDIR, failed ones
    included. Counted after each kind of command, successful and failed."""
    base = ("--methods", "occlusion", "--tracking-uri", registry.uri, "--experiment", "no-leftovers")
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((4, 7), dtype=np.float32))
    counts = {}
    for name, args, code in (
        ("run ok", ("run", BC, *base, "--data", str(registry.data["bc"])), 0),
        ("run reused", ("run", BC, *base, "--data", str(registry.data["bc"])), 0),
        ("run failed", ("run", BC, *base, "--data", str(bad)), 5),
        ("report ok", ("report", BC, *base, "-o", str(tmp_path / "out"), "--no-pdf"), 0),
        ("report failed", ("report", BC, *base, "-o", str(tmp_path / "out"), "--data", str(bad)), 5),
        ("inspect ok", ("inspect", BC, "--tracking-uri", registry.uri), 0),
        ("inspect failed", ("inspect", "models:/digits-cnn/2", "--tracking-uri", registry.uri), 4),
    ):
        got, out, err = cli_invoke(*args)
        assert got == code, (name, err[-1500:])
        counts[name] = tmpdir_count()
    assert counts == {name: [] for name in counts}, counts


def test_api_explain_keeps_the_evidence_but_not_the_model_copy(registry, test_plugins, tmpdir_count):
    import governance
    from governance.contract.errors import DataError

    run = governance.explain(BC, methods=["occlusion"], tracking_uri=registry.uri, experiment="no-leftovers",
                             data=str(registry.data["bc"]), force=True)
    assert run.workdir.parent == Path(tempfile.gettempdir()) and (run.workdir / "run.json").is_file()
    assert not (run.workdir / "_model").exists() and not (run.workdir / "_data").exists()
    assert tmpdir_count() == [run.workdir.name]  # the caller's result: documented as theirs to delete
    import shutil

    shutil.rmtree(run.workdir)
    with pytest.raises(DataError):
        governance.explain(BC, methods=["occlusion"], tracking_uri=registry.uri, experiment="no-leftovers",
                           data="/does/not/exist.npz")
    assert tmpdir_count() == []


@pytest.fixture
def read_only_dir(tmp_path):
    from tests.test_bad_inputs import read_only

    with read_only(tmp_path / "locked") as folder:
        yield folder


def test_read_only_output_folder_fails_before_any_mlflow_write(registry, test_plugins, cli_invoke, read_only_dir,
                                                               tmpdir_count):
    """Issue 20: a read-only output folder gave exit 1 with a traceback, after a FINISHED MLflow run was
    written. Now: exit 8, the folder named, no run, no version tag changed, nothing left."""
    before_runs = len(_runs(registry, "read-only"))
    before_tags = dict(registry.client().get_model_version("bc-mlp", "1").tags)
    code, out, err = cli_invoke("report", BC, "--methods", "occlusion", "--tracking-uri", registry.uri,
                                "--experiment", "read-only", "-o", str(read_only_dir / "reports"))
    assert code == 8 and "Traceback" not in out + err
    assert f"the report folder {read_only_dir} is not writable" in err and "hint:" in err
    assert len(_runs(registry, "read-only")) == before_runs
    assert dict(registry.client().get_model_version("bc-mlp", "1").tags) == before_tags
    assert tmpdir_count() == [] and list(read_only_dir.iterdir()) == []


def test_concurrent_identical_jobs_make_one_run(registry, test_plugins, tmp_path, monkeypatch):
    """Issue 20: two concurrent `governance run` on one version made two FINISHED runs with one config hash.
    The second waits on the config-hash lock, then reuses the first's run."""
    import governance

    monkeypatch.setenv("GOVERNANCE_HOME", str(tmp_path / "home"))  # the lock folder
    experiment = "concurrent"
    results, errors = [], []
    barrier = threading.Barrier(2)

    def job():
        try:
            barrier.wait(timeout=60)
            results.append(governance.explain(BC, methods=["occlusion"], tracking_uri=registry.uri,
                                              experiment=experiment, data=str(registry.data["bc"]),
                                              config={"occlusion": {"n_samples": 64}}, seed=7))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    runs = _runs(registry, experiment)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1, [(r.info.run_id, r.info.status) for r in runs]
    assert sorted(r.reused for r in results) == [False, True]
    assert {r.mlflow_run_id for r in results} == {finished[0].info.run_id}


def test_after_a_reuse_the_version_tags_name_the_reported_run(registry, test_plugins, cli_invoke, tmp_path):
    """Issue 20: a reused run A was reported while the version's governance.run_id still named run B, written
    by an earlier, different call."""
    import json

    base = ("run", BC, "--methods", "occlusion", "--tracking-uri", registry.uri, "--experiment", "retag",
            "--data", str(registry.data["bc"]), "--json")
    code, out, _ = cli_invoke(*base, "--seed", "11")
    run_a = json.loads(out)["mlflow"]["run_id"]
    code, out, _ = cli_invoke(*base, "--seed", "12")
    run_b = json.loads(out)["mlflow"]["run_id"]
    tags = registry.client().get_model_version("bc-mlp", "1").tags
    assert run_a != run_b and tags["governance.run_id"] == run_b
    code, out, _ = cli_invoke(*base, "--seed", "11")
    doc = json.loads(out)
    assert code == 0 and doc["reused"] and doc["mlflow"]["run_id"] == run_a
    tags = registry.client().get_model_version("bc-mlp", "1").tags
    assert tags["governance.run_id"] == run_a and tags["governance.status"] == "ok"
    code, out, _ = cli_invoke("report", BC, "--methods", "occlusion", "--tracking-uri", registry.uri,
                              "--experiment", "retag", "--data", str(registry.data["bc"]), "--seed", "11",
                              "-o", str(tmp_path / "r"), "--no-pdf", "--json")
    tags = registry.client().get_model_version("bc-mlp", "1").tags
    assert tags["governance.run_id"] == tags["governance.report_run_id"] == run_a


def test_locks_serialise_across_processes(tmp_path, monkeypatch):
    """The lock is an flock: a second process waits until the first releases it (no polling, no stale files)."""
    import sys
    import time

    from governance.run.locks import config_lock

    monkeypatch.setenv("GOVERNANCE_HOME", str(tmp_path))
    code = ("import sys, time\nfrom governance.run.locks import config_lock\n"
            "with config_lock('sqlite:///x.db', 'abc') as waited:\n    print(round(waited, 1), flush=True)\n")
    with config_lock("sqlite:///x.db", "abc"):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "GOVERNANCE_HOME": str(tmp_path)})
        time.sleep(4.0)
        assert child.poll() is None  # still waiting for the lock
    out, _ = child.communicate(timeout=60)
    assert float(out.strip()) >= 1.0
    assert len(list((tmp_path / "locks").iterdir())) == 1
