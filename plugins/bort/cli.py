"""``governance retrain``: fine-tune a registered torch model with Bort and register the new version (pt2 format).

Only click is imported here; torch and MLflow are imported when the command runs. The options map one to one onto
the fields of :class:`~governance_plugins.bort.retrain.RetrainOptions` (a test checks it).
"""

from __future__ import annotations

from typing import Any

import click

from governance_plugins.bort.constants import OPTIMIZERS


def _amplitude(_ctx: Any, _param: Any, value: str) -> float | str:
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
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".npz file with arrays X (inputs, batch first) and y (integer labels, or float targets).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="bort", show_default=True,
              help="bort = bort-adamw (BortAdamW); bort-sgd = BortSGD; adamw/sgd = the plain optimizer as a baseline.")
@click.option("--strength", type=float, default=None,
              help="Bort strength gamma (required for Bort: there is no default). The pull per step is lr*strength "
                   "and needs about 1e-2 to show: e.g. 10 for bort at lr 1e-3, 0.1 for bort-sgd at lr 0.05 with "
                   "momentum 0.9 (1e-2 for bort at lr 1e-3 changes D_orth by about 2 %).")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD forms only.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="Weight decay competes with Bort: it must stay below strength*amplitude.")
@click.option("--amplitude", default="1.0", show_default=True, callback=_amplitude,
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
@click.option("--trust-pickle", is_flag=True,
              help="Allow a parent stored as a pickle: loading it runs any code it contains. The new version is "
                   "always written as pt2.")
def retrain_cmd(model_uri: str, data: str, **options: Any) -> None:
    """Fine-tune MODEL_URI (a registered PyTorch model) with the Bort optimizer and register the result as a
    new version in MLflow's pt2 format (never a pickle), with its weight audit (distance from bounded-orthogonal)
    as tags and artifacts, and what Bort bought and cost.

    \b
    Example:
      governance retrain models:/digits/1 --optimizer bort --strength 10 --data digits.npz --epochs 5
    """
    from governance_plugins.bort.retrain import STRENGTH_HINT, RetrainOptions, retrain

    if options["optimizer"].startswith("bort") and options["strength"] is None:
        raise click.UsageError("--strength is required with a Bort optimizer: there is no default, because the "
                               f"reference default 0 switches Bort off. Hint: {STRENGTH_HINT}.")
    res = retrain(model_uri, data, RetrainOptions(**options), echo=click.echo)
    m = res.metrics
    score = "val_accuracy" if "val_accuracy" in m else "val_mse"
    click.echo(f"registered {res.model_uri} (run {res.run_id}, pt2 format), fine-tuned from {res.parent_uri} "
               f"with {res.optimizer}")
    click.echo(f"  {score}: {m[score + '_parent']:.4g} -> {m[score]:.4g}")
    click.echo(f"  mean D_orth (0 = bounded-orthogonal up to scale): {m['d_orth_mean_parent']:.4g} -> "
               f"{m['d_orth_mean']:.4g}")
    if "d_orth_constrained_mean" in m:
        click.echo(f"  mean D_orth of the constrained layers: {m['d_orth_constrained_mean_parent']:.4g} -> "
                   f"{m['d_orth_constrained_mean']:.4g} (random weights: {m['d_orth_constrained_random']:.4g})")
    click.echo(f"  median condition number: {m['kappa_median_parent']:.4g} -> {m['kappa_median']:.4g}")
    click.echo(f"  {res.bought}")
