"""``governance train-interpretable``: FLINT by design from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def load_npz(path: str | Path) -> Any:
    """A labelled Dataset from an ``.npz`` with ``X`` (n, ...) and ``y`` (n,) and optionally ``class_names``
    and ``feature_names``. (n, H, W) arrays are read as one-channel images, (n, C, H, W) as images,
    (n, D) as tabular data."""
    import numpy as np

    from governance import Dataset
    from governance.errors import DataError

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"cannot read {path} as a numpy .npz archive: {exc}",
                        hint="save the data with numpy.savez(path, X=..., y=...)") from exc
    keys = {k.lower(): k for k in arrays}
    if "x" not in keys or "y" not in keys:
        raise DataError(f"{path} must hold arrays 'X' and 'y'; it has: {', '.join(arrays) or 'nothing'}",
                        hint="save the data with numpy.savez(path, X=inputs, y=class_indices)")
    X = np.asarray(arrays[keys["x"]], dtype=np.float32)
    y = np.asarray(arrays[keys["y"]])
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise DataError(f"X has shape {X.shape}; expected (n, features), (n, H, W) or (n, C, H, W)",
                        hint="reshape the inputs to one of those layouts")
    if not np.isfinite(X).all():
        raise DataError("X contains NaN or infinite values", hint="impute or drop them before training")
    names = lambda key: [str(v) for v in arrays[keys[key]].tolist()] if key in keys else None  # noqa: E731
    return Dataset(X=X, y=y, modality="image" if X.ndim == 4 else "tabular", source=str(path),
                   class_names=names("class_names"), feature_names=names("feature_names"))


@click.command("train-interpretable")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="an .npz with X (n, ...) and y (n,) class indices; optional class_names, feature_names")
@click.option("--name", required=True, help="registered model name of the predictor; the interpreter is "
              "registered as NAME-interpreter")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(1, 1000))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--n-attributes", default=None, type=click.IntRange(2, 1024), help="dictionary size J "
              "[default: about 2.5 × the number of classes]")
@click.option("--min-steps-per-epoch", default=250, show_default=True, type=click.IntRange(0),
              help="small datasets: repeat passes within an epoch until this many optimiser steps")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="share of the data held out for accuracy, fidelity and conciseness")
@click.option("--seed", default=121, show_default=True, type=int)
@click.option("--tracking-uri", default=None, help="MLflow tracking URI [default: MLFLOW_TRACKING_URI or MLflow's default]")
@click.option("--experiment", default="governance-interpretable", show_default=True, help="MLflow experiment")
def train_interpretable_cmd(data_path: str, name: str, epochs: int, batch_size: int, lr: float,
                            n_attributes: int | None, min_steps_per_epoch: int, holdout: float, seed: int,
                            tracking_uri: str | None, experiment: str) -> None:
    """Train a predictor and its FLINT interpreter jointly, and register both in MLflow.

    \b
    The predictor is a small CNN (images) or MLP (tabular data); the interpreter reads its hidden layers
    through J attributes and a linear classifier (Parekh et al., NeurIPS 2021). Registered models:
      NAME               the predictor (x -> class logits), audit it with `governance run models:/NAME/<v>`
      NAME-interpreter   x -> the interpreter's class logits
    The interpreter's files (reloadable with governance_plugins.interpreter.load_interpreter) are logged
    under the run's interpreter_files/.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from governance.errors import TrackingError
    from governance_plugins.interpreter.by_design import build_predictor, register_interpretable, train_interpretable

    ds = load_npz(data_path)
    n_classes = int(max(ds.y)) + 1 if ds.y is not None and len(ds.y) else 0
    import torch

    with torch.random.fork_rng(devices=[]):  # --seed also fixes the predictor's initial weights
        torch.manual_seed(seed)
        predictor, layers = build_predictor(ds.sample_shape, max(n_classes, 2))
    click.echo(f"training a {'CNN' if ds.modality == 'image' else 'MLP'} predictor and its interpreter on "
               f"{len(ds)} samples of shape {ds.sample_shape} ({n_classes} classes), taps: {', '.join(layers)}")

    def on_epoch(epoch: int, rec: dict[str, Any]) -> None:
        click.echo(f"  epoch {epoch:>3}/{epochs}: accuracy {rec['accuracy_predictor']:.3f}, "
                   f"interpreter {rec['accuracy_interpreter']:.3f}, fidelity {rec['fidelity']:.3f}")

    predictor, interpreter, metrics = train_interpretable(
        predictor, ds, layers=layers, n_attributes=n_attributes, epochs=epochs, batch_size=batch_size, lr=lr,
        min_steps_per_epoch=min_steps_per_epoch, holdout_fraction=holdout, seed=seed, on_epoch=on_epoch)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        uris = register_interpretable(
            predictor, interpreter, ds, name, metrics=metrics, experiment=experiment,
            params={"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "data": str(data_path),
                    "min_steps_per_epoch": min_steps_per_epoch, "holdout": holdout})
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"could not log or register the models at {mlflow.get_tracking_uri()}: "
                            f"{type(exc).__name__}: {exc}",
                            hint="check --tracking-uri / MLFLOW_TRACKING_URI and that the store is writable") from exc
    click.echo(f"held out ({metrics['n_heldout']} samples): predictor accuracy {metrics['accuracy_predictor']:.3f}, "
               f"interpreter accuracy {metrics['accuracy_interpreter']:.3f}, fidelity {metrics['fidelity']:.3f}, "
               f"CNS_g(2) {metrics.get('cns_g_tau_2', float('nan')):.2f}")
    click.echo(f"registered predictor:   {uris['predictor_uri']}")
    click.echo(f"registered interpreter: {uris['interpreter_uri']}")
    click.echo(f"MLflow run:             {uris['run_id']}")
