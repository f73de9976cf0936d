"""Issue 15's done-criterion, end to end: a model with random weights, registered and reported like any other,
gets "not informative" on the first page of its PDF; the trained model's NeFLAG figures beat their controls."""

from __future__ import annotations

import json

import pytest
from pypdf import PdfReader


@pytest.fixture(scope="module")
def random_cnn(registry):
    """An untrained digits CNN (random weights) registered as a pt2 model in the session store."""
    import mlflow
    import numpy as np
    import torch

    from governance.testing.models import digits_cnn

    torch.manual_seed(123)
    module = digits_cnn().eval()
    X = np.load(registry.data["digits"])["X"][:2]
    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    mlflow.set_experiment("training-random")
    with mlflow.start_run():
        mlflow.pytorch.log_model(module, name="model", input_example=X, pip_requirements=["torch"],
                                 registered_model_name="digits-random")
    return "models:/digits-random/1"


def _report(uri, registry, tmp_path):
    import governance

    return governance.report_model(uri, tracking_uri=registry.uri, methods=["neflag"], data=registry.data["digits"],
                                   max_samples=48, experiment="evidence-e2e", output_dir=tmp_path,
                                   config={"neflag": {"quality": {"randomised_draws": 2, "random_draws": 3}}})


def test_random_weights_model_is_not_informative_on_the_first_page(random_cnn, registry, tmp_path):
    res = _report(random_cnn, registry, tmp_path)
    doc = json.loads(res.json_path.read_text())
    figures = doc["quality"]["figures"]
    assert figures and all(f["verdict"] == "not informative" for f in figures
                           if f["name"].startswith("neflag.") and "deletion" in f["name"]), figures
    first = " ".join(PdfReader(res.pdf_path).pages[0].extract_text().split())
    assert "not informative" in first
    assert "headline figure(s) beat their controls" in first


def test_trained_model_neflag_deletion_beats_its_controls(registry, tmp_path):
    res = _report("models:/digits-cnn/1", registry, tmp_path)
    doc = json.loads(res.json_path.read_text())
    verdicts = {f["name"]: f["verdict"] for f in doc["quality"]["figures"]}
    assert verdicts["neflag.deletion_auc"] == "informative", verdicts
