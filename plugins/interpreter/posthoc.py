"""The post-hoc FLINT pipeline behind :class:`FlintMethod.explain`: sample, tap, cache, train, interpret,
visualise, save."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import numpy as np
import torch

from governance.errors import MethodError
from governance import Explanation, MethodContext
from governance_plugins.interpreter import metrics as M
from governance_plugins.interpreter.activations import (as_class_logits, build_cache, bytes_per_sample,
                                                        choose_default_layers, probe_activations)
from governance_plugins.interpreter.losses import GatedWeight, LossSchedule
from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec
from governance_plugins.interpreter.training import evaluate, fit_posthoc, single_thread_if_small

MODEL_FOLDER = "model"


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


def input_kind(data: Any, X: np.ndarray) -> tuple[bool, float, float]:
    image = data.modality == "image" and X.ndim == 4
    return image, float(X.min()), float(X.max())


def run_posthoc(method: Any, ctx: MethodContext) -> Explanation:
    cfg, model, data = ctx.config, ctx.model, ctx.data
    X = model.check_input(data.X)
    train_idx, hold_idx = split_indices(len(X), cfg, ctx.rng)
    image, lo, hi = input_kind(data, X)

    ctx.progress(0.02, "choosing hidden layers")
    layers, why_layers, shapes = resolve_taps(model, cfg, X[train_idx[:4]], image)
    all_idx = np.concatenate([train_idx, hold_idx])
    dtype = torch.float16 if cfg.cache_dtype == "float16" else torch.float32
    check_cache_size(layers, shapes, len(all_idx), dtype, cfg.max_cache_mb)

    # one gradient-free pass over the frozen predictor; nothing after this calls it for training
    module = model.torch_module()
    digest_before = state_digest(module)
    t0 = time.perf_counter()
    cache = build_cache(model, X[all_idx], layers, batch_size=model.default_batch_size, dtype=dtype,
                        progress=lambda f: ctx.progress(0.05 + 0.15 * f, "caching hidden activations"))
    timings = {"cache_seconds": time.perf_counter() - t0}
    class_logits, output_transform = as_class_logits(cache.outputs)
    spec = make_spec(cfg, model, data, X, layers, shapes, int(class_logits.shape[1]), output_transform, image, lo, hi)

    trained = train_interpreter(ctx, spec, cache, class_logits, X[all_idx], len(train_idx))
    timings["train_seconds"] = trained["seconds"]
    interp = trained["interp"]
    hold_acts, hold_logits, hold_x = trained["holdout"]
    ev = evaluate(interp, hold_acts, hold_logits.cpu(), hold_x, taus=cfg.taus)

    ctx.progress(0.82, "interpreting")
    vis = visualise(ctx, interp, ev, X[hold_idx], image, lo, hi, shapes, trained["history"])
    if "am_seconds" in vis:
        timings["am_seconds"] = vis["am_seconds"]

    digest_after = state_digest(module)
    if digest_after != digest_before:  # a bug, never an input problem: fail loudly
        raise RuntimeError("the predictor's weights changed during post-hoc FLINT; results are void")

    mlflow_model, warnings = save_and_log(method, ctx, interp, hold_acts, ev)
    return _explanation(method, ctx, spec=spec, ev=ev, vis=vis, hold_idx=hold_idx, train_idx=train_idx,
                        history=trained["history"], why_layers=why_layers, cache=cache, timings=timings,
                        epoch_seconds=trained["epoch_seconds"], mlflow_model=mlflow_model, warnings=warnings,
                        digest=digest_after, W=interp.W.cpu().numpy())


def resolve_taps(model: Any, cfg: Any, x_probe: np.ndarray, image: bool) -> tuple[list[str], str, list[list[int]]]:
    """The layers to tap (configured or the default choice), why, and each one's per-sample shape."""
    if cfg.layers:
        layers, why = list(dict.fromkeys(cfg.layers)), "layers given in the configuration"
    else:
        layers, why = choose_default_layers(model, x_probe, image)
    _, probe = probe_activations(model, x_probe[:2], layers)  # raises MethodError listing layers if unknown
    shapes = []
    for name in layers:
        a = probe.get(name)
        if not isinstance(a, torch.Tensor) or not a.is_floating_point() or a.dim() < 2 or a.shape[0] != len(x_probe[:2]):
            raise MethodError(f"layer '{name}' does not produce a float tensor with a batch axis",
                              hint="tap a layer whose output is one (batch, ...) float tensor")
        shapes.append([int(d) for d in a.shape[1:]])
    return layers, why, shapes


def check_cache_size(layers: list[str], shapes: list[list[int]], n: int, dtype: torch.dtype, limit_mb: float) -> None:
    need_mb = bytes_per_sample(shapes, dtype) * n / 2**20
    if need_mb > limit_mb:
        raise MethodError(
            f"caching the activations of {', '.join(layers)} for {n} samples needs {need_mb:.0f} MiB, "
            f"over max_cache_mb = {limit_mb:g}",
            hint="lower max_samples, tap smaller (later) layers, set cache_dtype: float16, or raise max_cache_mb")


def make_spec(cfg: Any, model: Any, data: Any, X: np.ndarray, layers: list[str], shapes: list[list[int]],
              n_classes: int, output_transform: str, image: bool, lo: float, hi: float) -> InterpreterSpec:
    if n_classes < 2:
        raise MethodError("FLINT explains classifiers; the model has a single output that is not a class score",
                          hint="use a classifier that outputs one score per class")
    unit = lo >= 0 and hi <= 1
    reconstruction = cfg.reconstruction if cfg.reconstruction != "auto" else ("l1" if image and not unit else "mse")
    return InterpreterSpec(
        layers=layers, layer_shapes=shapes, n_classes=n_classes, n_attributes=cfg.n_attributes or _default_J(n_classes),
        input_shape=list(X.shape[1:]), modality="image" if image else "tabular",
        decoder_output="relu" if unit else "linear", reconstruction=reconstruction, input_range=[lo, hi],
        class_names=data.class_names, mode="post-hoc", source_model=model.info.uri,
        output_transform=output_transform, attribute_activation=cfg.attribute_activation,
    )


def train_interpreter(ctx: MethodContext, spec: InterpreterSpec, cache: Any, class_logits: torch.Tensor,
                      X: np.ndarray, n_train: int) -> dict[str, Any]:
    """Train (Ψ, h, d) on the first ``n_train`` cached rows, evaluating on the rest after each epoch."""
    cfg, model = ctx.config, ctx.model
    dev = _device(model)
    tr, ho = torch.arange(n_train), torch.arange(n_train, len(X))
    x_all = torch.from_numpy(np.ascontiguousarray(X)).float().to(dev)
    acts = [a.to(dev) for a in cache.acts]
    logits = class_logits.to(dev)
    holdout = ([a[ho] for a in acts], logits[ho], x_all[ho])
    train_cache = type(cache)([a[tr] for a in acts], cache.outputs[tr], cache.layers, 0)
    epoch_seconds: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        epoch_seconds.append(now - last[0])
        last[0] = now
        ctx.progress(0.2 + 0.6 * epoch / cfg.epochs, f"epoch {epoch}/{cfg.epochs}: fidelity {record['fidelity']:.3f}")

    step_floats = cfg.batch_size * (sum(math.prod(s) for s in spec.layer_shapes) + math.prod(spec.input_shape))
    with torch.random.fork_rng(devices=[]), single_thread_if_small(step_floats if dev.type == "cpu" else 1 << 40):
        torch.manual_seed(int(ctx.seed))
        interp = FlintInterpreter(spec).to(dev)
        t0 = last[0] = time.perf_counter()
        history = fit_posthoc(interp, train_cache, logits[tr], x_all[tr], schedule=schedule_from(cfg),
                              epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                              generator=torch.Generator().manual_seed(int(ctx.seed)), holdout=holdout,
                              min_steps_per_epoch=cfg.min_steps_per_epoch, on_epoch=on_epoch)
        seconds = time.perf_counter() - t0
    return {"interp": interp, "history": history, "epoch_seconds": epoch_seconds, "seconds": seconds,
            "holdout": holdout}


def visualise(ctx: MethodContext, interp: FlintInterpreter, ev: Any, X_hold: np.ndarray, image: bool, lo: float,
              hi: float, shapes: list[list[int]], history: list[dict[str, Any]]) -> dict[str, Any]:
    """Global relevance, relevant pairs, MAS, local interpretations, AM+PI and their figures."""
    from governance_plugins.interpreter import visualise as V

    cfg, data = ctx.config, ctx.data
    names = data.class_names
    n_classes = interp.spec.n_classes
    R = M.global_relevance(ev.relevances, ev.g_pred, n_classes)
    pairs = M.relevant_pairs(R, cfg.relevance_threshold)
    pairs_note = None
    if not pairs:
        pairs = [(c, int(np.nanargmax(R[c])), float(np.nanmax(R[c]))) for c in range(n_classes)
                 if np.isfinite(R[c]).any() and np.nanmax(R[c]) > 0]
        pairs_note = (f"no class-attribute relevance exceeds {cfg.relevance_threshold:g}; the most relevant "
                      "attribute of each class is shown instead")
    pairs = pairs[: cfg.max_pairs]
    mas = V.max_activating(ev.phi, ev.g_pred, pairs, cfg.mas_per_pair)
    disagree = np.nonzero(ev.g_pred != ev.f_pred)[0]
    local_rows = _local_rows(len(X_hold), disagree, cfg.n_local)
    out: dict[str, Any] = {"R": R, "pairs": pairs, "pairs_note": pairs_note, "mas": mas, "disagree": disagree,
                           "local_rows": local_rows, "am": None, "am_settings": None, "am_pairs": [],
                           "am_skipped": []}
    figures = out["figures"] = {}
    figures["global_relevance"] = ctx.save_figure(V.plot_global_relevance(R, names, cfg.relevance_threshold),
                                                  "global_relevance")
    if len(local_rows):
        figures["local"] = ctx.save_figure(
            V.plot_local(X_hold[local_rows] if image else None, ev.relevances[local_rows], ev.f_pred[local_rows],
                         ev.g_pred[local_rows], names, lo, hi), "local")
    if pairs and image:
        figures["mas"] = ctx.save_figure(V.plot_mas(X_hold, mas, pairs, names, lo, hi), "mas")
    elif pairs:
        attrs = list(dict.fromkeys(j for _, j, _ in pairs))
        figures["profiles"] = ctx.save_figure(V.plot_profiles(X_hold, ev.phi, attrs, data.feature_names), "profiles")
    figures["training"] = ctx.save_figure(V.plot_training(history, ev.cns), "training")

    if image and cfg.am_pairs > 0 and pairs:
        ctx.progress(0.88, "activation maximisation")
        settings = V.AMSettings.for_range(lo, hi, rounds=cfg.am_rounds, steps=cfg.am_steps, lr=cfg.am_lr,
                                          clamp=cfg.am_clamp)
        t0 = time.perf_counter()
        floats = cfg.am_pairs * (sum(math.prod(s) for s in shapes) + math.prod(X_hold.shape[1:]))
        with single_thread_if_small(floats if _device(ctx.model).type == "cpu" else 1 << 40):
            starts, kept, skipped = V.live_starts(ctx.model, interp, X_hold, mas, pairs[: cfg.am_pairs],
                                                  settings.kappa)
            am = (V.activation_maximisation(ctx.model, interp, X_hold[starts], [j for _, j, _ in kept], settings)
                  if kept else None)
        out.update(am=am, am_settings=settings, am_pairs=kept, am_skipped=skipped,
                   am_seconds=time.perf_counter() - t0)
        if am is not None:
            figures["am"] = ctx.save_figure(V.plot_am(am, kept, names, lo, hi), "am")
    return out


def save_and_log(method: Any, ctx: MethodContext, interp: FlintInterpreter, example_acts: list[torch.Tensor],
                 ev: Any) -> tuple[dict[str, Any], list[str]]:
    """Save the interpreter in the method's folder (the host logs it) and, inside an active MLflow run, log
    it as a model of its own."""
    from governance_plugins.interpreter.storage import log_to_mlflow, save_interpreter

    cfg = ctx.config
    folder = save_interpreter(interp, ctx.workdir / MODEL_FOLDER, extra={
        "method": method.name, "method_version": method.version, "seed": int(ctx.seed),
        "config": cfg.model_dump(), "fidelity": ev.metrics["fidelity"]})
    warnings: list[str] = []
    if cfg.log_model:
        try:
            info = log_to_mlflow(interp, example_acts, folder, name="interpreter", registered_model_name=cfg.register_as,
                                 tags={"governance.interprets": ctx.model.info.uri})
        except Exception as exc:  # the interpretations stand; only the extra MLflow copy is missing
            info = {"logged": False, "reason": f"{type(exc).__name__}: {exc}"}
            warnings.append(f"the interpreter could not be logged as an MLflow model: {type(exc).__name__}: {exc}")
    else:
        info = {"logged": False, "reason": "log_model is off"}
    info.update({"files": f"{MODEL_FOLDER}/interpreter.json, {MODEL_FOLDER}/interpreter.pt",
                 "reload": "governance_plugins.interpreter.load_interpreter(<folder>)"})
    return info, warnings


def _device(model: Any) -> torch.device:
    return torch.device(model.device if str(model.device).startswith("cuda") else "cpu")


def _default_J(n_classes: int) -> int:
    from governance_plugins.interpreter.method import default_n_attributes

    return default_n_attributes(n_classes)


def _local_rows(n: int, disagree: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` held-out samples, with one disagreement among them when there is one."""
    rows = list(range(min(n, k)))
    if k and len(disagree) and not set(rows) & set(disagree.tolist()):
        rows[-1] = int(disagree[0])
    return np.asarray(sorted(set(rows)), dtype=np.int64)


def _label(c: int, names: list[str] | None) -> str:
    return str(names[c]) if names and c < len(names) else str(c)


def _explanation(method: Any, ctx: MethodContext, *, spec: InterpreterSpec, ev: Any, vis: dict[str, Any],
                 hold_idx: np.ndarray, train_idx: np.ndarray, history: list, why_layers: str, cache: Any,
                 timings: dict, epoch_seconds: list, mlflow_model: dict, warnings: list, digest: str,
                 W: np.ndarray) -> Explanation:
    R, pairs, mas, disagree, local_rows = vis["R"], vis["pairs"], vis["mas"], vis["disagree"], vis["local_rows"]
    am, am_settings, am_pairs, am_skipped = vis["am"], vis["am_settings"], vis["am_pairs"], vis["am_skipped"]
    pairs_note, figures = vis["pairs_note"], vis["figures"]
    cfg, data = ctx.config, ctx.data
    names = data.class_names
    J, C = spec.n_attributes, spec.n_classes
    metrics: dict[str, float] = {k: float(v) for k, v in ev.metrics.items()}
    for tau, v in ev.cns.items():
        metrics[f"cns_g_tau_{tau:g}"] = float(v)
    metrics["n_attributes"] = float(J)
    metrics["n_disagreements"] = float(len(disagree))
    metrics["n_heldout"] = float(len(hold_idx))
    metrics["n_relevant_pairs"] = float(len(M.relevant_pairs(R, cfg.relevance_threshold)))
    metrics["cache_seconds"] = float(timings["cache_seconds"])
    metrics["train_seconds_per_epoch"] = float(np.mean(epoch_seconds)) if epoch_seconds else float("nan")
    metrics["predictor_forward_calls"] = float(cache.forward_calls)
    y_all = np.asarray(data.y) if data.y is not None else None
    if y_all is not None and y_all.ndim == 1 and np.issubdtype(y_all.dtype, np.integer):  # class indices only
        y = y_all[hold_idx]
        metrics["accuracy_predictor"] = float((ev.f_pred == y).mean())
        metrics["accuracy_interpreter"] = float((ev.g_pred == y).mean())
    if am is not None:
        metrics["am_outside_fraction"] = float(np.mean(am["outside_fraction"]))

    tau2 = ev.cns.get(2.0)
    fid = ev.metrics["fidelity"]
    summary = (f"A FLINT interpreter with {J} attributes read from {', '.join(spec.layers)} was trained on the frozen "
               f"model and reproduces its decisions on {fid:.1%} of {len(hold_idx)} held-out inputs")
    summary += f"; a decision is explained by {tau2:.2f} attributes on average (CNS_g(2))." if tau2 is not None else "."

    findings = [f"Fidelity: the interpreter agrees with the model on {fid:.1%} of held-out inputs "
                f"({len(disagree)} disagreement{'s' if len(disagree) != 1 else ''})."]
    if tau2 is not None:
        findings.append(f"Conciseness: {tau2:.2f} of {J} attributes have relevance above 0.5 in a typical decision.")
    by_class: dict[int, list[tuple[int, float]]] = {}
    for c, j, r in M.relevant_pairs(R, cfg.relevance_threshold):
        by_class.setdefault(c, []).append((j, r))
    for c in sorted(by_class, key=lambda c: -max(r for _, r in by_class[c]))[:5]:
        tops = ", ".join(f"φ{j} ({r:.2f})" for j, r in sorted(by_class[c], key=lambda t: -t[1])[:3])
        findings.append(f"Class {_label(c, names)} is explained mainly by {tops}.")
    dead = M.dead_attributes(ev.phi)
    if len(dead):
        warnings.append(f"{len(dead)} of {J} attributes are never active on held-out data (dead attributes: "
                        f"{', '.join(map(str, dead[:12]))}{'…' if len(dead) > 12 else ''}).")
    if fid < 0.9:
        warnings.append(f"fidelity is only {fid:.1%}: the interpretations describe a model that often decides "
                        "differently from the audited one; train longer (epochs) or with a larger lr.")
    if pairs_note:
        warnings.append(pairs_note)
    if spec.output_transform != "logits":
        warnings.append(f"the model's outputs were read as {spec.output_transform}.")
    if am is not None and not am_settings.clamp:
        out = float(np.mean(am["outside_fraction"]))
        if out > 0.05:
            warnings.append(f"{out:.0%} of activation-maximisation pixels lie outside the data range "
                            f"[{am_settings.lo:g}, {am_settings.hi:g}] (shown clipped); set am_clamp to keep them inside.")

    ds_index = lambda rows: [int(hold_idx[r]) for r in rows]  # noqa: E731  (held-out row -> dataset index)
    pair_rows = [{"class": _label(c, names), "class_index": c, "attribute": j, "relevance": round(r, 4),
                  "max_activating_samples": [int(hold_idx[i]) for i in mas[k] if i >= 0]}
                 for k, (c, j, r) in enumerate(pairs)]
    top = M.top_attributes(ev.relevances, 3)
    local_table = [{"sample": int(hold_idx[i]), "predictor": _label(ev.f_pred[i], names),
                    "interpreter": _label(ev.g_pred[i], names), "agree": bool(ev.f_pred[i] == ev.g_pred[i]),
                    "top_attributes": ", ".join(f"φ{j} ({ev.relevances[i, j]:.2f})" for j in top[i])}
                   for i in local_rows]
    disagreements = [{"sample": int(hold_idx[i]), "predictor": _label(ev.f_pred[i], names),
                      "interpreter": _label(ev.g_pred[i], names),
                      "top_attributes": ", ".join(f"φ{j}" for j in top[i])} for i in disagree[:20]]
    cns_rows = [{"tau": t, "threshold": round(1 / t, 4), "cns_g": round(v, 4)} for t, v in ev.cns.items()]
    history_rows = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in history]

    arrays: dict[str, np.ndarray] = {
        "global_relevance": R.astype(np.float32),
        "local_relevances": ev.relevances.astype(np.float32),
        "attributes": ev.phi.astype(np.float32),
        "W": W.astype(np.float32),
        "heldout_indices": hold_idx.astype(np.int64),
        "predictor_class": ev.f_pred.astype(np.int64),
        "interpreter_class": ev.g_pred.astype(np.int64),
        "interpreter_logits": ev.g_logits.astype(np.float32),
        "disagreements": hold_idx[disagree].astype(np.int64),
        "cns_taus": np.asarray(list(ev.cns), dtype=np.float32),
        "cns_values": np.asarray(list(ev.cns.values()), dtype=np.float32),
        "pairs": np.asarray([(c, j) for c, j, _ in pairs], dtype=np.int64).reshape(-1, 2),
        "mas_indices": np.where(mas >= 0, hold_idx[np.clip(mas, 0, None)], -1).astype(np.int64),
    }
    if am is not None:
        arrays["am_images"] = am["images"].astype(np.float32)
        arrays["am_phi_before"] = am["phi_before"].astype(np.float32)
        arrays["am_phi_after"] = am["phi_after"].astype(np.float32)

    details = {
        "mode": "post-hoc",
        "layers": spec.layers,
        "layer_shapes": spec.layer_shapes,
        "layer_choice": why_layers,
        "n_attributes": J,
        "n_classes": C,
        "class_names": names,
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(hold_idx)),
        "relevance_variant": "paper: r_j = α_j / max_i |α_i|, α_j = φ_j · W[j, ŷ] (bias ignored), ŷ = interpreter's class",
        "relevance_threshold": cfg.relevance_threshold,
        "reconstruction": spec.reconstruction,
        "decoder_output": spec.decoder_output,
        "output_transform": spec.output_transform,
        "schedule": schedule_from(cfg).to_dict(),
        "predictor_sha256": digest,
        "predictor_unchanged": True,
        "predictor_forward_calls": cache.forward_calls,
        "cache_mib": round(cache.nbytes / 2**20, 3),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "mlflow_model": mlflow_model,
        "am_settings": am_settings.to_dict() if am_settings is not None else None,
        "am_pairs": [{"class": _label(c, names), "attribute": j} for c, j, _ in am_pairs] if am is not None else [],
        "am_skipped": [{"class": _label(c, names), "attribute": j,
                        "reason": "attribute not active at κ·x for any maximum-activating sample"}
                       for c, j, _ in am_skipped],
        "dead_attributes": [int(j) for j in dead],
    }
    tables = {"pairs": pair_rows, "local": local_table, "disagreements": disagreements, "cns": cns_rows,
              "history": history_rows}
    return Explanation(method=method.name, summary=summary, metrics=metrics, arrays=arrays, figures=figures,
                       tables=tables, details=details, findings=findings, warnings=warnings)
