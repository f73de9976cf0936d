"""An MLflow model evaluator, so that governance explanations come out of ``mlflow.models.evaluate``::

    mlflow.models.evaluate("models:/bc-mlp/1", data=X, targets=y, model_type="classifier",
                           evaluators=["governance"],
                           evaluator_config={"methods": ["gradinput"], "config": {"gradinput": {"n_samples": 32}}})

Registered through the ``mlflow.model_evaluator`` entry point. The explanations, figures and metrics land in the
caller's run exactly where ``governance run`` puts them in its own runs: ``explanations/<method>/`` artifacts,
``<method>.<metric>`` metrics and ``governance.method.<method>`` tags, plus ``governance/evaluation.json``.

The model under evaluation is a pyfunc model; the evaluator looks through it to the flavor it wraps (through
the LoggedModel id, else the run and artifact path in its metadata), so torch and ONNX models get their full
runtime with gradients. A model that is only a pyfunc (or a plain function) runs forward-only: methods that need
gradients are skipped with the reason, the others run on ``predict``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from governance.contract.dataset import Dataset
from governance.contract.errors import ConfigError, DataError
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec
from governance.run.spec import RunSpec

log = logging.getLogger("governance.integrations.mlflow_evaluator")

MODEL_TYPES = ("classifier", "regressor")


#: ``evaluator_config`` keys: RunSpec fields (``config`` is the per-method settings) plus MLflow's own col_mapping
EVALUATOR_KEYS = ("methods", "config", "seed", "max_samples", "device", "batch_size", "plugins", "col_mapping")


def parse_evaluator_config(raw: dict[str, Any] | None) -> RunSpec:
    """``evaluator_config`` of the ``governance`` evaluator as a RunSpec (unknown keys are errors)."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(EVALUATOR_KEYS))
    if unknown:
        raise ConfigError(f"invalid evaluator_config for the governance evaluator: unknown key(s) {', '.join(unknown)}",
                          hint=f"valid keys: {', '.join(EVALUATOR_KEYS)}")
    raw.pop("col_mapping", None)
    try:
        return RunSpec.build(raw)
    except ConfigError as exc:
        raise ConfigError(f"invalid evaluator_config for the governance evaluator: {exc}",
                          hint=f"valid keys: {', '.join(EVALUATOR_KEYS)}") from None


# --------------------------------------------------------------------------------------------- the model
class PyfuncModel(LoadedModel):
    """A pyfunc model (or a function) seen through ``predict`` only: no torch view, no weights."""

    runtime = "pyfunc"

    def __init__(self, pyfunc: Any, sample_shape: tuple[int, ...], feature_names: list[str] | None,
                 info: ModelVersionInfo) -> None:
        self._pyfunc = pyfunc
        self.info = info
        self.device = "cpu"
        self.input_spec = TensorSpec("input", (None, *sample_shape))
        self.torch_unavailable_reason = ("the model was evaluated as an MLflow pyfunc model whose flavor governance "
                                         "cannot load (only pytorch and onnx models have a torch view)")
        self.details = {"format": "mlflow pyfunc (forward only)"}
        schema = getattr(getattr(pyfunc, "metadata", None), "get_input_schema", lambda: None)()
        self._tensor_input = bool(schema is not None and schema.is_tensor_spec())
        self._columns = feature_names
        probe = self._predict_batch(np.zeros((2, *sample_shape), dtype=np.float32))
        self.output_spec = TensorSpec("output", (None, *probe.shape[1:]), str(probe.dtype))

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        import pandas as pd

        if self._tensor_input:
            out = self._pyfunc.predict(x)
        else:
            flat = x.reshape(len(x), -1)
            out = self._pyfunc.predict(pd.DataFrame(flat, columns=self._columns or None))
        out = out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
        out = out.astype(np.float32) if out.dtype.kind in "fiub" else out
        return out.reshape(len(x), -1) if out.ndim == 1 else out


def model_references(model: Any, model_id: str | None) -> list[str]:
    """URIs governance can resolve for the model under evaluation, best first."""
    refs = []
    meta = getattr(model, "metadata", None)
    model_id = model_id or getattr(model, "model_id", None) or getattr(meta, "model_id", None)
    if model_id:
        refs.append(f"models:/{model_id}")
    if meta is not None and getattr(meta, "run_id", None) and getattr(meta, "artifact_path", None):
        refs.append(f"runs:/{meta.run_id}/{meta.artifact_path}")
    return refs


def resolve_loaded_model(model: Any, model_id: str | None, *, sample_shape: tuple[int, ...],
                         feature_names: list[str] | None, tracking_uri: str, download_dir: Path, device: str,
                         batch_size: int | None, host: Any) -> tuple[LoadedModel, list[str]]:
    """The richest LoadedModel for the evaluated model: its torch/ONNX flavor through governance's loaders
    (via the LoggedModel or its run), else the pyfunc's raw torch module, else forward-only pyfunc.
    Returns the model and notes on what was tried."""
    from governance.contract.errors import GovernanceError
    from governance.run.pipeline import load_model
    from governance.host.registry import resolve

    notes: list[str] = []
    for k, ref in enumerate(model_references(model, model_id)):
        try:
            info = resolve(ref, tracking_uri=tracking_uri, download_dir=download_dir / f"ref{k}")
            return load_model(info, device=device, batch_size=batch_size, host=host), notes
        except GovernanceError as exc:
            notes.append(f"{ref}: {str(exc).splitlines()[0]}")
    raw = None
    try:
        raw = model.get_raw_model() if hasattr(model, "get_raw_model") else None
    except Exception:  # noqa: BLE001 - pyfunc wrappers without a raw model raise NotImplementedError
        raw = None
    try:
        import torch

        if isinstance(raw, torch.nn.Module):
            from governance.host.runtimes.torch_model import TorchModel

            return TorchModel.from_module(raw, sample_shape, name="evaluated-model"), notes
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    uuid = getattr(getattr(model, "metadata", None), "model_uuid", None) or "function"
    info = ModelVersionInfo(uri=f"pyfunc:{uuid}", kind="pyfunc", name="evaluated model")
    notes.append("ran forward-only through pyfunc predict")
    return PyfuncModel(model, sample_shape, feature_names, info), notes


# --------------------------------------------------------------------------------------------- the data
def evaluation_dataset(dataset: Any, model_input_shape: tuple[int | None, ...] | None, model_type: str) -> Dataset:
    """The evaluation dataset as a governance Dataset; flat feature rows are reshaped to the model's input
    shape when the sizes agree (an image model evaluated on flattened pixels)."""
    feats = dataset.features_data
    X = np.asarray(feats.to_numpy() if hasattr(feats, "to_numpy") else feats)
    if X.dtype.kind not in "fiub":
        raise DataError("the governance evaluator needs numeric features",
                        hint="encode categorical columns before calling mlflow.models.evaluate")
    X = X.astype(np.float32)
    shape = tuple(d for d in (model_input_shape or ()) if d is not None)
    if shape and X.shape[1:] != shape:
        if int(np.prod(X.shape[1:])) != int(np.prod(shape)):
            raise DataError(f"evaluation features of shape {X.shape[1:]} do not fit the model input {shape}",
                            hint="pass data with one row per sample in the model's input layout")
        X = X.reshape(len(X), *shape)
    y = getattr(dataset, "labels_data", None)
    if y is not None:
        y = np.asarray(y)
        if model_type == "classifier" and y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    names = [str(n) for n in (dataset.feature_names or [])] or None
    image = X.ndim >= 3
    return Dataset(X=X, y=y, feature_names=None if image else names, modality="image" if image else "tabular",
                   source=f"mlflow evaluation dataset {getattr(dataset, 'name', '') or ''}".strip())


def _input_shape(model: Any) -> tuple[int | None, ...] | None:
    """The model's per-sample input shape from its MLflow signature (tensor specs only)."""
    meta = getattr(model, "metadata", None)
    schema = meta.get_input_schema() if meta is not None and hasattr(meta, "get_input_schema") else None
    if schema is not None and schema.is_tensor_spec() and len(schema.inputs) == 1:
        shape = tuple(schema.inputs[0].shape)
        return tuple(None if d == -1 else int(d) for d in shape[1:])
    return None


# --------------------------------------------------------------------------------------------- evaluator
class GovernanceEvaluator(ModelEvaluator):
    """``evaluators=["governance"]``: run governance explanation methods on the evaluation dataset."""

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: dict[str, Any] | None, **kwargs: Any) -> bool:
        return model_type in MODEL_TYPES

    def evaluate(self, *, model_type: str, dataset: Any, run_id: str, evaluator_config: dict[str, Any] | None,
                 model: Any = None, extra_metrics: Any = None, custom_artifacts: Any = None,
                 predictions: Any = None, **kwargs: Any) -> EvaluationResult:
        import mlflow

        from governance.host.plugins import get_plugin_host
        from governance.run.execute import MethodInputs, plan_methods, run_methods
        from governance.run.sink import MlflowSink

        spec = parse_evaluator_config(evaluator_config)
        if model is None:
            raise ConfigError("the governance evaluator explains a model; mlflow.models.evaluate got only "
                              "predictions", hint="pass model=<model URI or pyfunc model>")
        host = get_plugin_host(allow=list(spec.plugins)) if spec.plugins is not None else get_plugin_host()
        planned = plan_methods(host, spec.methods, spec.method_settings(), where="evaluator_config['config']")
        tracking_uri = mlflow.get_tracking_uri()
        sink = MlflowSink(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="governance-eval-") as tmp:
            root = Path(tmp)
            loaded, data, notes = self._model_and_data(model, dataset, model_type, spec, kwargs, host,
                                                       tracking_uri, root)
            model_id = kwargs.get("model_id") or loaded.info.model_id
            outcome = run_methods(planned, MethodInputs(model=loaded, data=data, seed=spec.seed, workdir=root,
                                                        options={"tracking_uri": tracking_uri, "run_id": run_id}),
                                  upload=lambda expl, folder: sink.log_explanation(run_id, expl, folder, model_id))
            self._log_summary(sink, run_id, root, loaded, data, spec, model_type, notes, outcome)
        artifact_root = sink.client.get_run(run_id).info.artifact_uri.rstrip("/")
        metrics, artifacts = {}, {}
        for expl in outcome.explanations:
            metrics.update({f"{expl.method}.{m}": float(v) for m, v in expl.metrics.items()
                            if isinstance(v, (int, float)) and np.isfinite(v)})
            artifacts.update(self._artifacts(expl, f"{artifact_root}/explanations/{expl.method}"))
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)

    @staticmethod
    def _model_and_data(model: Any, dataset: Any, model_type: str, spec: RunSpec, kwargs: dict[str, Any],
                        host: Any, tracking_uri: str, root: Path) -> tuple[LoadedModel, Dataset, list[str]]:
        """The richest loaded model and the evaluation data in its input shape, capped at max_samples."""
        data = evaluation_dataset(dataset, _input_shape(model), model_type)
        loaded, notes = resolve_loaded_model(
            model, kwargs.get("model_id"), sample_shape=data.sample_shape, feature_names=data.feature_names,
            tracking_uri=tracking_uri, download_dir=root / "_model", device=spec.device,
            batch_size=spec.batch_size, host=host)
        if loaded.input_spec.sample_shape and data.sample_shape != tuple(loaded.input_spec.sample_shape):
            data = evaluation_dataset(dataset, tuple(loaded.input_spec.sample_shape), model_type)
        if len(data) > spec.max_samples:
            data = data.subset(spec.max_samples, np.random.default_rng(spec.seed))
        return loaded, data, notes

    @staticmethod
    def _log_summary(sink: Any, run_id: str, root: Path, loaded: LoadedModel, data: Dataset, spec: RunSpec,
                     model_type: str, notes: list[str], outcome: Any) -> None:
        summary = {
            "schema": "governance.evaluation/1",
            "model": {**loaded.info.to_dict(), "runtime": loaded.describe(), "resolution_notes": notes},
            "data": data.describe(), "config": spec.to_dict(), "model_type": model_type,
            "explanations": [e.to_dict() for e in outcome.explanations],
        }
        (root / "evaluation.json").write_text(json.dumps(summary, indent=2, default=str))
        sink.log_file(run_id, root / "evaluation.json", "governance")
        sink.client.set_tag(run_id, "governance.evaluator.status", outcome.status)
        sink.client.set_tag(run_id, "governance.evaluator.methods", ",".join(e.method for e in outcome.explanations))
        if outcome.status != "ok":
            log.warning("governance evaluator: %s", "; ".join(f"{e.method}: {e.reason}" for e in outcome.explanations
                                                              if e.status == "failed"))

    @staticmethod
    def _artifacts(expl: Any, base_uri: str) -> dict[str, Any]:
        from mlflow.models.evaluation.artifacts import ImageEvaluationArtifact, JsonEvaluationArtifact

        out: dict[str, Any] = {f"{expl.method}_summary": JsonEvaluationArtifact(uri=f"{base_uri}/summary.json")}
        for name, path in expl.figures.items():
            out[f"{expl.method}_{name}"] = ImageEvaluationArtifact(uri=f"{base_uri}/{Path(path).name}")
        return out
