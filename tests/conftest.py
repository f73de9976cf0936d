"""Test isolation and shared fixtures.

Every test process gets its own HOME/XDG_* folders (MLflow and ONNX Runtime write under them), and no
test reaches a tracking store it did not create. Registered models live in one session-scoped SQLite
store: creating a store costs ~3 s of migrations, so tests share it and each test checks only what it
changed (run counts, tags) rather than assuming an empty store.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_ISOLATED_HOME = tempfile.mkdtemp(prefix="governance-tests-home-")
for _var, _sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                   ("XDG_DATA_HOME", ".local/share"), ("XDG_STATE_HOME", ".local/state"), ("MPLCONFIGDIR", "mpl")):
    os.environ[_var] = str(Path(_ISOLATED_HOME) / _sub)
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["GOVERNANCE_ORT_THREADS"] = "2"
for _var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
             "GOVERNANCE_PLUGINS", "GOVERNANCE_BLOCK_PLUGINS", "GOVERNANCE_DISABLE_PLUGIN_AUTOLOAD",
             "GOVERNANCE_STRICT_PLUGINS"):
    os.environ.pop(_var, None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FIXTURE_PLUGINS = Path(__file__).parent / "fixture_plugins"


@pytest.fixture(scope="session", autouse=True)
def _work_in_a_temporary_folder(tmp_path_factory):
    """MLflow's defaults are relative to the current folder (``sqlite:///mlflow.db``, ``./mlruns`` artifact
    roots of new experiments): run every test from a temporary folder so none of them lands in the repo."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _clean_mlflow_env(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_* variables; never let one test's store leak into the next."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    yield
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        os.environ.pop(var, None)  # set during the test (mlflow.set_registry_uri exports it): monkeypatch missed it
    mlflow = sys.modules.get("mlflow")  # only if a test used it (the GPU machine has no mlflow)
    if mlflow is None:
        return
    while mlflow.active_run():
        mlflow.end_run()
    # process-wide fluent state (set_tracking_uri / set_experiment) must not leak into the next test
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None
    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None


@pytest.fixture
def test_plugins():
    """Make the fixture distribution (entry points `testplugin` and `broken`) discoverable."""
    from governance.host.plugins import get_plugin_host

    sys.path.insert(0, str(FIXTURE_PLUGINS))
    host = get_plugin_host(refresh=True)
    yield host
    sys.path.remove(str(FIXTURE_PLUGINS))
    sys.modules.pop("gov_testplugin", None)
    get_plugin_host(refresh=True)


class Registry:
    """A session SQLite MLflow store with registered models (see ``registry`` fixture)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.data: dict[str, Path] = {}

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def runs(self, experiment: str = "governance") -> list:
        c = self.client()
        exp = c.get_experiment_by_name(experiment)
        return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    """digits-cnn v1 (pt2) + v2 (pickle, alias champion), digits-cnn-onnx v1 (onnx, external data),
    bc-mlp v1 (pt2, with governance/eval.npz logged on its run)."""
    import mlflow
    import onnx

    from governance.testing.models import export_onnx, trained_breast_cancer_mlp, trained_digits_cnn

    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root)
    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_registry_uri(reg.uri)
    exp = mlflow.set_experiment("training")
    cnn, digits = trained_digits_cnn(epochs=4)
    cnn2, _ = trained_digits_cnn(seed=1, epochs=4)
    mlp, bc = trained_breast_cancer_mlp(epochs=15)
    reg.data["digits"] = root / "digits.npz"
    np.savez(reg.data["digits"], X=digits.X[:64], y=digits.y[:64])
    reg.data["bc"] = root / "bc.npz"
    np.savez(reg.data["bc"], X=bc.X[:64], y=bc.y[:64])
    with mlflow.start_run(experiment_id=exp.experiment_id):
        mlflow.log_param("epochs", 4)
        mlflow.log_metric("accuracy", 0.95)
        mlflow.pytorch.log_model(cnn, name="model", input_example=digits.X[:2], pip_requirements=["torch"],
                                 registered_model_name="digits-cnn")
    with mlflow.start_run(experiment_id=exp.experiment_id):
        mlflow.pytorch.log_model(cnn2, name="model", input_example=digits.X[:2], pip_requirements=["torch"],
                                 serialization_format="pickle", registered_model_name="digits-cnn")
    with mlflow.start_run(experiment_id=exp.experiment_id):
        path = export_onnx(cnn, (1, 8, 8), root / "cnn.onnx")
        mlflow.onnx.log_model(onnx.load(str(path)), name="model", input_example=digits.X[:2],
                              pip_requirements=["onnx"], registered_model_name="digits-cnn-onnx")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.pytorch.log_model(mlp, name="model", input_example=bc.X[:2], pip_requirements=["torch"],
                                 registered_model_name="bc-mlp")
        mlflow.log_artifact(str(reg.data["bc"]), "governance")
        reg.bc_run_id = run.info.run_id
        import shutil

        shutil.copy(reg.data["bc"], root / "eval.npz")
        mlflow.log_artifact(str(root / "eval.npz"), "governance")
    reg.client().set_registered_model_alias("digits-cnn", "champion", "2")
    reg.onnx_file = path
    reg.cnn, reg.cnn2, reg.mlp = cnn, cnn2, mlp
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(var, None)
    return reg


@pytest.fixture
def cli_invoke(capsys):
    """Run the real CLI entry point in-process: returns (exit_code, stdout, stderr)."""
    from governance.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke
