"""Fine-tune a registered torch model with Bort and register the result as a new version (spec B6.2).

``retrain()`` is what ``governance retrain MODEL_URI --optimizer bort`` runs: resolve the registered
version, load it with ``mlflow.pytorch.load_model``, audit its weights, fine-tune it on ``X``/``y`` from an
``.npz`` file with BortAdamW or BortSGD (or the plain optimizer, as a baseline), audit it again, and log the
result in a new MLflow run registered as a new version of the same name. The version carries
``governance.bort.*`` tags (optimizer, strength, parent, D_orth before/after), and the run holds the audit
table and figure as artifacts. Fine-tuning a pretrained model with Bort is a proposal of the spec, not
something the paper evaluated.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from governance.errors import ConfigError, DataError, ModelLoadError, ModelResolutionError
from governance.contract.results import jsonable
from governance_plugins.bort import constants as T

OPTIMIZERS = T.OPTIMIZERS


@dataclass
class RetrainResult:
    name: str
    version: str
    parent_uri: str
    run_id: str
    optimizer: str
    metrics: dict[str, float] = field(default_factory=dict)
    audit_before: list[dict[str, Any]] = field(default_factory=list)
    audit_after: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# ------------------------------------------------------------------------------------------------ inputs
def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (float32) and ``y`` from an ``.npz`` file; DataError naming what is missing."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"X", "y"} <= keys:
                raise DataError(f"{path.name} must hold arrays 'X' and 'y', found: {', '.join(sorted(keys)) or 'none'}",
                                hint="save it with numpy.savez(path, X=inputs, y=targets)")
            X, y = np.asarray(f["X"]), np.asarray(f["y"])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                        hint="pass an .npz file written by numpy.savez with arrays X and y") from exc
    if len(X) != len(y):
        raise DataError(f"{path.name}: X has {len(X)} samples but y has {len(y)}", hint="X and y must align")
    if len(X) < 4:
        raise DataError(f"{path.name} has only {len(X)} samples", hint="fine-tuning needs at least a few batches")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{path.name}: X has dtype {X.dtype}, not numbers", hint="store numeric inputs")
    return X.astype(np.float32, copy=False), y


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))$")


def resolve_version(client: Any, uri: str) -> tuple[str, str]:
    """(registered name, version) of ``models:/name/version``, ``models:/name/latest`` or ``models:/name@alias``."""
    m = _URI.match(uri)
    if not m:
        raise ModelResolutionError(
            f"'{uri}' is not a registered-model URI",
            hint="use models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    name = m["name"]
    try:
        if m["alias"]:
            mv = client.get_model_version_by_alias(name, m["alias"])
        elif m["version"] == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ModelResolutionError(f"registered model '{name}' has no versions")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, m["version"])
    except ModelResolutionError:
        raise
    except Exception as exc:
        raise ModelResolutionError(f"cannot resolve {uri}: {str(exc).splitlines()[0]}",
                                   hint="check the name and version with `mlflow models` or the MLflow UI") from exc
    return name, str(mv.version)


# ------------------------------------------------------------------------------------------------ model
def _is_fx(module: Any) -> bool:
    import torch

    return isinstance(module, torch.fx.GraphModule)


def audit_module(module: Any) -> tuple[list[dict[str, Any]], dict[str, float], list[Any]]:
    """(per-layer rows, summary, audits) of a torch module's weights."""
    from governance_plugins.bort.audit import audit_layers, summarize
    from governance_plugins.bort.layers import extract_layers, roles_from_torch

    params = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items() if v.dtype.is_floating_point}
    layers, _ = extract_layers(params, roles_from_torch(module) or None)
    audits = audit_layers(layers)
    rows = [a.row() for a in audits]
    return rows, summarize(audits), audits


def build_optimizer(module: Any, optimizer: str, *, strength: float | None, lr: float, momentum: float,
                    weight_decay: float, amplitude: float | str, include_classifier: bool) -> Any:
    """The optimizer for ``module``: Bort groups per spec B2.6 (classifier excluded unless asked)."""
    import torch

    from governance_plugins.bort.optim import BortAdamW, BortSGD, make_bort_param_groups

    params = [p for p in module.parameters() if p.requires_grad]
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    groups = make_bort_param_groups(module, gamma=strength, amplitude=amplitude,
                                    exclude_classifier=not include_classifier)
    if optimizer in ("bort", "bort-adamw"):
        return BortAdamW(groups, lr=lr, weight_decay=weight_decay)
    return BortSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _task(y: np.ndarray, n_out: int) -> str:
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        if y.ndim != 1:
            raise DataError(f"integer targets must be one label per sample, got shape {y.shape}")
        if y.min() < 0 or y.max() >= n_out:
            raise DataError(f"labels span {int(y.min())}..{int(y.max())} but the model has {n_out} outputs",
                            hint="use labels 0..n_classes-1 matching the model's output")
        return "classification"
    return "regression"


def _evaluate(module: Any, X: Any, y: Any, task: str, batch: int = 512) -> float:
    import torch

    with torch.no_grad():
        out = torch.cat([module(X[i: i + batch]) for i in range(0, len(X), batch)])
    if task == "classification":
        return float((out.argmax(1) == y).float().mean())
    return float(torch.nn.functional.mse_loss(out.reshape(y.shape), y))


def fine_tune(module: Any, X: np.ndarray, y: np.ndarray, opt: Any, *, epochs: int, batch_size: int, seed: int,
              device: str, task: str, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Mini-batch training (cross-entropy or MSE); returns the mean loss per epoch."""
    import torch
    import torch.nn.functional as F

    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y).to(device)
    if task == "classification":
        yt = yt.long()
    else:
        yt = yt.float()
    g = torch.Generator().manual_seed(seed)
    if not _is_fx(module):
        module.train()
    losses = []
    for epoch in range(epochs):
        perm = torch.randperm(len(Xt), generator=g).to(device)
        total, count = 0.0, 0
        for i in range(0, len(Xt), batch_size):
            idx = perm[i: i + batch_size]
            opt.zero_grad(set_to_none=True)
            out = module(Xt[idx])
            loss = F.cross_entropy(out, yt[idx]) if task == "classification" else F.mse_loss(out.reshape(yt[idx].shape), yt[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} in epoch {epoch + 1}: lower --lr "
                                         "or --strength")
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / count)
        if on_epoch:
            on_epoch(epoch, losses[-1])
    if not _is_fx(module):
        module.eval()
    return losses


# ------------------------------------------------------------------------------------------------ main
def retrain(
    model_uri: str,
    data: str | Path,
    *,
    optimizer: str = "bort",
    strength: float | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    amplitude: float | str = 1.0,
    include_classifier: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    register_as: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = lambda s: None,
) -> RetrainResult:
    """Fine-tune ``model_uri`` on ``data`` and register the result (see the module docstring)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from governance.host.runtimes.device import torch_device

    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'", hint=f"choose one of: {', '.join(OPTIMIZERS)}")
    is_bort = optimizer.startswith("bort")
    if is_bort and strength is None:
        raise ConfigError(
            "--strength is required with a Bort optimizer: it has no default (the reference default 0 switches "
            "Bort off)",
            hint="pass e.g. --strength 10 for bort/bort-adamw or --strength 0.1 for bort-sgd (momentum 0.9) in "
                 "short fine-tunes; lr*strength sets the pull per step (keep it below 1), compare D_orth and "
                 "accuracy in the printed summary")
    if is_bort and strength is not None and strength < 0:
        raise ConfigError(f"--strength must be >= 0, got {strength}")
    if not is_bort and strength:
        raise ConfigError(f"--strength applies to Bort optimizers only, not '{optimizer}'")
    if epochs < 1 or batch_size < 1 or lr <= 0 or not 0 <= val_fraction < 1:
        raise ConfigError("--epochs and --batch-size must be >= 1, --lr > 0 and 0 <= --val-fraction < 1")
    dev = torch_device(device)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()

    X, y = load_npz(data)
    data_sha = hashlib.sha256(X.tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    m = _URI.match(model_uri)
    if m:
        name, parent_version = resolve_version(client, model_uri)
        parent_uri = f"models:/{name}/{parent_version}"
    else:
        if not register_as:
            raise ConfigError(f"'{model_uri}' is not a registered model, so the new version needs a name",
                              hint="pass --register-as NAME")
        name, parent_version, parent_uri = register_as, None, model_uri
    target = register_as or name
    echo(f"loading {parent_uri}")
    try:
        module = mlflow.pytorch.load_model(parent_uri, map_location=torch.device(dev))
    except Exception as exc:
        raise ModelLoadError(f"cannot load {parent_uri} as a PyTorch model: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                             hint="retrain works on models logged with mlflow.pytorch.log_model") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{parent_uri} did not load as a torch.nn.Module ({type(module).__name__})")
    fx = _is_fx(module)
    trainable = [p for p in module.parameters() if p.is_floating_point()]
    if not trainable:
        raise ModelLoadError(f"{parent_uri} has no floating-point parameters to fine-tune")
    for p in trainable:
        p.requires_grad_(True)
    try:
        with torch.no_grad():
            probe = module(torch.from_numpy(X[:2]).to(dev))
    except Exception as exc:
        raise DataError(f"the model cannot run on X of shape {X.shape}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                        hint="X must have the model's input shape (batch first)") from exc
    n_out = int(np.prod(probe.shape[1:])) if probe.ndim > 1 else 1
    task = _task(y, n_out)

    # split
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_val = int(round(val_fraction * len(X)))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    Xtr, ytr = X[tr_idx], y[tr_idx]
    Xv = torch.from_numpy(X[val_idx]).to(dev)
    yv = torch.from_numpy(y[val_idx]).to(dev)
    if task == "classification":
        yv = yv.long()
    else:
        yv = yv.float()

    if not fx:
        module.eval()
    rows_before, sum_before, audits_before = audit_module(module)
    if not rows_before:
        raise ModelLoadError(f"{parent_uri} has no Linear/Conv weights, so Bort has nothing to constrain")
    score_before = _evaluate(module, Xv, yv, task) if n_val else math.nan
    opt = build_optimizer(module, optimizer, strength=strength, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          amplitude=amplitude, include_classifier=include_classifier)
    metric_name = "val_accuracy" if task == "classification" else "val_mse"
    if experiment:
        mlflow.set_experiment(experiment)
    fmt = "pt2" if fx else "pickle"
    with mlflow.start_run(run_name=f"retrain-{name}-{optimizer}") as run:
        mlflow.log_params({
            "optimizer": type(opt).__name__, "strength": strength, "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "momentum": momentum if "sgd" in optimizer else None,
            "weight_decay": weight_decay, "amplitude": amplitude, "include_classifier": include_classifier,
            "val_fraction": val_fraction, "seed": seed, "parent": parent_uri, "data_sha256": data_sha,
            "n_train": len(tr_idx), "n_val": n_val, "format": fmt,
            "train_mode": "inference (torch.export graph: BatchNorm and dropout frozen)" if fx else "train",
        })
        if fx:
            echo("note: the model is a torch.export graph (pt2): it trains with BatchNorm statistics and dropout "
                 "frozen in inference mode")
        mlflow.set_tags({"governance.kind": "retrain", T.TAG_PARENT: parent_uri})
        t0 = time.perf_counter()

        def on_epoch(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch + 1)
            echo(f"epoch {epoch + 1}/{epochs}: loss {loss:.4g}")

        fine_tune(module, Xtr, ytr, opt, epochs=epochs, batch_size=batch_size, seed=seed, device=dev, task=task,
                  on_epoch=on_epoch)
        seconds = time.perf_counter() - t0
        rows_after, sum_after, audits_after = audit_module(module)
        score_after = _evaluate(module, Xv, yv, task) if n_val else math.nan
        constrained = _constrained_names(module, opt)
        metrics = {
            f"{metric_name}_parent": score_before, metric_name: score_after,
            "d_orth_mean_parent": sum_before["d_orth_mean"], "d_orth_mean": sum_after["d_orth_mean"],
            "d_abs_mean_parent": sum_before["d_abs_mean"], "d_abs_mean": sum_after["d_abs_mean"],
            "kappa_median_parent": sum_before["kappa_median"], "kappa_median": sum_after["kappa_median"],
            "train_seconds": seconds,
        }
        if constrained:
            metrics["d_orth_constrained_mean_parent"] = _mean_d_orth(audits_before, constrained)
            metrics["d_orth_constrained_mean"] = _mean_d_orth(audits_after, constrained)
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "bort_audit.json").write_text(json.dumps(jsonable(
                {"parent": parent_uri, "optimizer": type(opt).__name__, "strength": strength,
                 "summary_before": sum_before, "summary_after": sum_after,
                 "layers_before": rows_before, "layers_after": rows_after}), indent=2))
            _write_figure(tmp_path / "bort_deviation.png", audits_after, audits_before, parent_uri)
            mlflow.log_artifacts(tmp, artifact_path="bort_audit")
        if not fx:
            for p in module.parameters():
                p.requires_grad_(False)
        example = X[:2]
        info = mlflow.pytorch.log_model(module, name="model", input_example=example, pip_requirements=["torch"],
                                        registered_model_name=target, serialization_format=fmt)
        version = str(info.registered_model_version)
    tags = {T.TAG_OPTIMIZER: type(opt).__name__, T.TAG_PARENT: parent_uri,
            T.TAG_D_ORTH: f"{sum_after['d_orth_mean']:.6g}", T.TAG_D_ORTH_PARENT: f"{sum_before['d_orth_mean']:.6g}",
            f"{T.TAG_PREFIX}{metric_name}": f"{score_after:.6g}",
            f"{T.TAG_PREFIX}{metric_name}_parent": f"{score_before:.6g}"}
    if is_bort:
        tags[T.TAG_GAMMA] = f"{strength:g}"
        tags[T.TAG_AMPLITUDE] = str(amplitude)
    else:
        tags = {k: v for k, v in tags.items() if k != T.TAG_OPTIMIZER}
        tags[f"{T.TAG_PREFIX}baseline_optimizer"] = type(opt).__name__
    for k, v in tags.items():
        client.set_model_version_tag(target, version, k, v)
    client.update_model_version(target, version, description=(
        f"Fine-tuned from {parent_uri} with {type(opt).__name__}"
        + (f" (strength {strength:g}, amplitude {amplitude})" if is_bort else "")
        + f" for {epochs} epochs on {Path(data).name} (sha256 {data_sha[:12]}). {metric_name}: "
        f"{score_before:.4g} -> {score_after:.4g}; mean D_orth {sum_before['d_orth_mean']:.3g} -> "
        f"{sum_after['d_orth_mean']:.3g}."))
    return RetrainResult(name=target, version=version, parent_uri=parent_uri, run_id=run.info.run_id,
                         optimizer=type(opt).__name__, metrics=metrics, audit_before=rows_before, audit_after=rows_after)


def _constrained_names(module: Any, opt: Any) -> set[str]:
    """Names of the parameters the optimizer constrains (groups with gamma > 0, at least 2-D)."""
    ids = {id(p) for g in opt.param_groups if g.get("gamma", 0) > 0 for p in g["params"] if p.ndim >= 2}
    return {n for n, p in module.named_parameters() if id(p) in ids}


def _mean_d_orth(audits: list, names: set[str]) -> float:
    chosen = [a for a in audits if a.name in names and math.isfinite(a.d_orth)]
    if not chosen:
        return math.nan
    return float(np.average([a.d_orth for a in chosen], weights=[a.n_params for a in chosen]))


def _write_figure(path: Path, after: list, before: list, parent: str) -> None:
    from governance_plugins.bort.plots import deviation_figure

    fig = deviation_figure(after, None, [(f"parent {parent}", {a.name: a.d_orth for a in before})])
    fig.savefig(path, dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
