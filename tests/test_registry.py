"""Model references: every URI form resolves to the same identity record, with file hashes."""

from __future__ import annotations

import numpy as np
import pytest

from governance.contract.errors import ModelResolutionError
from governance.host.registry import parse_model_uri, resolve


@pytest.mark.parametrize("uri, kind, name, version, alias", [
    ("models:/m/3", "registry", "m", "3", None),
    ("models:/team.model/12", "registry", "team.model", "12", None),
    ("models:/m@champion", "alias", "m", None, "champion"),
    ("models:/m/latest", "latest", "m", None, None),
])
def test_parse_registry_forms(uri, kind, name, version, alias):
    ref = parse_model_uri(uri)
    assert (ref.kind, ref.name, ref.version, ref.alias) == (kind, name, version, alias)


@pytest.mark.parametrize("uri", ["models:/m", "models:/m/three", "runs:/abc", "s3://bucket/model", "nothing.txt"])
def test_parse_rejects_malformed(uri):
    with pytest.raises(ModelResolutionError) as err:
        parse_model_uri(uri)
    assert "models:/NAME/VERSION" in str(err.value) or "does not exist" in str(err.value)


def test_resolve_version_alias_latest_and_run_agree(registry, tmp_path):
    by_version = resolve("models:/digits-cnn/2", tracking_uri=registry.uri, download_dir=tmp_path / "a")
    by_alias = resolve("models:/digits-cnn@champion", tracking_uri=registry.uri, download_dir=tmp_path / "b")
    latest = resolve("models:/digits-cnn/latest", tracking_uri=registry.uri, download_dir=tmp_path / "c")
    assert by_version.version == by_alias.version == latest.version == "2"
    assert by_version.content_sha256 == by_alias.content_sha256 == latest.content_sha256
    assert "champion" in by_version.aliases
    assert by_version.run_id and by_version.model_id and by_version.model_id.startswith("m-")
    assert "pytorch" in by_version.flavors
    assert all(len(h) == 64 for h in by_version.files.values())
    assert "MLmodel" in by_version.files
    by_run = resolve(f"runs:/{by_version.run_id}/model", tracking_uri=registry.uri, download_dir=tmp_path / "d")
    assert by_run.kind == "run" and by_run.files["MLmodel"] == by_version.files["MLmodel"]


def test_resolve_onnx_version_hashes_external_weights(registry, tmp_path):
    info = resolve("models:/digits-cnn-onnx/1", tracking_uri=registry.uri, download_dir=tmp_path)
    assert "onnx" in info.flavors
    # mlflow.onnx.log_model stores weights in a separate file by default: the hash must cover it
    assert any(not name.endswith((".onnx", "MLmodel", ".yaml", ".txt", ".json")) for name in info.files), info.files


def test_resolve_local_onnx_file(registry, tmp_path):
    info = resolve(str(registry.onnx_file), tracking_uri=registry.uri, download_dir=tmp_path)
    assert info.kind == "file" and info.flavors == {"onnx": {"data": registry.onnx_file.name}}
    assert list(info.files) == [registry.onnx_file.name]


def test_unknown_model_lists_registered_models(registry, tmp_path):
    with pytest.raises(ModelResolutionError) as err:
        resolve("models:/no-such-model/1", tracking_uri=registry.uri, download_dir=tmp_path)
    assert "no registered model named 'no-such-model'" in str(err.value)
    assert "digits-cnn" in err.value.hint


def test_latest_of_an_unknown_model_is_a_resolution_error(registry, tmp_path):
    with pytest.raises(ModelResolutionError, match="no registered model named 'ghost'"):
        resolve("models:/ghost/latest", tracking_uri=registry.uri, download_dir=tmp_path)


def test_wrong_version_lists_versions_and_aliases(registry, tmp_path):
    with pytest.raises(ModelResolutionError) as err:
        resolve("models:/digits-cnn/99", tracking_uri=registry.uri, download_dir=tmp_path)
    assert "has no version 99" in str(err.value)
    assert "1, 2" in err.value.hint and "champion" in err.value.hint
    with pytest.raises(ModelResolutionError, match="has no alias '@staging'"):
        resolve("models:/digits-cnn@staging", tracking_uri=registry.uri, download_dir=tmp_path)


def test_both_flavors_load_and_agree(registry, tmp_path, monkeypatch):
    import governance

    monkeypatch.setenv("GOVERNANCE_TRUST_PICKLE", "1")  # digits-cnn v2 is a pickle-format model

    torch_model = governance.load("models:/digits-cnn/1", tracking_uri=registry.uri, device="cpu")
    onnx_model = governance.load("models:/digits-cnn-onnx/1", tracking_uri=registry.uri, device="cpu")
    assert torch_model.runtime == "torch" and onnx_model.runtime == "onnxruntime"
    x = np.load(registry.data["digits"])["X"][:16]
    np.testing.assert_allclose(torch_model.predict(x), onnx_model.predict(x), atol=1e-4)
    assert onnx_model.has_gradients and onnx_model.parity_max_abs_diff < 1e-4
    pickled = governance.load("models:/digits-cnn/2", tracking_uri=registry.uri, device="cpu")
    assert pickled.details["format"] == "nn.Module"
    assert torch_model.details["format"].startswith("torch.export")
