"""The writing half of ``governance retrain``: train inside a new MLflow run, log the audit, register the new
version in the pt2 format and tag it; every check has already passed (``retrain._prepare``)."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from governance.contract.results import jsonable
from governance_plugins.bort import constants as T
from governance_plugins.bort.retrain import (RetrainResult, audit_module, build_optimizer, constrained_names,
                                             fine_tune, reference_d_orth, scores)


def _log_params(job: Any, opt: Any) -> None:
    import mlflow

    o = job.opts
    mlflow.log_params({
        "optimizer": type(opt).__name__, "strength": o.strength, "epochs": o.epochs, "lr": o.lr,
        "batch_size": o.batch_size, "momentum": o.momentum if "sgd" in o.optimizer else None,
        "weight_decay": o.weight_decay, "amplitude": o.amplitude, "include_classifier": o.include_classifier,
        "val_fraction": o.val_fraction, "seed": o.seed, "parent": job.parent_uri, "data_sha256": job.data_sha,
        "n_train": len(job.train_idx), "n_val": len(job.val_idx), "format": "pt2", "parent_format": job.fmt_in,
        "train_mode": "inference (torch.export graph: BatchNorm and dropout frozen)" if job.fmt_in == "pt2"
        else "train",
    })
    mlflow.set_tags({"governance.kind": "retrain", T.TAG_PARENT: job.parent_uri})


def _paired_se(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.std(a - b, ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan


def bought_text(job: Any, m: dict[str, float], before: np.ndarray, after: np.ndarray) -> str:
    """What the fine-tune bought (orthogonality of the constrained layers) and what it cost (validation score),
    against the parent version."""
    name = "val_accuracy" if job.task == "classification" else "val_mse"
    what = "Bort" if job.opts.is_bort else f"the plain {job.opts.optimizer} fine-tune"
    text = (f"What {what} bought: D_orth of the {int(m.get('n_constrained_layers', 0))} constrained layers "
            f"{m['d_orth_constrained_mean_parent']:.3g} -> {m['d_orth_constrained_mean']:.3g} (random weights of "
            f"these shapes: {m['d_orth_constrained_random']:.3g} ± {m['d_orth_constrained_random_band']:.3g}); "
            f"D_abs {m['d_abs_constrained_mean_parent']:.3g} -> {m['d_abs_constrained_mean']:.3g}.")
    if len(job.val_idx) < 2:
        return text + " What it cost: not measured (no validation split; set --val-fraction)."
    diff = m[name] - m[f"{name}_parent"]
    se = _paired_se(after, before)
    unit, scale = ("points", 100.0) if name == "val_accuracy" else ("", 1.0)
    worse = diff < 0 if name == "val_accuracy" else diff > 0
    noise = "within the sampling noise" if not abs(diff) > 2 * se else ("a cost" if worse else "no cost, a gain")
    return text + (f" What it cost: {name} {m[f'{name}_parent']:.4g} -> {m[name]:.4g} on {len(job.val_idx)} held-out "
                   f"samples ({scale * diff:+.3g} {unit}; 2 standard errors {2 * scale * se:.2g}): {noise}. The parent "
                   "is the comparison; a plain fine-tune on the same data (--optimizer adamw or sgd) is the "
                   "like-for-like baseline.")


def _metrics(job: Any, sum_before: dict, sum_after: dict, before: np.ndarray, after: np.ndarray,
             seconds: float, names: set[str]) -> dict[str, float]:
    name = "val_accuracy" if job.task == "classification" else "val_mse"
    metrics = {f"{name}_parent": float(before.mean()) if len(before) else math.nan,
               name: float(after.mean()) if len(after) else math.nan, "train_seconds": seconds}
    for key in ("d_orth_mean", "d_abs_mean", "kappa_median", "d_orth_constrained_mean", "d_abs_constrained_mean",
                "fraction_within_bounds_constrained"):
        if key in sum_after:
            metrics[f"{key}_parent"], metrics[key] = sum_before.get(key, math.nan), sum_after[key]
    metrics["n_constrained_layers"] = sum_after.get("n_constrained_layers", 0.0)
    metrics["d_orth_constrained_random"], metrics["d_orth_constrained_random_band"] = reference_d_orth(
        job.module, names, job.opts.seed)
    return metrics


def _log_artifacts(job: Any, opt: Any, audits: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from governance_plugins.bort.plots import deviation_figure

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "bort_audit.json").write_text(json.dumps(jsonable(
            {"parent": job.parent_uri, "optimizer": type(opt).__name__, "strength": job.opts.strength,
             "summary_before": audits["sum_before"], "summary_after": audits["sum_after"],
             "layers_before": audits["rows_before"], "layers_after": audits["rows_after"]}), indent=2))
        before = audits["audits_before"]
        fig = deviation_figure(audits["audits_after"], None,
                               [(f"parent {job.parent_uri}", {a.name: a.d_orth for a in before})])
        fig.savefig(tmp_path / "bort_deviation.png", dpi=130, bbox_inches="tight")
        plt.close(fig)
        mlflow.log_artifacts(tmp, artifact_path="bort_audit")


def _log_model(job: Any) -> str:
    """Log the fine-tuned module in the pt2 format (torch.export, two-sample example: dynamic batch) and register
    it; returns the new version."""
    import mlflow.pytorch

    module = job.module.to("cpu")
    if not job.fmt_in == "pt2":
        for p in module.parameters():
            p.requires_grad_(False)
    info = mlflow.pytorch.log_model(module, name="model", input_example=job.X[:2], pip_requirements=["torch"],
                                    registered_model_name=job.target, serialization_format="pt2")
    return str(info.registered_model_version)


def _tag_version(job: Any, version: str, opt: Any, m: dict[str, float]) -> None:
    o, name = job.opts, ("val_accuracy" if job.task == "classification" else "val_mse")
    tags = {T.TAG_PARENT: job.parent_uri, T.TAG_D_ORTH: f"{m['d_orth_mean']:.6g}",
            T.TAG_D_ORTH_PARENT: f"{m['d_orth_mean_parent']:.6g}", f"{T.TAG_PREFIX}{name}": f"{m[name]:.6g}",
            f"{T.TAG_PREFIX}{name}_parent": f"{m[name + '_parent']:.6g}", f"{T.TAG_PREFIX}format": "pt2"}
    if o.is_bort:
        tags.update({T.TAG_OPTIMIZER: type(opt).__name__, T.TAG_GAMMA: f"{o.strength:g}",
                     T.TAG_AMPLITUDE: str(o.amplitude), T.TAG_INCLUDE_CLASSIFIER: str(o.include_classifier).lower()})
    else:
        tags[f"{T.TAG_PREFIX}baseline_optimizer"] = type(opt).__name__
    for k, v in tags.items():
        job.client.set_model_version_tag(job.target, version, k, v)


def run_job(job: Any, echo: Callable[[str], None]) -> RetrainResult:
    """Train and register (see the module docstring)."""
    import mlflow

    o = job.opts
    if job.fmt_in != "pt2":
        job.module.eval()
    for p in job.module.parameters():  # models are often saved frozen (requires_grad False): train them all
        p.requires_grad_(p.is_floating_point())
    names = constrained_names(job.module, o)
    rows_before, sum_before, audits_before = audit_module(job.module, names)
    if not rows_before:
        from governance.errors import ModelLoadError

        raise ModelLoadError(f"{job.parent_uri} has no Linear/Conv weights, so Bort has nothing to constrain")
    Xv, yv = job.val_tensors()
    before = scores(job.module, Xv, yv, job.task) if len(job.val_idx) else np.array([])
    opt = build_optimizer(job.module, o)
    if o.experiment:
        mlflow.set_experiment(o.experiment)
    with mlflow.start_run(run_name=f"retrain-{job.name}-{o.optimizer}") as run:
        _log_params(job, opt)
        if job.fmt_in == "pt2":
            echo("note: the model is a torch.export graph (pt2): it trains with BatchNorm statistics and dropout "
                 "frozen in inference mode")
        t0 = time.perf_counter()

        def on_epoch(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch + 1)
            echo(f"epoch {epoch + 1}/{o.epochs}: loss {loss:.4g}")

        fine_tune(job.module, job.X[job.train_idx], job.y[job.train_idx], opt, o, device=job.device, task=job.task,
                  on_epoch=on_epoch)
        rows_after, sum_after, audits_after = audit_module(job.module, names)
        after = scores(job.module, Xv, yv, job.task) if len(job.val_idx) else np.array([])
        m = _metrics(job, sum_before, sum_after, before, after, time.perf_counter() - t0, names)
        mlflow.log_metrics({k: v for k, v in m.items() if math.isfinite(v)})
        _log_artifacts(job, opt, {"sum_before": sum_before, "sum_after": sum_after, "rows_before": rows_before,
                                  "rows_after": rows_after, "audits_before": audits_before,
                                  "audits_after": audits_after})
        version = _log_model(job)
        bought = bought_text(job, m, before, after)
        mlflow.set_tag("governance.bort.bought", bought[:5000])
    _tag_version(job, version, opt, m)
    job.client.update_model_version(job.target, version, description=(
        f"Fine-tuned from {job.parent_uri} with {type(opt).__name__}"
        + (f" (strength {o.strength:g}, amplitude {o.amplitude})" if o.is_bort else "")
        + f" for {o.epochs} epochs on data sha256 {job.data_sha[:12]}; written as pt2. {bought}"))
    return RetrainResult(name=job.target, version=version, parent_uri=job.parent_uri, run_id=run.info.run_id,
                         optimizer=type(opt).__name__, metrics=m, audit_before=rows_before, audit_after=rows_after,
                         bought=bought)
