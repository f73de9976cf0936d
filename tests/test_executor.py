"""Executors: the local default and Ray (a real local Ray instance of 2 CPUs) give the same results."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import governance.api
from governance.contract.errors import ConfigError, ModelResolutionError
from governance.run.spec import RunSpec
from governance.run.executors import ExplainJob, LocalExecutor, RayExecutor, get_executor, workdir_name
from tests.conftest import FIXTURE_PLUGINS

try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover - CI installs it through the dev extra
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray[data] is not installed (pip install 'governance[ray]')")

URIS = ["models:/digits-cnn/1", "models:/bc-mlp/1", "models:/digits-cnn-onnx/1"]


# ----------------------------------------------------------------------------------------------- local
def test_local_map_models_keeps_input_order():
    assert LocalExecutor().map_models(["a", "bb", "ccc"], len) == [1, 2, 3]


def test_map_models_runs_every_job_then_raises_the_first_failure():
    seen = []

    def job(uri):
        seen.append(uri)
        if uri.startswith("bad"):
            raise ValueError(uri)
        return uri.upper()

    with pytest.raises(ValueError, match="bad1"):
        LocalExecutor().map_models(["a", "bad1", "bad2", "b"], job)
    assert seen == ["a", "bad1", "bad2", "b"]
    out = LocalExecutor().map_models(["a", "bad1", "b"], job, return_exceptions=True)
    assert out[0] == "A" and isinstance(out[1], ValueError) and out[2] == "B"


def test_get_executor_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown executor 'dask'") as err:
        get_executor("dask")
    assert "local, ray" in err.value.hint
    ex = LocalExecutor()
    assert get_executor(ex) is ex


def test_workdir_names_are_readable_and_unique():
    a, b = workdir_name("models:/digits-cnn/1"), workdir_name("models:/digits cnn/1")
    assert a.startswith("models-digits-cnn-1-") and a != b and "/" not in a + b


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is not installed
    with pytest.raises(ConfigError, match="needs Ray") as err:
        get_executor("ray")
    assert "pip install 'governance[ray]'" in err.value.hint


def test_cli_executor_ray_without_ray_exits_with_the_hint(monkeypatch, cli_invoke, registry):
    monkeypatch.setitem(sys.modules, "ray", None)
    code, out, err = cli_invoke("run", "models:/digits-cnn/1", "models:/bc-mlp/1", "--executor", "ray",
                                "--tracking-uri", registry.uri)
    assert code == 2, err
    assert "pip install 'governance[ray]'" in err


def test_explain_many_rejects_duplicate_and_missing_uris():
    with pytest.raises(ConfigError, match="more than once"):
        governance.api.explain_many(["models:/a/1", "models:/a/1"])
    with pytest.raises(ConfigError, match="no model URIs"):
        governance.api.explain_many([])


def test_explain_many_local_returns_runs_in_input_order(registry, test_plugins, tmp_path):
    runs = governance.api.explain_many(URIS[:2], methods=["occlusion"], tracking_uri=registry.uri,
                                       experiment="exec-local-order", workdir=tmp_path)
    assert [r.model["name"] for r in runs] == ["digits-cnn", "bc-mlp"]
    assert all(r.status == "ok" for r in runs)
    assert len({r.workdir for r in runs}) == 2 and all(Path(r.workdir).parent == tmp_path for r in runs)


def test_explain_many_returns_or_raises_per_model_errors(registry, test_plugins, tmp_path):
    bad = "models:/digits-cnn/99"
    out = governance.api.explain_many([bad, URIS[0]], methods=["occlusion"], tracking_uri=registry.uri,
                                      experiment="exec-local-errors", workdir=tmp_path, return_exceptions=True)
    assert isinstance(out[0], ModelResolutionError) and out[1].status == "ok"
    with pytest.raises(ModelResolutionError, match="has no version 99"):
        governance.api.explain_many([bad], tracking_uri=registry.uri, experiment="exec-local-errors")


def test_jobs_use_the_store_they_name_not_the_process_default(registry, test_plugins, tmp_path):
    """A process whose MLflow defaults point at another store (a notebook, an earlier test) still explains
    the models of the store the job names."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    mlflow.set_tracking_uri(elsewhere)  # conftest resets the process defaults after the test
    registry_utils._registry_uri = elsewhere
    runs = governance.api.explain_many([URIS[0]], methods=["occlusion"], tracking_uri=registry.uri,
                                       experiment="exec-pinned", workdir=tmp_path / "w")
    assert runs[0].status == "ok" and runs[0].model["name"] == "digits-cnn"
    assert mlflow.get_tracking_uri() == elsewhere


def test_cli_several_models_reports_each_and_keeps_going(registry, test_plugins, cli_invoke):
    code, out, err = cli_invoke("run", "models:/digits-cnn/99", URIS[0], "--methods", "occlusion",
                                "--tracking-uri", registry.uri, "--experiment", "exec-cli-partial", "--json")
    assert code == ModelResolutionError.exit_code, err
    assert "error: models:/digits-cnn/99: registered model 'digits-cnn' has no version 99" in err
    runs = json.loads(out)
    assert [r["model"]["name"] for r in runs] == ["digits-cnn"] and runs[0]["status"] == "ok"


# ----------------------------------------------------------------------------------------------- ray
@pytest.fixture(scope="module")
def ray_executor(tmp_path_factory):
    """A local Ray instance with 2 CPUs; workers see the fixture plugin and write temp files under tmp."""
    if not HAVE_RAY:
        pytest.skip("ray[data] is not installed (pip install 'governance[ray]')")
    root = tmp_path_factory.mktemp("ray")
    # Ray's unix sockets live below its temp dir and must stay under 107 characters
    short = None if len(str(root)) < 48 else tempfile.mkdtemp(prefix="gov-ray-")
    scratch = root / "scratch"
    scratch.mkdir()
    saved = os.environ.pop("RAY_ADDRESS", None)
    cwd = os.getcwd()
    os.chdir(scratch)  # the workers start here (and MLflow writes ./mlruns here)
    try:
        ex = RayExecutor(num_cpus=2, temp_dir=short or root / "r",
                         runtime_env={"env_vars": {"PYTHONPATH": str(FIXTURE_PLUGINS), "TMPDIR": str(scratch)}})
    finally:
        os.chdir(cwd)
    yield ex
    ex.close()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved
    if short:
        import shutil

        shutil.rmtree(short, ignore_errors=True)


def _compare_runs(a, b):
    assert a.status == b.status == "ok" and not a.reused and not b.reused
    assert a.config_hash == b.config_hash and a.model["content_sha256"] == b.model["content_sha256"]
    assert a.performance["evaluation"] == b.performance["evaluation"]
    for ea, eb in zip(a.explanations, b.explanations):
        assert ea.method == eb.method and ea.status == eb.status
        assert ea.metrics.keys() == eb.metrics.keys()
        for key in ea.metrics:
            assert ea.metrics[key] == pytest.approx(eb.metrics[key], rel=1e-6, abs=1e-6), key
        assert ea.arrays.keys() == eb.arrays.keys()
        for key in ea.arrays:
            np.testing.assert_allclose(ea.arrays[key], eb.arrays[key], rtol=1e-6, atol=1e-6, err_msg=key)


@needs_ray
def test_ray_explain_many_matches_local(ray_executor, registry, test_plugins, tmp_path):
    common = dict(methods=["occlusion"], tracking_uri=registry.uri, seed=3)
    uris = [URIS[0], URIS[2]]  # torch and ONNX Runtime
    local = governance.api.explain_many(uris, experiment="exec-same-local", workdir=tmp_path / "l", **common)
    remote = governance.api.explain_many(uris, executor=ray_executor, experiment="exec-same-ray",
                                         workdir=tmp_path / "r", **common)
    assert [r.model["uri"] for r in remote] == uris
    for a, b in zip(local, remote):
        _compare_runs(a, b)
    # the Ray runs really were logged by the workers, to the same store
    client = registry.client()
    for run in remote:
        assert client.get_run(run.mlflow_run_id).info.status == "FINISHED"
    assert ray_executor.ray.is_initialized()  # a caller's executor is left running


@needs_ray
def test_ray_errors_keep_their_type_and_hint(ray_executor, registry):
    job = ExplainJob(spec=RunSpec(tracking_uri=registry.uri, methods=("occlusion",)))
    out = ray_executor.map_models(["models:/digits-cnn/77"], job, return_exceptions=True)
    assert isinstance(out[0], ModelResolutionError) and "versions of 'digits-cnn': 1, 2" in out[0].hint


@needs_ray
def test_cli_runs_on_ray(ray_executor, registry, test_plugins, cli_invoke):
    """`--executor ray` with one model: one Ray task, and --json prints that run (a dict, as without Ray)."""
    code, out, err = cli_invoke("run", URIS[1], "--executor", "ray", "--methods", "occlusion",
                                "--tracking-uri", registry.uri, "--experiment", "exec-cli-ray", "--json")
    assert code == 0, err
    run = json.loads(out)
    assert run["model"]["name"] == "bc-mlp" and run["status"] == "ok"
    assert run["explanations"][0]["method"] == "occlusion" and run["explanations"][0]["status"] == "ok"


@needs_ray
def test_gpu_fractions_split_the_cluster_gpus(ray_executor, monkeypatch):
    assert ray_executor.gpu_fraction(2) == 0.0  # this cluster has no GPU
    monkeypatch.setattr(ray_executor, "_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert ray_executor.gpu_fraction(4) == 0.25
    assert ray_executor.gpu_fraction(3) == 0.33
    assert ray_executor.gpu_fraction(1) == 1.0
    monkeypatch.setattr(ray_executor, "_resources", lambda: {"CPU": 16.0, "GPU": 8.0})
    assert ray_executor.gpu_fraction(4) == 1.0


def test_explicit_gpu_share_wins():
    ex = RayExecutor.__new__(RayExecutor)  # no cluster needed to read the setting
    ex.gpus_per_worker = 0.5
    assert ex.gpu_fraction(8) == 0.5
