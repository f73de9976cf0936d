"""Fine-tune a registered torch model with Bort and register the result as a new version (spec B6.2).

``retrain()`` is what ``governance retrain MODEL_URI --optimizer bort`` runs: resolve the registered version,
load it, audit its weights, fine-tune it on ``X``/``y`` from an ``.npz`` file with BortAdamW or BortSGD (or the
plain optimizer, as a baseline), audit it again, and log the result in a new MLflow run registered as a new
version of the same name. The version carries ``governance.bort.*`` tags (optimizer, strength, parent, D_orth
before/after), and the run holds the audit table and figure as artifacts. Fine-tuning a pretrained model with Bort
is a proposal of the spec, not something the paper evaluated.

The new version is always written in MLflow's **pt2** format (``torch.export`` through ``mlflow.pytorch.log_model``
with an input example of two samples, so the batch dimension stays dynamic), never as a pickle: loading a pickle
runs whatever code it contains, on every machine that ever loads it (``governance inspect``, the report worker). A
pt2 archive holds a graph and tensors, loads without the model's Python class, and MLflow checks it is free of
pickle payloads when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. Whether the fine-tuned model can be exported is
checked before anything is written. A *parent* stored as a pickle is refused unless the caller trusts it
(``--trust-pickle``), and never loaded when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from governance.errors import ConfigError, DataError, ModelLoadError, ModelResolutionError
from governance_plugins.bort import constants as T

OPTIMIZERS = T.OPTIMIZERS

#: strengths that measurably constrain in short fine-tunes (benchmarks/bench_bort.py --gamma-sweep): the pull per
#: step is lr*gamma (x 1/(1-momentum) for BortSGD); about 1e-2 is needed, 1e-5 barely moves D_orth (2 %)
STRENGTH_HINT = ("a measurable constraint needs a pull lr*gamma of about 1e-2 per step: e.g. --strength 10 with "
                 "--optimizer bort at --lr 1e-3, or --strength 0.1 with --optimizer bort-sgd at --lr 0.05 and "
                 "momentum 0.9 (measured on a digits MLP: BortAdamW gamma 1e-2 at lr 1e-3 leaves D_orth practically "
                 "where AdamW leaves it, 1.95 against 1.99; gamma 10 brings it to 0.19); keep lr*gamma below 1 and "
                 "compare D_orth and accuracy in the printed summary")


@dataclass(frozen=True)
class RetrainOptions:
    """Every setting of one ``governance retrain`` job (the CLI options, one field each)."""

    optimizer: str = "bort"
    strength: float | None = None
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    amplitude: float | str = 1.0
    include_classifier: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"
    register_as: str | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    trust_pickle: bool = False

    @property
    def is_bort(self) -> bool:
        return self.optimizer.startswith("bort")

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}'", hint=f"choose one of: {', '.join(OPTIMIZERS)}")
        if self.is_bort and self.strength is None:
            raise ConfigError("--strength is required with a Bort optimizer: it has no default (the reference "
                              "default 0 switches Bort off)", hint=STRENGTH_HINT)
        if self.is_bort and self.strength < 0:
            raise ConfigError(f"--strength must be >= 0, got {self.strength}", hint=STRENGTH_HINT)
        if not self.is_bort and self.strength:
            raise ConfigError(f"--strength applies to Bort optimizers only, not '{self.optimizer}'")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.val_fraction < 1:
            raise ConfigError("--epochs and --batch-size must be >= 1, --lr > 0 and 0 <= --val-fraction < 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device '{self.device}'", hint="use one of: auto, cpu, cuda")


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
    bought: str = ""  # what the fine-tune bought and cost, in words

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
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise DataError(f"{path.name}: X has dtype {X.dtype}, not real numbers", hint="store real numeric inputs")
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


def _torch_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was requested but torch sees no CUDA device",
                             hint="run on a machine with a CUDA build of torch, or use --device cpu/auto")
    return "cuda" if requested in ("cuda", "auto") and torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ model
def _is_fx(module: Any) -> bool:
    import torch

    return isinstance(module, torch.fx.GraphModule)


def stored_format(model_dir: Path) -> str:
    """"pt2", "pickle" or "unknown": how an MLflow pytorch model folder stores the model."""
    data = model_dir / "data"
    if (data / "model.pt2").exists():
        return "pt2"
    if (data / "model.pth").exists() or (data / "pickle_module_info.txt").exists():
        return "pickle"
    return "unknown"


def check_pickle_trust(uri: str, trust_pickle: bool) -> None:
    """Refuse to unpickle a parent unless the caller trusts it and MLflow's own switch allows it."""
    env = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "").strip().lower()
    if env in ("false", "0", "no"):
        raise ModelLoadError(
            f"{uri} is stored as a pickle and MLFLOW_ALLOW_PICKLE_DESERIALIZATION={env} forbids loading pickles",
            hint="re-log the parent in the pt2 format (mlflow.pytorch.log_model's default), or unset the variable "
                 "if you trust whoever registered it")
    if not trust_pickle:
        raise ModelLoadError(
            f"{uri} is stored as a pickle (data/model.pth): loading it runs any code whoever registered it put "
            "inside, with your permissions",
            hint="re-log the parent with mlflow.pytorch.log_model(..., serialization_format='pt2') (the default), or "
                 "pass --trust-pickle if you trust whoever registered it")


def load_parent(parent_uri: str, opts: RetrainOptions, device: str) -> tuple[Any, str]:
    """(the parent's torch module, its stored format), refusing untrusted pickles before they are opened."""
    import mlflow
    import mlflow.pytorch
    import torch

    with tempfile.TemporaryDirectory(prefix="governance-retrain-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=parent_uri, dst_path=tmp))
        except Exception as exc:
            raise ModelLoadError(f"cannot download {parent_uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                                 hint="check the model URI and that the artifact store is reachable") from exc
        fmt = stored_format(local)
        if fmt == "pickle":
            check_pickle_trust(parent_uri, opts.trust_pickle)
        try:
            module = mlflow.pytorch.load_model(str(local), map_location=torch.device(device))
        except Exception as exc:
            raise ModelLoadError(f"cannot load {parent_uri} as a PyTorch model: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0]}",
                                 hint="retrain works on models logged with mlflow.pytorch.log_model") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{parent_uri} did not load as a torch.nn.Module ({type(module).__name__})")
    return module, fmt


def check_exportable(module: Any, example: np.ndarray) -> None:
    """Export the model as ``mlflow.pytorch.log_model`` will (dynamic batch), before anything is written."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(example)).to(next(module.parameters()).device)
    try:
        torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as exc:
        raise ModelLoadError(
            f"the model cannot be exported with torch.export, so the fine-tuned version could not be written in the "
            f"pt2 format: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint="make the model's forward exportable (no data-dependent Python control flow); governance retrain "
                 "does not write pickles, which run code when loaded") from exc


def audit_module(module: Any, constrained: set[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, float], list[Any]]:
    """(per-layer rows, summary, audits) of a torch module's weights; ``constrained``: the parameter names counted
    as constrained (default: Bort's default selection, every Linear/Conv weight but the last linear layer)."""
    from governance_plugins.bort.audit import Split, audit_layers, summarize
    from governance_plugins.bort.layers import extract_layers, roles_from_torch

    params = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items() if v.dtype.is_floating_point}
    layers, _ = extract_layers(params, roles_from_torch(module) or None)
    audits = audit_layers(layers)
    split = Split.of(audits)
    if constrained is not None:
        split = Split(tuple(i for i, a in enumerate(audits) if a.name in constrained), split.classifier)
    return [a.row() for a in audits], summarize(audits, split), audits


def constrained_names(module: Any, opts: RetrainOptions) -> set[str]:
    """Names of the weights Bort constrains (or would, for a plain baseline fine-tune): the same layer group on
    both sides of a comparison."""
    import warnings

    from governance_plugins.bort.optim import make_bort_param_groups

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        groups = make_bort_param_groups(module, gamma=1.0, amplitude=opts.amplitude,
                                        exclude_classifier=not opts.include_classifier)
    ids = {id(p) for g in groups if g["gamma"] > 0 for p in g["params"]}
    return {n for n, p in module.named_parameters() if id(p) in ids}


def build_optimizer(module: Any, opts: RetrainOptions) -> Any:
    """The optimizer for ``module``: Bort groups per spec B2.6 (classifier excluded unless asked)."""
    import torch

    from governance_plugins.bort.optim import BortAdamW, BortSGD, make_bort_param_groups

    params = [p for p in module.parameters() if p.requires_grad]
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    groups = make_bort_param_groups(module, gamma=opts.strength, amplitude=opts.amplitude,
                                    exclude_classifier=not opts.include_classifier)
    if opts.optimizer in ("bort", "bort-adamw"):
        return BortAdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    return BortSGD(groups, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)


def _task(y: np.ndarray, n_out: int) -> str:
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        if y.ndim != 1:
            raise DataError(f"integer targets must be one label per sample, got shape {y.shape}")
        if y.min() < 0 or y.max() >= n_out:
            raise DataError(f"labels span {int(y.min())}..{int(y.max())} but the model has {n_out} outputs",
                            hint="use labels 0..n_classes-1 matching the model's output")
        return "classification"
    return "regression"


def scores(module: Any, X: Any, y: Any, task: str, batch: int = 512) -> np.ndarray:
    """Per-sample correctness (classification) or squared error (regression) on the validation split."""
    import torch

    with torch.no_grad():
        out = torch.cat([module(X[i: i + batch]) for i in range(0, len(X), batch)])
    if task == "classification":
        return (out.argmax(1) == y).double().cpu().numpy()
    return (out.reshape(y.shape) - y).double().square().reshape(len(y), -1).mean(1).cpu().numpy()


def fine_tune(module: Any, X: np.ndarray, y: np.ndarray, opt: Any, opts: RetrainOptions, *, device: str, task: str,
              on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Mini-batch training (cross-entropy or MSE) for ``opts.epochs`` epochs of ``opts.batch_size``; returns the
    mean loss per epoch."""
    epochs, batch_size, seed = opts.epochs, opts.batch_size, opts.seed
    import torch
    import torch.nn.functional as F

    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y).to(device)
    yt = yt.long() if task == "classification" else yt.float()
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
@dataclass
class _Job:
    """What one retrain job works on, gathered before anything is written."""

    opts: RetrainOptions
    name: str
    target: str
    parent_uri: str
    module: Any
    fmt_in: str
    X: np.ndarray
    y: np.ndarray
    data_sha: str
    task: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    device: str
    client: Any

    def val_tensors(self) -> tuple[Any, Any]:
        import torch

        Xv = torch.from_numpy(self.X[self.val_idx]).to(self.device)
        yv = torch.from_numpy(self.y[self.val_idx]).to(self.device)
        return Xv, (yv.long() if self.task == "classification" else yv.float())


def retrain(model_uri: str, data: str | Path, options: RetrainOptions | None = None, *,
            echo: Callable[[str], None] = lambda s: None, **overrides: Any) -> RetrainResult:
    """Fine-tune ``model_uri`` on ``data`` and register the result in the pt2 format (see the module docstring).
    ``overrides``: fields of :class:`RetrainOptions` (``retrain(uri, data, optimizer="bort", strength=10)``)."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(RetrainOptions)}
    if unknown:
        raise TypeError(f"retrain() got unknown options: {', '.join(sorted(unknown))}")
    opts = dataclasses.replace(options or RetrainOptions(), **overrides)
    opts.validate()
    job = _prepare(model_uri, data, opts, echo)
    from governance_plugins.bort.training import run_job

    return run_job(job, echo)


def _prepare(model_uri: str, data: str | Path, opts: RetrainOptions, echo: Callable[[str], None]) -> _Job:
    """Every check (options, data, parent, its format, exportability) before anything is written."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    dev = _torch_device(opts.device)
    if opts.tracking_uri:
        mlflow.set_tracking_uri(opts.tracking_uri)
    client = MlflowClient()
    X, y = load_npz(data)
    data_sha = hashlib.sha256(X.tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    if _URI.match(model_uri):
        name, parent_version = resolve_version(client, model_uri)
        parent_uri = f"models:/{name}/{parent_version}"
    elif not opts.register_as:
        raise ConfigError(f"'{model_uri}' is not a registered model, so the new version needs a name",
                          hint="pass --register-as NAME")
    else:
        name, parent_uri = opts.register_as, model_uri
    echo(f"loading {parent_uri}")
    module, fmt_in = load_parent(parent_uri, opts, dev)
    if not [p for p in module.parameters() if p.is_floating_point()]:
        raise ModelLoadError(f"{parent_uri} has no floating-point parameters to fine-tune")
    try:
        with torch.no_grad():
            probe = module(torch.from_numpy(X[:2]).to(dev))
    except Exception as exc:
        raise DataError(f"the model cannot run on X of shape {X.shape}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                        hint="X must have the model's input shape (batch first)") from exc
    n_out = int(np.prod(probe.shape[1:])) if probe.ndim > 1 else 1
    task = _task(y, n_out)
    check_exportable(module, X[:2])
    perm = np.random.default_rng(opts.seed).permutation(len(X))
    n_val = int(round(opts.val_fraction * len(X)))
    return _Job(opts, name, opts.register_as or name, parent_uri, module, fmt_in, X, y, data_sha, task,
                perm[n_val:], perm[:n_val], dev, client)


def reference_d_orth(module: Any, names: set[str], seed: int, draws: int = 5) -> tuple[float, float]:
    """(mean, band) of the weighted mean D_orth of the layers ``names`` for random weights of the same shapes."""
    from governance_plugins.bort.audit import Split
    from governance_plugins.bort.layers import extract_layers, roles_from_torch
    from governance_plugins.bort.reference import RandomReference

    params = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items() if v.dtype.is_floating_point}
    layers, _ = extract_layers(params, roles_from_torch(module) or None)
    split = Split(tuple(i for i, layer in enumerate(layers) if layer.name in names), None)
    ref = RandomReference.build(layers, split, seed=seed, draws=draws, amplitude=1.0, row_tolerance=0.1)
    band = ref.band("d_orth_constrained_mean")
    return band.mean, band.margin

