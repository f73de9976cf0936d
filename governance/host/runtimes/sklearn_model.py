"""The ``sklearn``, ``lightgbm`` and ``xgboost`` MLflow flavors: converted to ONNX at load time (skl2onnx,
onnxmltools; the optional extra ``governance[sklearn]``) and run like any ONNX model, after the converted
graph's agreement with the native ``predict_proba`` (``predict`` for regressors) has been checked and
recorded. A model that cannot be converted, or whose conversion disagrees, runs forward-only through the
flavor's own predict function, and the run says so."""

from __future__ import annotations

import importlib.metadata as md
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from governance.contract.errors import ModelLoadError
from governance.contract.model import LoadedModel, ModelVersionInfo, TensorSpec
from governance.host.runtimes.parity import relative_parity

FLAVORS = ("sklearn", "lightgbm", "xgboost")
EXTRA_HINT = "pip install 'governance[sklearn]'"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def load_native(info: ModelVersionInfo, flavor: str) -> Any:
    """The flavor's own Python object (an estimator, a pipeline, a Booster)."""
    import importlib

    try:
        mod = importlib.import_module(f"mlflow.{flavor}")
        return mod.load_model(str(info.local_path))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(f"loading the {flavor} model needs the '{exc.name}' package, which is not installed",
                             hint=f"pip install {exc.name} (the version the model was trained with)") from exc
    except Exception as exc:
        raise ModelLoadError(f"could not load the {flavor} model from {info.uri}: {type(exc).__name__}: {exc}",
                             hint=f"check that it was logged with mlflow.{flavor}.log_model") from exc


def is_classifier(est: Any) -> bool:
    if hasattr(est, "predict_proba"):
        return True
    booster_objective = _booster_objective(est)
    return bool(booster_objective) and any(k in booster_objective for k in ("binary", "multi", "logistic", "softmax"))


def _booster_objective(est: Any) -> str:
    try:
        import lightgbm

        if isinstance(est, lightgbm.Booster):
            return str(est.params.get("objective", "") or est.dump_model().get("objective", ""))
    except ImportError:
        pass
    return ""


def n_features(est: Any) -> int:
    for attr in ("n_features_in_", "n_features_"):
        if getattr(est, attr, None) is not None:
            return int(getattr(est, attr))
    if hasattr(est, "num_feature"):
        return int(est.num_feature())
    raise ModelLoadError("cannot tell how many input features the model takes",
                         hint="log a fitted estimator (it has n_features_in_)")


def native_scores(est: Any, X: np.ndarray) -> np.ndarray:
    """What the methods explain, computed natively: class probabilities (n, classes) for a classifier,
    the predicted value (n, 1) for a regressor. A Booster's binary output p(class 1) becomes [1-p, p]."""
    if hasattr(est, "predict_proba"):
        return np.asarray(est.predict_proba(X), dtype=np.float64)
    out = np.asarray(est.predict(X), dtype=np.float64)
    if out.ndim == 1 and is_classifier(est):
        return np.stack([1 - out, out], axis=1)
    return out.reshape(len(X), -1)


# --------------------------------------------------------------------------------------------- conversion
def convert(est: Any, flavor: str, n_in: int) -> tuple[Any, str]:
    """(ONNX ModelProto, converter name and version). Raises whatever the converter raises."""
    if flavor in ("lightgbm", "xgboost") or _is_boosting(est):
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        types = [("input", FloatTensorType([None, n_in]))]
        kind = flavor if flavor in ("lightgbm", "xgboost") else _boosting_kind(est)
        fn = onnxmltools.convert_lightgbm if kind == "lightgbm" else onnxmltools.convert_xgboost
        kw = {"zipmap": False} if kind == "lightgbm" else {}
        return fn(est, initial_types=types, **kw), f"onnxmltools {_version('onnxmltools')}"
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    final = est.steps[-1][1] if hasattr(est, "steps") else est
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    proto = to_onnx(est, initial_types=[("input", FloatTensorType([None, n_in]))], options=options)
    return proto, f"skl2onnx {_version('skl2onnx')}"


def _boosting_kind(est: Any) -> str | None:
    mod = type(est).__module__
    return "lightgbm" if mod.startswith("lightgbm") else ("xgboost" if mod.startswith("xgboost") else None)


def _is_boosting(est: Any) -> bool:
    return _boosting_kind(est) is not None


def _probe(info: ModelVersionInfo, n_in: int) -> np.ndarray:
    """The logged input example's rows (when readable) and 32 standard-normal rows."""
    rows = [np.random.default_rng(0).standard_normal((32, n_in)).astype(np.float32)]
    if info.input_example_path is not None:
        try:
            from mlflow.models import Model

            ex = np.asarray(Model.load(str(info.local_path)).load_input_example(str(info.local_path)), dtype=np.float32)
            if ex.ndim == 2 and ex.shape[1] == n_in:
                rows.insert(0, ex)
        except Exception:
            pass
    return np.concatenate(rows)


def load_tabular_model(info: ModelVersionInfo, flavor: str, *, device: str, batch_size: int,
                       output: str | None = None, task: str | None = None,
                       trust_pickle: bool | None = None) -> LoadedModel:
    """Convert and check; fall back to the native predict function when that is not possible. A pickled
    estimator (MLflow's default for sklearn) is loaded only when pickle is trusted (``pickle_policy``)."""
    from governance.host.runtimes.pickle_policy import pickle_decision, refusal, tabular_pickle_file

    pickled = tabular_pickle_file(info.flavors.get(flavor) or {})
    decision = pickle_decision(explicit=trust_pickle) if pickled else None
    if decision is not None and not decision.allowed:
        raise refusal(info.display_name, f"is a pickled {flavor} model ({pickled})", decision,
                      fix=f"log it with mlflow.{flavor}.log_model(..., serialization_format='skops')"
                      + (" or as an ONNX model" if flavor == "sklearn" else " or in the library's own format"))
    est = load_native(info, flavor)
    n_in = n_features(est)
    native_task = "classification" if is_classifier(est) else "regression"
    try:
        proto, converter = convert(est, flavor, n_in)
    except ImportError as exc:
        return NativeModel(est, info, n_in, native_task, batch_size,
                           f"the converters are not installed ({exc.name}); {EXTRA_HINT} converts {flavor} "
                           "models to ONNX (gradient methods, ONNX Runtime speed)", task)
    except Exception as exc:
        return NativeModel(est, info, n_in, native_task, batch_size,
                           f"conversion to ONNX failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", task)
    from governance.host.runtimes.onnx_model import OnnxModel

    # beside the downloaded model (inside the job's working folder, removed with it), not loose in TMPDIR
    parent = info.local_path.parent if info.local_path is not None else None
    folder = Path(tempfile.mkdtemp(prefix="governance-converted-", dir=parent))
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    model = OnnxModel(path, info, device=device, batch_size=batch_size, output=output, task=task,
                      native_task=native_task)
    probe = _probe(info, n_in)
    parity = relative_parity(model.predict(probe), native_scores(est, probe))
    model.details.update({"converted_from": flavor, "converter": converter, "conversion_parity": parity.to_dict(),
                          "native_class": f"{type(est).__module__}.{type(est).__name__}"})
    what = "predict_proba" if native_task == "classification" else "predict"
    if not parity.ok:
        return NativeModel(est, info, n_in, native_task, batch_size,
                           f"the ONNX conversion ({converter}) disagrees with the native {what} "
                           f"({parity.describe()} on {len(probe)} probe rows)", task)
    model.notes.append(f"converted from the {flavor} flavor to ONNX at load time with {converter}; the graph's "
                       f"output '{model.output_spec.name}' agrees with the native {what} on {len(probe)} probe "
                       f"rows ({parity.describe()})")
    return model


class NativeModel(LoadedModel):
    """A tabular model run through its own ``predict_proba``/``predict``: forward-only (no gradients, no
    weights), for models that cannot be converted to ONNX."""

    runtime = "native"

    def __init__(self, est: Any, info: ModelVersionInfo, n_in: int, native_task: str, batch_size: int,
                 why: str, task: str | None = None) -> None:
        from governance.host.runtimes.outputs import TaskEvidence, detect_task

        self.info = info
        self.estimator = est
        self.default_batch_size = batch_size
        self.input_spec = TensorSpec("input", (None, n_in), "float32")
        width = native_scores(est, np.zeros((1, n_in), np.float32)).shape[1]
        self.output_spec = TensorSpec("predict_proba" if native_task == "classification" else "predict",
                                      (None, width), "float64")
        self.task, self.task_reason = detect_task(TaskEvidence(n_outputs=width, requested=task, native=native_task))
        what = "predict_proba" if native_task == "classification" else "predict"
        self.output_choice = {"name": what, "kind": "native", "reason": f"the estimator's own {what}",
                              "available": [what], "classes": None}
        self.torch_unavailable_reason = f"the model runs through its own {what} (forward only): {why}"
        self.no_parameters_reason = f"the model runs through its own {what}, which exposes no weight tensors"
        self.details = {"native_class": f"{type(est).__module__}.{type(est).__name__}", "fallback_reason": why}
        self.notes.append(f"forward-only through the native {what}: {why}")

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        return native_scores(self.estimator, x)
