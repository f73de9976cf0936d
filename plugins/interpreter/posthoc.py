"""The post-hoc FLINT pipeline behind :class:`FlintMethod.explain`: plan, read the frozen model's activations
(cached, or streamed when the cache would not fit), train, evaluate against controls, visualise, save, log."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from governance.errors import MethodError
from governance import Explanation, MethodContext
from governance_plugins.interpreter.activations import (ActivationSource, StreamingActivations, build_cache,
                                                        bytes_per_sample, choose_default_layers, output_transform,
                                                        probe_activations)
from governance_plugins.interpreter.losses import GatedWeight, LossSchedule
from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec
from governance_plugins.interpreter.training import (Evaluation, FitOptions, evaluate_source, fit_posthoc,
                                                     single_thread_if_small)

def state_digest(module: Any) -> str:
    """sha256 over every tensor of ``module.state_dict()`` (names, dtypes, shapes and raw bytes)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def schedule_from(cfg: Any) -> LossSchedule:
    return LossSchedule(beta=GatedWeight(cfg.beta, cfg.beta_after), gamma=GatedWeight(cfg.gamma, cfg.gamma_after),
                        delta=GatedWeight(cfg.delta, cfg.delta_after),
                        sparsity=GatedWeight(cfg.sparsity, cfg.sparsity_after))


def split_indices(n: int, cfg: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) sample indices: at most ``max_samples`` in all, a held-out share for metrics."""
    if n < 20:
        raise MethodError(f"FLINT needs at least 20 input samples to train and evaluate an interpreter; got {n}",
                          hint="pass more in-distribution inputs with --data (labels are not needed)")
    take = rng.permutation(n)[: min(n, cfg.max_samples)]
    n_hold = int(min(cfg.max_holdout, max(1, round(len(take) * cfg.holdout_fraction))))
    n_hold = min(n_hold, len(take) - 10)
    return np.sort(take[n_hold:]), np.sort(take[:n_hold])


@dataclass
class Plan:
    """Everything fixed before training: samples, taps, the interpreter's spec, how activations are read."""

    X: np.ndarray  # the samples used, training rows first, then held-out rows
    train_idx: np.ndarray  # dataset indices of the training rows
    hold_idx: np.ndarray  # dataset indices of the held-out rows
    image: bool
    lo: float
    hi: float
    why_layers: str
    spec: InterpreterSpec
    fit: FitOptions
    dtype: torch.dtype
    streaming: bool  # True: the predictor is re-run on every mini-batch (the cache would not fit)
    cache_mib: float  # what the cache needs (or holds)
    labels_hold: np.ndarray | None  # true class indices of the held-out rows, when the data has them
    device: torch.device
    taus: tuple[float, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def x(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.X)).float().to(self.device)

    def step_floats(self) -> int:
        s = self.spec
        return self.fit.batch_size * (sum(math.prod(v) for v in s.layer_shapes) + math.prod(s.input_shape))


@dataclass
class Trained:
    """One interpreter trained on one predictor's activations, with its held-out evaluation."""

    interp: FlintInterpreter
    history: list[dict[str, Any]]
    ev: Evaluation
    seconds: float
    epoch_seconds: list[float]
    forward_calls: int  # predictor forward passes spent on this training (cache pass or streaming)


def run_posthoc(method: Any, ctx: MethodContext) -> Explanation:
    from governance_plugins.interpreter.assemble import PosthocResult, build_explanation
    from governance_plugins.interpreter.controls import run_controls
    from governance_plugins.interpreter.storage import save_and_log

    plan = make_plan(ctx)
    module = ctx.model.torch_module()
    digest_before = state_digest(module)
    t0 = time.perf_counter()
    source, transform, cache_seconds = read_activations(ctx.model, plan, ctx.progress)
    plan.spec.output_transform = transform
    main = train(plan, source, progress=lambda f, m: ctx.progress(0.2 + 0.45 * f, m))
    timings = {"cache_seconds": cache_seconds, "train_seconds": main.seconds}

    ctx.progress(0.66, "controls")
    t1 = time.perf_counter()
    controls = run_controls(ctx, plan, source, main)
    timings["controls_seconds"] = time.perf_counter() - t1
    del source

    ctx.progress(0.82, "interpreting")
    from governance_plugins.interpreter.presentation import visualise

    vis = visualise(ctx, plan, main)
    if "am_seconds" in vis:
        timings["am_seconds"] = vis["am_seconds"]
    digest_after = state_digest(module)
    if digest_after != digest_before:  # a bug, never an input problem: fail loudly
        raise RuntimeError("the predictor's weights changed during post-hoc FLINT; results are void")
    mlflow_model, warnings = save_and_log(method, ctx, main.interp, plan, main.ev)
    timings["total_seconds"] = time.perf_counter() - t0
    result = PosthocResult(plan=plan, main=main, controls=controls, vis=vis, timings=timings,
                           mlflow_model=mlflow_model, warnings=warnings, digest=digest_after)
    return build_explanation(method, ctx, result)


def make_plan(ctx: MethodContext) -> Plan:
    cfg, model, data = ctx.config, ctx.model, ctx.data
    X = model.check_input(data.X)
    train_idx, hold_idx = split_indices(len(X), cfg, ctx.rng)
    kind = InputKind(data.modality == "image" and X.ndim == 4, float(X.min()), float(X.max()))
    ctx.progress(0.02, "choosing hidden layers")
    taps = resolve_taps(model, cfg, X[train_idx[:4]], kind.image)
    dtype = torch.float16 if cfg.cache_dtype == "float16" else torch.float32
    all_idx = np.concatenate([train_idx, hold_idx])
    need_mib = bytes_per_sample(taps.shapes, dtype) * len(all_idx) / 2**20
    streaming, notes = cache_decision(cfg, taps.layers, len(all_idx), need_mib)
    spec = make_spec(ctx, X, taps, kind)
    fit = FitOptions(schedule=schedule_from(cfg), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     seed=int(ctx.seed), min_steps_per_epoch=cfg.min_steps_per_epoch)
    y = np.asarray(data.y) if data.y is not None else None
    labels = y[hold_idx].astype(np.int64) if y is not None and y.ndim == 1 and _integral(y) else None
    dev = torch.device(model.device if str(model.device).startswith("cuda") else "cpu")
    return Plan(X=X[all_idx], train_idx=train_idx, hold_idx=hold_idx, image=kind.image, lo=kind.lo, hi=kind.hi,
                why_layers=taps.why, spec=spec, fit=fit, dtype=dtype, streaming=streaming, cache_mib=need_mib,
                labels_hold=labels, device=dev, taus=tuple(cfg.taus), notes=notes)


def _integral(y: np.ndarray) -> bool:
    return np.issubdtype(y.dtype, np.integer) or bool(np.all(np.mod(y, 1) == 0))


def cache_decision(cfg: Any, layers: list[str], n: int, need_mib: float) -> tuple[bool, list[str]]:
    """Cache the activations in memory (one predictor pass in all) unless they do not fit ``max_cache_mb``;
    then stream them (one predictor pass per sample per epoch) and say so."""
    fits = need_mib <= cfg.max_cache_mb
    if cfg.activation_cache == "memory" and not fits:
        raise MethodError(
            f"caching the activations of {', '.join(layers)} for {n} samples needs {need_mib:.0f} MiB, "
            f"over max_cache_mb = {cfg.max_cache_mb:g}",
            hint="set activation_cache: auto (streams instead), lower max_samples, tap smaller (later) layers, "
                 "set cache_dtype: float16, or raise max_cache_mb")
    if cfg.activation_cache == "stream":
        return True, ["activations are streamed (activation_cache: stream): the model runs on every mini-batch"]
    if not fits:
        return True, [f"the activation cache would need {need_mib:.0f} MiB (over max_cache_mb = "
                      f"{cfg.max_cache_mb:g}), so the model is re-run on every mini-batch instead: slower, same result"]
    return False, []


@dataclass(frozen=True)
class InputKind:
    image: bool  # (C, H, W) images
    lo: float  # the data's range
    hi: float


@dataclass(frozen=True)
class Taps:
    """The layers read, why they were chosen, each one's per-sample shape, the model's outputs per sample."""

    layers: list[str]
    why: str
    shapes: list[list[int]]
    n_outputs: int


def resolve_taps(model: Any, cfg: Any, x_probe: np.ndarray, image: bool) -> Taps:
    """The layers to tap (configured or the default choice) and what they produce."""
    if cfg.layers:
        layers, why = list(dict.fromkeys(cfg.layers)), "layers given in the configuration"
    else:
        layers, why = choose_default_layers(model, x_probe, image)
    out, probe = probe_activations(model, x_probe[:2], layers)  # raises MethodError listing layers if unknown
    shapes = []
    for name in layers:
        a = probe.get(name)
        if not isinstance(a, torch.Tensor) or not a.is_floating_point() or a.dim() < 2 or a.shape[0] != len(x_probe[:2]):
            raise MethodError(f"layer '{name}' does not produce a float tensor with a batch axis",
                              hint="tap a layer whose output is one (batch, ...) float tensor")
        shapes.append([int(d) for d in a.shape[1:]])
    return Taps(layers, why, shapes, int(out.reshape(len(out), -1).shape[1]))


def make_spec(ctx: MethodContext, X: np.ndarray, taps: Taps, kind: InputKind) -> InterpreterSpec:
    from governance_plugins.interpreter.method import default_n_attributes

    cfg = ctx.config
    n_classes = 2 if taps.n_outputs == 1 else taps.n_outputs  # one output column: a binary logit or probability
    if n_classes < 2:
        raise MethodError("FLINT explains classifiers; the model has a single output that is not a class score",
                          hint="use a classifier that outputs one score per class")
    unit = kind.lo >= 0 and kind.hi <= 1
    reconstruction = (cfg.reconstruction if cfg.reconstruction != "auto"
                      else ("l1" if kind.image and not unit else "mse"))
    return InterpreterSpec(
        layers=taps.layers, layer_shapes=taps.shapes, n_classes=n_classes,
        n_attributes=cfg.n_attributes or default_n_attributes(n_classes), input_shape=list(X.shape[1:]),
        modality="image" if kind.image else "tabular", decoder_output="relu" if unit else "linear",
        reconstruction=reconstruction, input_range=[kind.lo, kind.hi], class_names=ctx.data.class_names,
        mode="post-hoc", source_model=ctx.model.info.uri, attribute_activation=cfg.attribute_activation,
    )


def read_activations(model: Any, plan: Plan, progress: Callable[[float, str], None],
                     transform: str | None = None) -> tuple[ActivationSource, str, float]:
    """The activation source over ``plan.X`` (cached in one gradient-free pass, or streamed), how the model's
    outputs become class logits (decided here unless given), and the seconds the cache pass took."""
    t0 = time.perf_counter()
    if plan.streaming:
        if transform is None:
            probe = build_cache(model, plan.X[:256], plan.spec.layers, batch_size=256)
            transform = output_transform(probe.outputs)
        return StreamingActivations(model, plan.X, plan.spec.layers, transform), transform, 0.0
    cache = build_cache(model, plan.X, plan.spec.layers, batch_size=model.default_batch_size, dtype=plan.dtype,
                        progress=lambda f: progress(0.05 + 0.15 * f, "caching hidden activations"))
    transform = transform or output_transform(cache.outputs)
    cache.with_class_logits(transform)
    if plan.device.type != "cpu":
        cache.acts = [a.to(plan.device) for a in cache.acts]
        cache.class_logits = cache.class_logits.to(plan.device)
    return cache, transform, time.perf_counter() - t0


def train(plan: Plan, source: ActivationSource, *, seed: int | None = None, targets: ActivationSource | None = None,
          progress: Callable[[float, str], None] | None = None) -> Trained:
    """Train an interpreter on the training rows of ``source`` (or of ``targets``, a source with other class
    logits: the permuted-target control) and evaluate it on the held-out rows of ``source``.

    ``seed`` seeds the initialisation and the mini-batch order (default: the run's seed)."""
    seed = plan.fit.seed if seed is None else int(seed)
    n_tr, x = plan.n_train, plan.x
    train_src, hold_src = (targets or source).rows(0, n_tr), source.rows(n_tr, len(plan.X))
    epoch_seconds: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        epoch_seconds.append(now - last[0])
        last[0] = now
        if progress is not None:
            progress(epoch / plan.fit.epochs, f"epoch {epoch}/{plan.fit.epochs}: fidelity {record['fidelity']:.3f}")

    options = replace(plan.fit, seed=seed, on_epoch=on_epoch)
    # one intra-op thread for tiny steps on the CPU, unless every step also runs the model (streaming)
    small = plan.step_floats() if plan.device.type == "cpu" and not plan.streaming else 1 << 40
    with torch.random.fork_rng(devices=[]), single_thread_if_small(small):
        torch.manual_seed(seed)
        interp = FlintInterpreter(plan.spec).to(plan.device)
        t0 = last[0] = time.perf_counter()
        history = fit_posthoc(interp, train_src, x[:n_tr], options, holdout=(hold_src, x[n_tr:]))
        seconds = time.perf_counter() - t0
        ev = evaluate_source(interp, hold_src, x[n_tr:], taus=plan.taus)
    calls = (train_src.forward_calls + hold_src.forward_calls if isinstance(source, StreamingActivations)
             else source.forward_calls)
    return Trained(interp, history, ev, seconds, epoch_seconds, calls)
