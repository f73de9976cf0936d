"""Bort benchmark: optimizer overhead per training step and the cost of the weight audit.

1. Training-step time (forward + backward + optimizer step) with BortSGD / BortAdamW against torch's SGD / AdamW,
   measured in the same run, interleaved, on the same batch: the digits CNN (1x8x8) and a ResNet-18-shaped
   network (11.7M parameters). Target: Bort adds at most 15 % to a training step.
2. The audit of a ResNet-18-shaped network's weights (Gram matrix + eigvalsh in float64) against the direct
   route (singular values of every reshaped weight, numpy's svd in float64), and the whole ``bort`` method
   (audit, random reference of up to 10 seeds, figures).
3. ``--gamma-sweep``: which strength gamma has a measurable effect. A digits MLP (64-64-32-10) trained from scratch
   with AdamW (lr 1e-3) and SGD (lr 0.05, momentum 0.9), and with BortAdamW / BortSGD over a range of gamma, the
   same seed, data and batches: D_orth of the constrained (hidden) layers, their Gram error ||G - I||_F, held-out
   accuracy and its difference to the plain optimizer (what Bort bought, what it cost). This is where the strengths
   recommended by the error messages come from (BortAdamW gamma 1e-2 at lr 1e-3 does nothing measurable).

On the CPU the clock is this process's CPU time (one torch thread by default), so the ratios hold on a machine
shared with other users; on CUDA it is synchronised wall time.

    python benchmarks/bench_bort.py            # ResNet at 3x224x224, batch 16
    python benchmarks/bench_bort.py --quick    # < 60 s: ResNet at 3x64x64, fewer repetitions
    python benchmarks/bench_bort.py --gamma-sweep [--quick]   # strengths: what Bort bought and cost
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from governance.testing.models import as_loaded, digits_cnn, digits_dataset  # noqa: E402
from governance.testing.resnet import resnet18_shaped  # noqa: E402
from governance_plugins.bort.optim import BortAdamW, BortSGD, bort_correction, make_bort_param_groups  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str) -> Callable[[], float]:
    """CPU time of this process on the CPU (immune to other users' load on a shared machine), wall time on
    CUDA (after synchronising)."""
    return time.process_time if device == "cpu" else time.perf_counter


def step_times(build: Callable[[], torch.nn.Module], x: torch.Tensor, y: torch.Tensor, device: str, reps: int,
               warmup: int) -> dict[str, float]:
    """Seconds per training step for each optimizer (median of ``reps``), measured round-robin on identical model
    copies with the same batch."""
    proto = build().to(device).train()
    variants: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]] = {}

    def add(name: str, make: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> None:
        model = copy.deepcopy(proto)
        variants[name] = (model, make(model))

    add("SGD", lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9))
    add("BortSGD", lambda m: BortSGD(make_bort_param_groups(m, gamma=1e-3), lr=1e-3, momentum=0.9))
    add("AdamW", lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4))
    add("BortAdamW", lambda m: BortAdamW(make_bort_param_groups(m, gamma=1e-1), lr=1e-4))
    times: dict[str, list[float]] = {k: [] for k in variants}
    clock = _clock(device)
    for r in range(warmup + reps):
        for name, (model, opt) in variants.items():
            _sync(device)
            t0 = clock()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            _sync(device)
            if r >= warmup:
                times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def correction_time(model: torch.nn.Module, device: str, reps: int) -> float:
    """Seconds to compute Delta for every constrained weight (the Bort-only work of one step)."""
    weights = [p for g in make_bort_param_groups(model, gamma=1.0) if g["gamma"] > 0 for p in g["params"]]
    out = []
    clock = _clock(device)
    for _ in range(reps + 1):
        _sync(device)
        t0 = clock()
        with torch.no_grad():
            for w in weights:
                bort_correction(w)
        _sync(device)
        out.append(clock() - t0)
    return statistics.median(out[1:])


def audit_times(width: int, with_method: bool) -> dict[str, Any]:
    from governance_plugins.bort.audit import audit_layers
    from governance_plugins.bort.layers import extract_layers, roles_from_torch

    from threadpoolctl import threadpool_limits

    threadpool_limits(torch.get_num_threads())  # BLAS threads as torch's: CPU time then measures work, not spinning
    model = resnet18_shaped(width=width)
    params = {k: v.detach().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    clock = time.process_time  # CPU seconds (all BLAS threads), not wall time: robust to other users' load
    t0 = clock()
    layers, _ = extract_layers(params, roles_from_torch(model))
    audits = audit_layers(layers)
    t_audit = clock() - t0
    t0 = clock()
    sv = [np.linalg.svd(layer.matrix, compute_uv=False) for layer in layers]
    t_svd = clock() - t0
    worst = max(float(np.max(np.abs(np.sort(a.sigma2) - np.sort(s ** 2)))) / float(np.max(s ** 2))
                for a, s in zip(audits, sv))
    res = {"layers": len(layers), "params": sum(layer.n_params for layer in layers), "audit_s": t_audit,
           "svd_s": t_svd, "max_rel_diff": worst}
    if with_method:
        from governance.contract.method import MethodContext
        from governance_plugins.bort.method import BortAudit

        loaded = as_loaded(model, (3, 32, 32), name="resnet18-shaped")
        data = digits_dataset(4)  # unused: the audit reads weights only (reconstruction is skipped: not near-orthogonal)
        with tempfile.TemporaryDirectory() as tmp:
            ctx = MethodContext(model=loaded, data=data, config=BortAudit.parse_config({}), seed=0, workdir=Path(tmp))
            t0 = clock()
            exp = BortAudit().explain(ctx)
            res["method_s"] = clock() - t0
            res["method_recon"] = exp.details["reconstruction"]["ran"]
    return res


def _digits_split(seed: int = 0) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:1400], perm[1400:]
    return torch.from_numpy(X[tr]), torch.from_numpy(y[tr]), torch.from_numpy(X[te]), torch.from_numpy(y[te])


def _sweep_run(make_opt: Callable[[torch.nn.Module], torch.optim.Optimizer], data: tuple[torch.Tensor, ...],
               epochs: int, seed: int) -> dict[str, Any]:
    """Train the digits MLP from scratch; D_orth / Gram error of the hidden layers, per-sample held-out correctness."""
    from governance_plugins.bort.audit import audit_matrix

    Xt, yt, Xe, ye = data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    opt = make_opt(model)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), 64):
            idx = perm[i: i + 64]
            opt.zero_grad()
            F.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.no_grad():
        correct = (model(Xe).argmax(1) == ye).double().numpy()
    hidden = [model[0].weight.detach().double().numpy(), model[2].weight.detach().double().numpy()]
    gram = sum(float(np.linalg.norm((W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W) - np.eye(min(W.shape))))
               for W in hidden)
    d_orth = float(np.average([audit_matrix(W).d_orth for W in hidden], weights=[W.size for W in hidden]))
    return {"correct": correct, "gram": gram, "d_orth": d_orth}


def gamma_sweep(quick: bool) -> None:
    """Print what each strength bought (orthogonality of the constrained layers) and cost (held-out accuracy)."""
    epochs, seeds = (10, [0]) if quick else (30, [0, 1, 2])
    data = _digits_split()
    settings = [("AdamW", 1e-3, None), *[("BortAdamW", 1e-3, g) for g in (1e-2, 1e-1, 1.0, 10.0, 100.0)],
                ("SGD", 0.05, None), *[("BortSGD", 0.05, g) for g in (1e-3, 1e-2, 1e-1, 1.0)]]

    def factory(name: str, lr: float, gamma: float | None) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
        if name == "AdamW":
            return lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
        if name == "SGD":
            return lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        if name == "BortAdamW":
            return lambda m: BortAdamW(make_bort_param_groups(m, gamma=gamma), lr=lr, weight_decay=0.0)
        return lambda m: BortSGD(make_bort_param_groups(m, gamma=gamma), lr=lr, momentum=0.9)

    print(f"\nStrength sweep: digits MLP 64-64-32-10 from scratch, {epochs} epochs, batch 64, 1400 train / 397 held-out "
          f"samples, seeds {seeds}; hidden layers constrained, classifier free. Pull per step = lr*gamma "
          "(x 1/(1-momentum) for BortSGD).")
    untrained = [_sweep_run(lambda m: torch.optim.SGD(m.parameters(), lr=0.0), data, 0, 100 + s)["d_orth"]
                 for s in range(10)]
    print(f"Untrained (10 seeds): D_orth hidden {np.mean(untrained):.3f} ± {np.std(untrained, ddof=1):.3f}")
    print(f"{'optimizer':10s} {'lr':>6s} {'gamma':>7s} {'pull':>8s} {'D_orth hidden':>13s} {'|G-I|_F':>8s} "
          f"{'accuracy':>8s} {'vs plain':>9s} {'2 se':>6s}")
    base: dict[str, list[dict[str, Any]]] = {}
    for name, lr, gamma in settings:
        runs = [_sweep_run(factory(name, lr, gamma), data, epochs, s) for s in seeds]
        plain = "AdamW" if "Adam" in name else "SGD"
        if gamma is None:
            base[plain] = runs
        ref = base[plain]
        diff = np.concatenate([r["correct"] - b["correct"] for r, b in zip(runs, ref)])
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if diff.any() else 0.0
        pull = "" if gamma is None else f"{lr * gamma / (0.1 if 'SGD' in name else 1.0):8.1e}"
        print(f"{name:10s} {lr:6.0e} {'' if gamma is None else f'{gamma:7.0e}':>7s} {pull:>8s} "
              f"{np.mean([r['d_orth'] for r in runs]):13.3f} {np.mean([r['gram'] for r in runs]):8.2f} "
              f"{np.mean([r['correct'].mean() for r in runs]):8.3f} {100 * diff.mean():+8.1f}p {200 * se:5.1f}p")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small ResNet input and fewer repetitions (< 60 s)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: stable timings on a shared machine; 0 = torch's choice)")
    ap.add_argument("--resolution", type=int, default=None, help="ResNet input size (default 224, --quick 64)")
    ap.add_argument("--batch", type=int, default=None, help="ResNet batch (default 16, --quick 8)")
    ap.add_argument("--gamma-sweep", action="store_true", help="only the strength sweep (what Bort bought and cost)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gamma_sweep:
        gamma_sweep(args.quick)
        return
    dev = args.device
    res = args.resolution or (64 if args.quick else 224)
    batch = args.batch or (8 if args.quick else 16)
    reps, warm = (5, 1) if args.quick else (10, 2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}"
          + (f", {torch.cuda.get_device_name()}" if dev == "cuda" else ""))

    ds = digits_dataset(256)
    xd = torch.from_numpy(ds.X[:64]).to(dev)
    yd = torch.from_numpy(ds.y[:64]).to(dev)
    xr = torch.randn(batch, 3, res, res, device=dev)
    yr = torch.randint(0, 1000, (batch,), device=dev)
    nets = [("digits CNN, batch 64", digits_cnn, xd, yd, reps * 20, warm * 5),
            (f"ResNet-18-shaped {res}x{res}, batch {batch}", resnet18_shaped, xr, yr, reps, warm)]
    if not args.quick and args.batch is None:
        x2, y2 = torch.randn(2 * batch, 3, res, res, device=dev), torch.randint(0, 1000, (2 * batch,), device=dev)
        nets.append((f"ResNet-18-shaped {res}x{res}, batch {2 * batch}", resnet18_shaped, x2, y2, reps, warm))
    unit = "CPU time of this process" if dev == "cpu" else "wall time (CUDA synchronised)"
    print(f"\nTraining step (forward + backward + step), median {unit}; Bort constrains Linear/Conv weights "
          "except the classifier.\nThe Bort work (Delta only) is a fixed cost per step: its share falls as the batch or "
          "input grows.")
    print(f"{'network':38s} {'SGD':>8s} {'BortSGD':>8s} {'overhead':>8s} {'AdamW':>8s} {'BortAdamW':>9s} "
          f"{'overhead':>8s} {'Delta only':>10s} {'Delta/SGD':>9s}   (times in ms)")
    for label, build, x, y, n, w in nets:
        t = step_times(build, x, y, dev, n, w)
        corr = correction_time(build().to(dev), dev, max(3, n // 5))
        ms = {k: 1e3 * v for k, v in t.items()}
        print(f"{label:38s} {ms['SGD']:8.1f} {ms['BortSGD']:8.1f} {t['BortSGD'] / t['SGD'] - 1:+8.1%} "
              f"{ms['AdamW']:8.1f} {ms['BortAdamW']:9.1f} {t['BortAdamW'] / t['AdamW'] - 1:+8.1%} {1e3 * corr:10.2f} "
              f"{corr / t['SGD']:9.1%}")

    if dev == "cpu":
        print("\nAudit of a ResNet-18-shaped network's weights, CPU seconds (float64; numpy's svd is the same-run peer)")
        widths = [16, 64] if not args.quick else [32]
        print(f"{'width':>5s} {'layers':>6s} {'params':>10s} {'audit (Gram+eigvalsh)':>22s} {'svd':>8s} "
              f"{'speed-up':>8s} {'max rel diff':>12s} {'bort method':>11s}")
        for width in widths:
            a = audit_times(width, with_method=(width == widths[-1]))
            method = f"{a['method_s']:10.2f}s" if "method_s" in a else f"{'':11s}"
            print(f"{width:5d} {a['layers']:6d} {a['params']:10d} {a['audit_s']:21.2f}s {a['svd_s']:7.2f}s "
                  f"{a['svd_s'] / a['audit_s']:7.1f}x {a['max_rel_diff']:12.1e} {method}")


if __name__ == "__main__":
    main()
