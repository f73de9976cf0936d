"""The production handler's checks before any work (the full handler runs in test_e2e)."""

from __future__ import annotations

import pytest

from governance.contract.errors import ModelResolutionError
from governance.run.spec import RunSpec
from governance.service.handlers import check_version_ready
from governance.service.worker import RetryLater, is_transient


def test_ready_missing_and_pending_versions(store, monkeypatch):
    check_version_ready(store["uri"], "fraud-a", "1")
    with pytest.raises(ModelResolutionError, match="does not exist") as err:
        check_version_ready(store["uri"], "fraud-a", "99")
    assert not is_transient(err.value)

    class Pending:
        status, status_message = "PENDING_REGISTRATION", None

    import mlflow

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version", lambda self, name, version: Pending())
    with pytest.raises(RetryLater) as err:
        check_version_ready(store["uri"], "fraud-a", "1")
    assert is_transient(err.value)


def test_run_settings_map_to_the_api(tmp_path):
    cfg = tmp_path / "methods.yaml"
    cfg.write_text("methods:\n  occlusion:\n    n_samples: 4\n")
    s = RunSpec(tracking_uri="sqlite:///x.db", methods=("occlusion",), config_file=str(cfg),
                overrides=("occlusion.target=1",), max_samples=16, plugins=("testplugin",))
    again = RunSpec.from_dict(s.to_dict())  # what the worker reads back from the job payload
    assert again.method_settings() == {"occlusion": {"n_samples": 4, "target": 1}}
    assert again.methods == ("occlusion",) and again.plugins == ("testplugin",) and again.max_samples == 16
    assert RunSpec().methods is None  # all installed methods