"""Benchmark: post-hoc FLINT training cost per epoch on CPU, and the fidelity it reaches.

Peers measured in the same run, on the same inputs and mini-batches:

* the frozen model's forward pass over the training inputs (batch 16, as a streaming epoch would run it,
  and batch 256, as the one-off cache pass runs it);
* a *streaming* interpreter epoch that re-runs the frozen model on every mini-batch (what training without the
  activation cache costs);
* a *cached* interpreter epoch (what the method does from epoch 2 on: no model call at all).

Models: the digits CNN (1x8x8, governance.testing) and, unless ``--quick``, the ResNet-18-shaped network at
3x64x64 (a model whose forward pass dominates, as the spec's CIFAR ResNet case). Then one full post-hoc run
with the method's defaults on the digits CNN reports the fidelity reached.

    python benchmarks/bench_interpreter.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn, repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return statistics.median(best)


def _forward_pass(model, X: np.ndarray, layers, batch: int) -> None:
    with torch.no_grad():
        for s in range(0, len(X), batch):
            model.forward_with_activations(torch.from_numpy(X[s : s + batch]), layers)


def _interpreter_epochs(model, X: np.ndarray, layers, *, epochs: int, batch: int, streaming: bool) -> list[float]:
    """Per-epoch seconds of post-hoc training (all losses on), with or without the activation cache."""
    from governance_plugins.interpreter.activations import as_class_logits, build_cache
    from governance_plugins.interpreter.losses import LossSchedule, interpreter_loss
    from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec

    cache = build_cache(model, X, layers, batch_size=256)
    logits, _ = as_class_logits(cache.outputs)
    spec = InterpreterSpec(layers=list(layers), layer_shapes=[list(a.shape[1:]) for a in cache.acts],
                           n_classes=logits.shape[1], n_attributes=25, input_shape=list(X.shape[1:]),
                           modality="image", decoder_output="relu" if X.min() >= 0 and X.max() <= 1 else "linear")
    torch.manual_seed(0)
    interp = FlintInterpreter(spec)
    opt = torch.optim.Adam(interp.parameters(), lr=1e-4)
    w = LossSchedule().at(12)
    xt = torch.from_numpy(X)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(X), generator=gen)
        for s in range(0, len(X), batch):
            idx = perm[s : s + batch]
            if streaming:
                with torch.no_grad():
                    out, got = model.forward_with_activations(xt[idx], layers)
                acts, f_logits = [got[l] for l in layers], as_class_logits(out)[0]
            else:
                acts, f_logits = cache.batch(idx), logits[idx]
            g, phi = interp(acts)
            loss, _ = interpreter_loss(w, g_logits=g, f_logits=f_logits, phi=phi, x_hat=interp.decode(phi),
                                       x=xt[idx], reconstruction=spec.reconstruction)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def bench_model(label: str, model, X: np.ndarray, layers, epochs: int) -> dict:
    fwd16 = _timed(lambda: _forward_pass(model, X, layers, 16))
    fwd256 = _timed(lambda: _forward_pass(model, X, layers, 256))
    cached = _interpreter_epochs(model, X, layers, epochs=epochs, batch=16, streaming=False)
    streaming = _interpreter_epochs(model, X, layers, epochs=epochs, batch=16, streaming=True)
    return {"label": label, "n": len(X), "fwd16": fwd16, "fwd256": fwd256,
            "cached": statistics.median(cached[1:]), "streaming": statistics.median(streaming[1:]),
            "model_params": sum(p.numel() for p in model.torch_module().parameters()),
            "interp_params": _interpreter_params(model, X, layers)}


def _interpreter_params(model, X, layers) -> int:
    from governance_plugins.interpreter.activations import probe_activations
    from governance_plugins.interpreter.nets import FlintInterpreter, InterpreterSpec

    out, acts = probe_activations(model, X[:2], layers)
    spec = InterpreterSpec(layers=list(layers), layer_shapes=[list(acts[l].shape[1:]) for l in layers],
                           n_classes=out.shape[1], n_attributes=25, input_shape=list(X.shape[1:]), modality="image")
    return sum(p.numel() for p in FlintInterpreter(spec).parameters())


def full_run(quick: bool) -> dict:
    from governance.contract.method import MethodContext
    from governance.testing.models import as_loaded, trained_digits_cnn
    from governance_plugins.interpreter.method import FlintMethod

    torch.manual_seed(0)
    net, ds = trained_digits_cnn(seed=0)
    model = as_loaded(net, (1, 8, 8))
    cfg = {"log_model": False, "am_pairs": 4}
    if quick:
        cfg.update(epochs=6, beta_after=1, delta_after=2, sparsity_after=1)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = MethodContext(model=model, data=ds, config=FlintMethod.parse_config(cfg), seed=0, workdir=Path(tmp))
        t0 = time.perf_counter()
        expl = FlintMethod().explain(ctx)
        total = time.perf_counter() - t0
    return {"expl": expl, "total": total, "config": cfg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits CNN only, shorter default run (< 60 s)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from governance.testing.models import as_loaded, trained_digits_cnn

    print(f"torch {torch.__version__}; table: {torch.get_num_threads()} intra-op thread(s) for every column "
          "(epochs: one pass, batch 16, all losses on; median of the epochs after the first)")
    torch.manual_seed(0)
    net, ds = trained_digits_cnn(seed=0)
    digits = as_loaded(net, (1, 8, 8))
    X = ds.X[: int(0.8 * len(ds.X))]
    rows = [bench_model("digits CNN 1x8x8, taps 3+5", digits, X, ["3", "5"], epochs=4 if args.quick else 6)]
    if not args.quick:
        from governance.testing.resnet import resnet18_shaped

        torch.manual_seed(0)
        rn = as_loaded(resnet18_shaped(num_classes=10), (3, 64, 64))
        Xr = np.random.default_rng(0).uniform(0, 1, (512, 3, 64, 64)).astype(np.float32)
        rows.append(bench_model("ResNet-18-shaped 3x64x64, taps layers.5+7", rn, Xr, ["layers.5", "layers.7"], epochs=3))

    print()
    print(f"{'model':<42} {'params f/g':>13} {'n':>5} {'fwd b16 s':>10} {'fwd b256 s':>10} {'streaming ep s':>15} "
          f"{'cached ep s':>12} {'cached/stream':>14} {'cached/fwd b16':>15} {'saved s/ep':>11}")
    for r in rows:
        sizes = f"{r['model_params'] / 1e3:.0f}k/{r['interp_params'] / 1e3:.0f}k"
        print(f"{r['label']:<42} {sizes:>13} {r['n']:>5} {r['fwd16']:>10.3f} {r['fwd256']:>10.3f} {r['streaming']:>15.3f} "
              f"{r['cached']:>12.3f} {r['cached'] / r['streaming']:>14.2f} {r['cached'] / r['fwd16']:>15.2f} "
              f"{r['streaming'] - r['cached']:>11.3f}")

    from governance_plugins.interpreter.method import FlintConfig

    run = full_run(args.quick)
    e = run["expl"]
    d = e.details
    print()
    print(f"the method itself runs steps on tiny tensors on 1 thread; post-hoc FLINT with the method's defaults{' (quick: 6 epochs, gates scaled)' if args.quick else ''} "
          f"on the digits CNN, {d['n_train']} training / {d['n_heldout']} held-out inputs:")
    print(f"  fidelity {e.metrics['fidelity']:.3f} (top-5 {e.metrics.get('fidelity_top5', float('nan')):.3f}), "
          f"CNS_g(2) {e.metrics['cns_g_tau_2']:.2f}, predictor accuracy {e.metrics['accuracy_predictor']:.3f}, "
          f"interpreter accuracy {e.metrics['accuracy_interpreter']:.3f}")
    ep = d["epoch_seconds"]
    print(f"  cache pass {d['timings']['cache_seconds']:.3f} s ({d['predictor_forward_calls']} model calls); "
          f"{len(ep)} epochs of >= {FlintConfig().min_steps_per_epoch} steps: "
          f"median {statistics.median(ep):.2f} s; AM+PI {d['timings'].get('am_seconds', 0):.2f} s; "
          f"whole method {run['total']:.1f} s")


if __name__ == "__main__":
    main()
