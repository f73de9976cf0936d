"""Benchmark: post-hoc FLINT training per epoch with the activation cache against streaming, and the method's cost.

Peers measured in the same run, on the same inputs, mini-batches and initial weights:

* a *cached* interpreter epoch: the tapped activations were computed once (the cache pass, timed apart) and
  every step gathers its rows from memory (what the method does when the cache fits ``max_cache_mb``);
* a *streaming* interpreter epoch: every step re-runs the frozen model on its mini-batch (what the method does
  when the cache would not fit).

Cached and streaming epochs are interleaved (A B B A ...) in one process after a few warm-up steps each, so that
the load of a shared machine drifts onto both alike; each is timed at 1 intra-op thread (what the method uses for
steps this small) and at torch's default (on a busy 2-core machine the default pool is many times slower for
both: that, measured one arm after the other, is where a "cached slower than streaming" reading came from). Per step the table splits the time into reading the activations (gather from the cache, or
the model's forward pass) and the interpreter's own forward/backward/Adam step, and gives the break-even: the
number of epochs after which the one-off cache pass has paid for itself.

Models: the digits CNN (1x8x8, governance.testing) and a ResNet-18-shaped network at 3x64x64 (a model whose
forward pass dominates, as the spec's CIFAR ResNet case). Then one full post-hoc run with the method's
defaults (controls included) on the digits CNN reports fidelity, κ and the cost of each part.

    python benchmarks/bench_interpreter.py [--quick]     # --quick: 1-thread rows only, 256 ResNet inputs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Arm:
    """One training arm (cached or streaming) with its own interpreter, optimiser and timings."""

    streaming: bool
    interp: object
    opt: object
    epochs: list
    read: float = 0.0  # seconds spent obtaining activations (gather, or the model's forward)
    steps: int = 0


def _setup(model, X, layers):
    from governance_plugins.interpreter.activations import build_cache, output_transform
    from governance_plugins.interpreter.nets import InterpreterSpec

    t0 = time.perf_counter()
    cache = build_cache(model, X, layers, batch_size=256)
    cache_pass = time.perf_counter() - t0
    cache.with_class_logits(output_transform(cache.outputs))
    spec = InterpreterSpec(layers=list(layers), layer_shapes=[list(a.shape[1:]) for a in cache.acts],
                           n_classes=cache.class_logits.shape[1], n_attributes=25, input_shape=list(X.shape[1:]),
                           modality="image", decoder_output="relu" if X.min() >= 0 and X.max() <= 1 else "linear")
    return cache, cache_pass, spec


def _arm(spec, streaming: bool) -> Arm:
    from governance_plugins.interpreter.nets import FlintInterpreter

    torch.manual_seed(0)  # both arms start from the same weights
    interp = FlintInterpreter(spec)
    return Arm(streaming, interp, torch.optim.Adam(interp.parameters(), lr=1e-4), [])


def _epoch(arm: Arm, source, xt: torch.Tensor, batch: int, seed: int, steps: int | None = None) -> None:
    """One pass over the data (or its first ``steps`` steps: a warm-up, not recorded), all losses on; the batch
    order is seeded, the same for both arms."""
    from governance_plugins.interpreter.losses import LossSchedule, interpreter_loss

    w = LossSchedule().at(12)
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    stop = len(xt) if steps is None else min(len(xt), steps * batch)
    t0, read0, steps0 = time.perf_counter(), arm.read, arm.steps
    for s in range(0, stop, batch):
        idx = perm[s : s + batch]
        r0 = time.perf_counter()
        acts, f_logits = source.batch(idx)
        arm.read += time.perf_counter() - r0
        g, phi = arm.interp(acts)
        loss, _ = interpreter_loss(w, g_logits=g, f_logits=f_logits, phi=phi, x_hat=arm.interp.decode(phi),
                                   x=xt[idx], reconstruction=arm.interp.spec.reconstruction)
        arm.opt.zero_grad()
        loss.backward()
        arm.opt.step()
        arm.steps += 1
    if steps is None:
        arm.epochs.append(time.perf_counter() - t0)
    else:
        arm.read, arm.steps = read0, steps0


def bench_model(label: str, model, X: np.ndarray, layers, epochs: int, threads: int) -> dict:
    from governance_plugins.interpreter.activations import StreamingActivations

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cache, cache_pass, spec = _setup(model, X, layers)
        stream = StreamingActivations(model, X, layers, "logits")
        xt = torch.from_numpy(X)
        cached, streaming = _arm(spec, False), _arm(spec, True)
        for arm in (cached, streaming):  # a few warm-up steps each, not counted
            _epoch(arm, stream if arm.streaming else cache, xt, 16, seed=0, steps=5)
        for e in range(epochs):
            order = (cached, streaming) if e % 2 == 0 else (streaming, cached)
            for arm in order:
                _epoch(arm, stream if arm.streaming else cache, xt, 16, seed=e)
    finally:
        torch.set_num_threads(previous)
    out = {"label": label, "threads": threads, "n": len(X), "cache_pass": cache_pass,
           "cache_mib": cache.nbytes / 2**20}
    for arm, key in ((cached, "cached"), (streaming, "streaming")):
        out[key] = statistics.median(arm.epochs)
        out[f"{key}_read_ms"] = 1e3 * arm.read / arm.steps
        out[f"{key}_step_ms"] = 1e3 * (sum(arm.epochs) - arm.read) / arm.steps
    return out


def full_run(quick: bool) -> dict:
    from governance.contract.method import MethodContext
    from governance.testing.models import as_loaded, trained_digits_cnn
    from governance_plugins.interpreter.method import FlintMethod

    torch.manual_seed(0)
    net, ds = trained_digits_cnn(seed=0)
    model = as_loaded(net, (1, 8, 8))
    cfg = {"log_model": False}
    if quick:
        cfg.update(epochs=4, beta_after=1, delta_after=2, sparsity_after=1)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = MethodContext(model=model, data=ds, config=FlintMethod.parse_config(cfg), seed=0, workdir=Path(tmp))
        t0 = time.perf_counter()
        expl = FlintMethod().explain(ctx)
        total = time.perf_counter() - t0
    return {"expl": expl, "total": total, "config": cfg}


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'model':<34} {'thr':>3} {'n':>5} {'cache pass s':>12} {'cached ep s':>11} {'stream ep s':>11} "
          f"{'cached/stream':>13} {'read ms/step c|s':>17} {'interp ms/step c|s':>19} {'break-even ep':>13}")
    for r in rows:
        saved = r["streaming"] - r["cached"]
        even = f"{r['cache_pass'] / saved:.2f}" if saved > 0 else "never"
        print(f"{r['label']:<34} {r['threads']:>3} {r['n']:>5} {r['cache_pass']:>12.3f} {r['cached']:>11.3f} "
              f"{r['streaming']:>11.3f} {r['cached'] / r['streaming']:>13.2f} "
              f"{r['cached_read_ms']:>8.2f}|{r['streaming_read_ms']:<8.2f} "
              f"{r['cached_step_ms']:>9.2f}|{r['streaming_step_ms']:<9.2f} {even:>13}")
    print("(epoch times: median over the counted epochs; read = gather from the cache | the model's forward pass; "
          "interp = the interpreter's forward, losses, backward and Adam step)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 thread only, fewer epochs and samples, a 4-epoch method run")
    args = ap.parse_args()

    from governance.testing.models import as_loaded, trained_digits_cnn
    from governance.testing.resnet import resnet18_shaped

    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}; interleaved cached/streaming epochs (batch 16, all losses on), at 1 thread"
          + ("" if args.quick else f" and at the default {default_threads}"))
    torch.manual_seed(0)
    net, ds = trained_digits_cnn(seed=0)
    digits = as_loaded(net, (1, 8, 8))
    X = ds.X[: int(0.8 * len(ds.X))]
    torch.manual_seed(0)
    rn = as_loaded(resnet18_shaped(num_classes=10), (3, 64, 64))
    Xr = np.random.default_rng(0).uniform(0, 1, (256 if args.quick else 512, 3, 64, 64)).astype(np.float32)
    rows = []
    # --quick: the method's own setting (1 thread) only; the default-thread rows show what the thread pool costs
    # on a busy machine and take minutes there
    for threads in dict.fromkeys([1] if args.quick else [1, default_threads]):
        full = threads == 1 and not args.quick
        rows.append(bench_model("digits CNN 1x8x8, taps 3+5", digits, X, ["3", "5"], 4 if full else 2, threads))
        rows.append(bench_model("ResNet-18-shaped 3x64x64, layers.5+7", rn, Xr, ["layers.5", "layers.7"],
                                3 if full else 2, threads))
    print_table(rows)

    run = full_run(args.quick)
    e, d = run["expl"], run["expl"].details
    t = d["timings"]
    print()
    print(f"post-hoc FLINT with the method's defaults{' (quick: 4 epochs, gates scaled)' if args.quick else ''} on the "
          f"digits CNN, {d['n_train']} training / {d['n_heldout']} held-out inputs, activations {d['activations']}:")
    print(f"  fidelity {e.metrics['fidelity']:.3f} (κ {e.metrics['fidelity_kappa']:.3f}), CNS_g(2) "
          f"{e.metrics['cns_g_tau_2']:.2f}, purity {e.metrics['attribute_purity']:.2f}, predictor accuracy "
          f"{e.metrics['accuracy_predictor']:.3f}")
    for c in e.controls:
        print(f"    {c.metric:<17} vs {c.key:<17} {c.value:7.3f} vs {c.control_value:7.3f} (margin {c.margin:.3f}): "
              f"{c.verdict}")
    ep = d["epoch_seconds"]
    print(f"  cache pass {t['cache_seconds']:.3f} s ({d['predictor_forward_calls']} model calls); {len(ep)} epochs, "
          f"median {statistics.median(ep):.2f} s; training {t['train_seconds']:.1f} s; controls "
          f"{t['controls_seconds']:.1f} s (randomised-model interpreter {d['controls']['randomised_model']['train_seconds']:.1f} s); "
          f"whole method {run['total']:.1f} s")


if __name__ == "__main__":
    main()
