"""FLINT by design: train a predictor and its interpreter jointly (A2.1 "FLINT trains (f, Ψ, h, d) jointly")
and register both in MLflow.

Python API::

    from governance_plugins.interpreter import train_interpretable, register_interpretable
    predictor, interpreter, metrics = train_interpretable(predictor, dataset)      # dataset needs labels
    uris = register_interpretable(predictor, interpreter, dataset, name="digits-flint", metrics=metrics)

Registration writes two registered models (see :func:`register_interpretable`): ``NAME`` (the predictor,
x → class logits) and ``NAME-interpreter`` (x → the interpreter's class logits, predictor trunk included),
both in MLflow's pt2 format, which loads without this package.
"""

from __future__ import annotations

import math
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from governance.errors import DataError
from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter.activations import pick_layers
from governance_plugins.interpreter.losses import LossSchedule
from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec
from governance_plugins.interpreter.training import (FitOptions, LayerTaps, evaluate, fit_joint,
                                                     single_thread_if_small)

#: reference seed for training (A2.3)
TRAIN_SEED = 121


def build_predictor(sample_shape: Sequence[int], n_classes: int) -> tuple[nn.Module, list[str]]:
    """A small predictor for the data and the layers FLINT taps.

    Images (C, H, W): the reference's LeNet-like MNIST network (A2.4): conv 3×3 → 16, ReLU, conv 3×3 → 32,
    MaxPool 2, Dropout 0.5, ReLU (tapped), FC 128, ReLU, Dropout, FC C. Anything else: an MLP
    D → 64 → 32 → C with both hidden ReLU outputs tapped."""
    if len(sample_shape) == 3:
        c, h, w = (int(d) for d in sample_shape)
        if h < 2 or w < 2:
            raise DataError(f"images of size {h}×{w} are too small for the CNN predictor",
                            hint="pass tabular data as (n, features) instead")
        net = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(c, 16, 3, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("pool", nn.MaxPool2d(2)), ("drop1", nn.Dropout(0.5)),
            ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(32 * (h // 2) * (w // 2), 128)), ("relu3", nn.ReLU()), ("drop2", nn.Dropout(0.5)),
            ("fc2", nn.Linear(128, n_classes)),
        ]))
        return net, ["relu2"]
    d = int(math.prod(sample_shape))
    net = nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(d, 64)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(64, 32)), ("relu2", nn.ReLU()), ("out", nn.Linear(32, n_classes)),
    ]))
    return net, ["relu1", "relu2"]


def default_layers(predictor: nn.Module, x_probe: torch.Tensor, image: bool) -> tuple[list[str], str]:
    """The same default taps as post-hoc mode, read with hooks on every named submodule."""
    names = [n for n, _ in predictor.named_modules() if n]
    was_training = predictor.training
    predictor.eval()
    try:
        with torch.no_grad():
            out, acts = LayerTaps(predictor, names)(x_probe)
    finally:
        predictor.train(was_training)
    return pick_layers(out, dict(zip(names, acts)), image, names, "the predictor")


def _check_dataset(dataset: Any) -> tuple[np.ndarray, np.ndarray, int]:
    if dataset.y is None:
        raise DataError("training an interpretable model needs labels", hint="pass a dataset with a 'y' array")
    X = np.asarray(dataset.X, dtype=np.float32)
    y = np.asarray(dataset.y)
    if not np.issubdtype(y.dtype, np.integer):
        if np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError("labels must be class indices (integers 0..C-1)", hint="encode the classes as 0..C-1")
    if len(X) != len(y):
        raise DataError(f"{len(X)} samples but {len(y)} labels", hint="X and y must have the same length")
    if y.min() < 0:
        raise DataError("labels must be class indices 0..C-1, found negative values", hint="re-encode the classes")
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise DataError("the labels contain a single class", hint="a classifier needs at least two classes")
    if len(X) < 20:
        raise DataError(f"{len(X)} samples are too few to train and evaluate", hint="pass at least 20 samples")
    return X, y.astype(np.int64), n_classes


@dataclass(frozen=True)
class JointOptions:
    """Options of :func:`train_interpretable`; every field can also be passed to it as a keyword.

    Defaults: the reference code's MNIST row (A2.3), its training seed, and the method's defaults for J, the
    held-out share and the extended epochs of small datasets."""

    layers: Sequence[str] | None = None  # default: the post-hoc method's choice of taps
    n_attributes: int | None = None  # default: about 2.5 × the number of classes
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-4
    schedule: LossSchedule | None = None
    min_steps_per_epoch: int = 250
    holdout_fraction: float = 0.2
    seed: int = TRAIN_SEED
    taus: Sequence[float] = M.DEFAULT_TAUS
    attribute_activation: str = "leaky_relu"
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None

    def fit_options(self) -> FitOptions:
        return FitOptions(schedule=self.schedule or LossSchedule(), epochs=self.epochs, batch_size=self.batch_size,
                          lr=self.lr, seed=self.seed, min_steps_per_epoch=self.min_steps_per_epoch,
                          on_epoch=self.on_epoch)


def train_interpretable(predictor: nn.Module, dataset: Any, options: JointOptions | None = None,
                        **overrides: Any) -> tuple[nn.Module, FlintInterpreter, dict[str, Any]]:
    """Train ``predictor`` and a FLINT interpreter together on a labelled ``dataset`` (governance Dataset).

    Loss: ``L_pred + β·L_of + γ·L_if + δ·L_cd + λ_spa·L_sp`` with the reference MNIST weights and warm-up
    (A2.3), one Adam optimiser over both. A held-out share of the data (``holdout_fraction``) measures the
    predictor's and the interpreter's accuracy, fidelity and conciseness. ``options`` and/or keyword overrides
    (the fields of :class:`JointOptions`). Returns the predictor and the interpreter (both in eval mode) and the
    metrics (``history`` holds one record per epoch)."""
    if unknown := sorted(set(overrides) - set(JointOptions.__dataclass_fields__)):
        raise TypeError(f"train_interpretable() got unknown option(s) {', '.join(unknown)}; "
                        f"known: {', '.join(JointOptions.__dataclass_fields__)}")
    opts = replace(options or JointOptions(), **overrides)
    X, y, n_classes = _check_dataset(dataset)
    perm = np.random.default_rng(opts.seed).permutation(len(X))
    n_hold = max(1, min(len(X) - 10, round(len(X) * opts.holdout_fraction)))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    xt = torch.from_numpy(np.ascontiguousarray(X))
    yt = torch.from_numpy(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        taps, spec = _joint_spec(predictor, dataset, X, xt, n_classes, opts)
        interp = FlintInterpreter(spec)

        def evaluate_fn() -> dict[str, Any]:
            ev = _evaluate_joint(predictor, taps, interp, xt[hold], yt[hold], opts.taus)
            return {"fidelity": ev["fidelity"], "accuracy_predictor": ev["accuracy_predictor"],
                    "accuracy_interpreter": ev["accuracy_interpreter"], "cns_g_2": ev["cns"].get(2.0)}

        step_floats = opts.batch_size * (sum(math.prod(s) for s in spec.layer_shapes) + math.prod(X.shape[1:]))
        with single_thread_if_small(step_floats * 4):  # joint steps also run the predictor's forward/backward
            history = fit_joint(predictor, taps, interp, xt[train], yt[train], opts.fit_options(),
                                evaluate_fn=evaluate_fn)
    predictor.eval()
    interp.eval()
    final = _evaluate_joint(predictor, taps, interp, xt[hold], yt[hold], opts.taus)
    metrics: dict[str, Any] = {k: v for k, v in final.items() if k not in ("cns", "evaluation")}
    for tau, v in final["cns"].items():
        metrics[f"cns_g_tau_{tau:g}"] = v
    metrics.update({"n_train": int(len(train)), "n_heldout": int(len(hold)), "layers": list(spec.layers),
                    "n_attributes": spec.n_attributes, "history": history})
    return predictor, interp, metrics


def _joint_spec(predictor: nn.Module, dataset: Any, X: np.ndarray, xt: torch.Tensor, n_classes: int,
                opts: JointOptions) -> tuple[LayerTaps, InterpreterSpec]:
    """The taps on the predictor and the interpreter's spec (checks that the predictor has C outputs)."""
    from governance_plugins.interpreter.method import default_n_attributes

    image = X.ndim == 4
    lo, hi = float(X.min()), float(X.max())
    unit = lo >= 0 and hi <= 1
    layers = list(opts.layers) if opts.layers is not None else default_layers(predictor, xt[:4], image)[0]
    taps = LayerTaps(predictor, layers)
    predictor.eval()
    with torch.no_grad():
        out, probe = taps(xt[:2])
    if out.shape[-1] != n_classes:
        raise DataError(f"the predictor has {out.shape[-1]} outputs but the labels have {n_classes} classes",
                        hint="build the predictor with one output per class")
    spec = InterpreterSpec(
        layers=layers, layer_shapes=[list(a.shape[1:]) for a in probe], n_classes=n_classes,
        n_attributes=opts.n_attributes or default_n_attributes(n_classes), input_shape=list(X.shape[1:]),
        modality="image" if image else "tabular", decoder_output="relu" if unit else "linear",
        reconstruction="l1" if image and not unit else "mse", input_range=[lo, hi],
        class_names=getattr(dataset, "class_names", None), mode="joint",
        attribute_activation=opts.attribute_activation,
    )
    return taps, spec


@torch.no_grad()
def _evaluate_joint(predictor: nn.Module, taps: LayerTaps, interp: FlintInterpreter, x: torch.Tensor,
                    y: torch.Tensor, taus: Sequence[float]) -> dict[str, Any]:
    was = predictor.training
    predictor.eval()
    f_logits, acts = taps(x)
    predictor.train(was)
    ev = evaluate(interp, acts, f_logits, x, taus=taus)
    yy = y.numpy()
    return {**ev.metrics, "accuracy_predictor": float((ev.f_pred == yy).mean()),
            "accuracy_interpreter": float((ev.g_pred == yy).mean()), "cns": ev.cns, "evaluation": ev}


class InterpretableModel(nn.Module):
    """x → the interpreter's class logits: the predictor up to its taps, then Ψ and h (for registration)."""

    def __init__(self, predictor: nn.Module, interpreter: FlintInterpreter) -> None:
        super().__init__()
        self.predictor = predictor
        self.interpreter = interpreter
        self.layers = list(interpreter.spec.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, acts = LayerTaps(self.predictor, self.layers)(x)
        return self.interpreter(acts)[0]


def register_interpretable(
    predictor: nn.Module,
    interpreter: FlintInterpreter,
    dataset: Any,
    name: str,
    *,
    metrics: dict[str, Any] | None = None,
    interpreter_name: str | None = None,
    experiment: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log both models in one MLflow run and register them as two registered models.

    * ``name``: the predictor, x → class logits (what ``governance run models:/NAME/<v>`` audits);
    * ``interpreter_name`` (default ``NAME-interpreter``): x → the interpreter's class logits;
    * the interpreter's own files (``interpreter.json`` + ``interpreter.pt``, reloadable with
      :func:`governance_plugins.interpreter.load_interpreter`) under the run's ``interpreter_files``.

    Each version is tagged with the other's URI (``governance.interpreter`` / ``governance.interprets``).
    Uses the active run when there is one, else starts one in ``experiment``."""
    import mlflow

    from governance_plugins.interpreter.storage import save_interpreter

    interpreter_name = interpreter_name or f"{name}-interpreter"
    predictor.eval()
    interpreter.eval()
    example = np.asarray(dataset.X[:4], dtype=np.float32)
    pip = [f"torch=={torch.__version__.split('+')[0]}"]
    own_run = mlflow.active_run() is None
    if own_run and experiment:
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=f"train-interpretable {name}") if own_run else mlflow.active_run()
    try:
        scalars = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and np.isfinite(v)}
        if scalars:
            mlflow.log_metrics(scalars)
        for h in (metrics or {}).get("history", []):
            mlflow.log_metrics({f"epoch.{k}": float(v) for k, v in h.items()
                                if k != "epoch" and isinstance(v, (int, float)) and v is not None and np.isfinite(v)},
                               step=int(h["epoch"]))
        mlflow.log_params({"method": "FLINT (joint)", "layers": ",".join(interpreter.spec.layers),
                           "n_attributes": interpreter.spec.n_attributes, **(params or {})})
        pred_info = mlflow.pytorch.log_model(predictor, name="predictor", input_example=example,
                                             registered_model_name=name, pip_requirements=pip)
        interp_info = mlflow.pytorch.log_model(
            InterpretableModel(predictor, interpreter).eval(), name="interpreter", input_example=example,
            registered_model_name=interpreter_name, pip_requirements=pip,
            metadata={"governance.kind": "flint-interpreter", "layers": interpreter.spec.layers})
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_interpreter(interpreter, Path(tmp) / "interpreter_files",
                                      extra={"predictor_model_uri": pred_info.model_uri})
            mlflow.log_artifacts(str(folder), artifact_path="interpreter_files")
        pv = str(pred_info.registered_model_version)
        iv = str(interp_info.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(name, pv, "governance.interpreter", f"models:/{interpreter_name}/{iv}")
        client.set_model_version_tag(interpreter_name, iv, "governance.interprets", f"models:/{name}/{pv}")
        client.set_model_version_tag(interpreter_name, iv, "governance.kind", "flint-interpreter")
        run_id = run.info.run_id
    except BaseException:
        if own_run:
            mlflow.end_run(status="FAILED")
        raise
    if own_run:
        mlflow.end_run()
    return {"run_id": run_id, "predictor_uri": f"models:/{name}/{pv}", "interpreter_uri": f"models:/{interpreter_name}/{iv}",
            "predictor_model_uri": pred_info.model_uri, "interpreter_model_uri": interp_info.model_uri,
            "interpreter_files": f"runs:/{run_id}/interpreter_files"}
