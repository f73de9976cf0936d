"""``governance retrain``: fine-tune a registered torch model with Bort and register the new version.

Only click is imported here; torch and MLflow are imported when the command runs.
"""

from __future__ import annotations

import click

from governance_plugins.bort.constants import OPTIMIZERS


def _amplitude(value: str) -> float | str:
    if value == "ada":
        return value
    try:
        v = float(value)
    except ValueError:
        raise click.BadParameter("a positive number or 'ada'") from None
    if not v > 0:
        raise click.BadParameter("a positive number or 'ada'")
    return v


@click.command("retrain")
@click.argument("model_uri")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="bort", show_default=True,
              help="bort = bort-adamw (BortAdamW); bort-sgd = BortSGD; adamw/sgd = the plain optimizer as a baseline.")
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".npz file with arrays X (inputs, batch first) and y (integer labels, or float targets).")
@click.option("--strength", type=float, default=None,
              help="Bort strength gamma (required for Bort: there is no default). The pull per step is "
                   "lr*strength: e.g. 10 for bort at lr 1e-3, 0.1 for bort-sgd at lr 0.05 with momentum 0.9.")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD forms only.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="Weight decay competes with Bort: it must stay below strength*amplitude.")
@click.option("--amplitude", default="1.0", show_default=True,
              help="Bort's target squared row norm c, or 'ada' (rows of equal norm, free scale).")
@click.option("--include-classifier", is_flag=True, help="Constrain the final Linear layer too (off by default: "
              "unit-norm rows cap the logit scale).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Held-out share of the data for the before/after score.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--register-as", default=None, help="Registered model name for the new version (default: the same name).")
@click.option("--experiment", default=None, help="MLflow experiment of the training run.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking store.")
def retrain_cmd(model_uri: str, optimizer: str, data: str, strength: float | None, epochs: int, lr: float,
                batch_size: int, momentum: float, weight_decay: float, amplitude: str, include_classifier: bool,
                val_fraction: float, seed: int, device: str, register_as: str | None, experiment: str | None,
                tracking_uri: str | None) -> None:
    """Fine-tune MODEL_URI (a registered PyTorch model) with the Bort optimizer and register the result as a
    new version, with its weight audit (distance from bounded-orthogonal) as tags and artifacts.

    \b
    Example:
      governance retrain models:/digits/1 --optimizer bort --strength 10 --data digits.npz --epochs 5
    """
    from governance_plugins.bort.retrain import retrain

    amp = _amplitude(amplitude)
    if optimizer.startswith("bort") and strength is None:
        raise click.UsageError(
            "--strength is required with a Bort optimizer: there is no default, because the reference default 0 "
            "switches Bort off. Try --strength 10 with --optimizer bort (lr 1e-3) or --strength 0.1 with "
            "--optimizer bort-sgd (lr 0.05, momentum 0.9), and compare D_orth and accuracy in the summary.")
    res = retrain(model_uri, data, optimizer=optimizer, strength=strength, epochs=epochs, lr=lr,
                  batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, amplitude=amp,
                  include_classifier=include_classifier, val_fraction=val_fraction, seed=seed, device=device,
                  register_as=register_as, experiment=experiment, tracking_uri=tracking_uri, echo=click.echo)
    m = res.metrics
    score = "val_accuracy" if "val_accuracy" in m else "val_mse"
    click.echo(f"registered {res.model_uri} (run {res.run_id}), fine-tuned from {res.parent_uri} with {res.optimizer}")
    click.echo(f"  {score}: {m[score + '_parent']:.4g} -> {m[score]:.4g}")
    click.echo(f"  mean D_orth (0 = bounded-orthogonal up to scale): {m['d_orth_mean_parent']:.4g} -> {m['d_orth_mean']:.4g}")
    if "d_orth_constrained_mean" in m:
        click.echo(f"  mean D_orth of the constrained layers: {m['d_orth_constrained_mean_parent']:.4g} -> "
                   f"{m['d_orth_constrained_mean']:.4g}")
    click.echo(f"  median condition number: {m['kappa_median_parent']:.4g} -> {m['kappa_median']:.4g}")
