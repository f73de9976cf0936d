"""NeFLAG's defaults against Captum's Integrated Gradients (50 steps), Saliency and random attributions, on
held-out inputs of models trained here, over several model seeds; and NeFLAG's cost against IG's.

    python benchmarks/bench_neflag.py           # 3 model seeds (45 min wall time on a shared, loaded 2-core machine)
    python benchmarks/bench_neflag.py --quick   # 1 model seed, fewer inputs, 16x16 upscaling (about 1 CPU-minute)

Models (each trained on 75 % of its data; only the other 25 % is explained, never a training row):
  digits CNN 1x8x8          scikit-learn's digits
  digits CNN 1x32x32        the same digits upscaled to 32x32 (bilinear), a 3-block CNN: an image model beyond 8x8
  breast-cancer MLP         30 standardised features, 2 classes
  wine MLP                  13 standardised features, 3 classes

Every number goes through the plugin's own code: NeflagRun.prepare() resolves the default configuration exactly as
a governance run does (ε = σ·√d, logit output, form A, descent sampler, map × (x − baseline)), the attributions come
from its Attributor (IG and Saliency through Captum, on the same logit), and the deletion/insertion AUCs from the
run's own game (governance.quality.deletion_insertion, 20 steps, the dataset's baseline as substrate: zeros for
images, feature means for tables). "random" is the mean of 5 random-attribution draws. For reference the table also
shows the previous default (form B, rejection sampler S3 with n = 20, ε = 0.1, softmax probability, flux map alone)
and IG on the softmax probability.

Cost: seconds per explained input, NeFLAG's default against IG at the same batch size (max_batch) on the same inputs,
median over interleaved repeats (the machine is shared; only ratios within one run mean anything).

Targets (issue 15): on the digits CNN, NeFLAG's deletion AUC <= IG's and insertion AUC >= IG's (means over seeds,
and seed by seed); on breast-cancer and wine, NeFLAG better than Saliency and than random on both AUCs, with its
distance to IG stated; NeFLAG's time per input <= IG's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

OLD_DEFAULT = {"form": "B", "sampler": "rejection", "n_points": 20, "epsilon": 0.1, "output": "prob", "map": "flux"}
QUALITY_OFF = {"deletion_insertion": False, "controls": False, "max_sensitivity": False, "randomisation": False,
               "seed_stability": False}


# ------------------------------------------------------------------------------------------ models, data
def wine_dataset():
    from sklearn.datasets import load_wine

    from governance.contract.dataset import Dataset

    d = load_wine()
    X = d.data.astype(np.float64)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return Dataset(X=X, y=d.target.astype(np.int64), feature_names=list(d.feature_names), modality="tabular",
                   source="sklearn:wine")


def upscaled_digits(size: int):
    import torch

    from governance.contract.dataset import Dataset
    from governance.testing.models import digits_dataset

    ds = digits_dataset()
    X = torch.nn.functional.interpolate(torch.from_numpy(ds.X), size=(size, size), mode="bilinear",
                                        align_corners=False).clamp(0, 1).numpy()
    return Dataset(X=X.astype(np.float32), y=ds.y, class_names=ds.class_names, modality="image",
                   source=f"sklearn:digits upscaled to {size}x{size}")


def upscaled_cnn(size: int):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * (size // 8) ** 2, 10))


def split(ds, seed: int):
    """(training rows, held-out rows): a seeded 75/25 split."""
    from governance.contract.dataset import Dataset

    idx = np.random.default_rng(1000 + seed).permutation(len(ds))
    k = len(ds) // 4

    def take(rows):
        return Dataset(X=ds.X[rows], y=ds.y[rows], feature_names=ds.feature_names, class_names=ds.class_names,
                       modality=ds.modality, source=ds.source)

    return take(idx[k:]), take(idx[:k])


@dataclass
class Task:
    label: str
    shape: tuple[int, ...]
    n_inputs: int
    timed: bool = False
    rows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    evals: dict[str, float] = field(default_factory=dict)
    accuracy: list[float] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)


def train_task(key: str, seed: int, size: int):
    """(trained module, held-out dataset) for one task and model seed."""
    import torch

    from governance.testing import models as tm

    if key == "digits":
        ds, module, kw = tm.digits_dataset(), tm.digits_cnn, dict(epochs=8, lr=3e-3)
    elif key == "upscaled":
        ds, module, kw = upscaled_digits(size), lambda: upscaled_cnn(size), dict(epochs=4, lr=3e-3)
    elif key == "cancer":
        ds, module, kw = tm.breast_cancer_dataset(), tm.tabular_mlp, dict(epochs=30, lr=3e-3)
    else:
        ds, module, kw = wine_dataset(), lambda: tm.tabular_mlp(13, 3), dict(epochs=60, lr=3e-3)
    train, held_out = split(ds, seed)
    torch.manual_seed(seed)
    net = tm.train(module(), train, seed=seed, **kw)
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(held_out.X)).argmax(1).numpy() == held_out.y).mean())
    return net, held_out, acc


# ------------------------------------------------------------------------------------------ measuring
def prepared(model, data, raw: dict, workdir: Path, seed: int):
    from governance.contract.method import MethodContext
    from governance_plugins.neflag.method import NeflagMethod
    from governance_plugins.neflag.runner import NeflagRun

    cfg = NeflagMethod.parse_config({**raw, "quality": {**QUALITY_OFF, "steps": 20}})
    ctx = MethodContext(model=model, data=data, config=cfg, seed=seed, workdir=workdir)
    return ctx, NeflagRun(ctx).prepare()


def measure(task: Task, net, data, seed: int, workdir: Path, repeats: int) -> None:
    """Deletion/insertion of every method on the held-out inputs of one model; timings when the task is timed."""
    from governance.testing import models as tm
    from governance_plugins.neflag.evidence import Evidence

    model = tm.as_loaded(net, task.shape, name=task.label)
    raw = {"n_samples": task.n_inputs}
    ctx, p = prepared(model, data, raw, workdir / "default", seed)
    _, old = prepared(model, data, {**raw, **OLD_DEFAULT}, workdir / "old", seed)
    _, prob = prepared(model, data, {**raw, "output": "prob"}, workdir / "prob", seed)
    game = Evidence(ctx, p, {}, []).game
    maps = {"NeFLAG (default)": p.attributor.neflag(p.X, p.targets)}
    task.evals["NeFLAG (default)"] = float(p.attributor.last["result"].n_evaluations.double().mean())
    maps["Integrated Gradients (50 steps)"] = p.attributor.integrated_gradients(p.X, p.targets)
    maps["Saliency"] = p.attributor.saliency(p.X, p.targets)
    maps["IG on the probability"] = prob.attributor.integrated_gradients(p.X, p.targets)
    maps["NeFLAG previous default"] = old.attributor.neflag(p.X, p.targets)
    task.evals["NeFLAG previous default"] = float(old.attributor.last["result"].n_evaluations.double().mean())
    task.evals.update({"Integrated Gradients (50 steps)": 50.0, "Saliency": 1.0, "IG on the probability": 50.0})
    for name, a in maps.items():
        g = game(a)
        task.rows.setdefault(name, []).append((g.mean_deletion_auc, g.mean_insertion_auc))
    rng = np.random.default_rng(seed)
    rand = [game(rng.standard_normal(p.X.shape)) for _ in range(5)]
    task.rows.setdefault("random (5 draws)", []).append(
        (float(np.mean([g.mean_deletion_auc for g in rand])), float(np.mean([g.mean_insertion_auc for g in rand]))))
    if task.timed:
        for name, s in time_methods(p, repeats).items():
            task.seconds.setdefault(name, []).append(s)


def time_methods(p, repeats: int) -> dict[str, float]:
    """Median wall seconds per input of NeFLAG's default and IG, same inputs and max_batch, interleaved."""
    jobs = {"neflag": lambda: p.attributor.neflag(p.X, p.targets),
            "ig": lambda: p.attributor.integrated_gradients(p.X, p.targets)}
    for job in jobs.values():  # warm-up, not measured
        job()
    out: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            t0 = time.perf_counter()
            job()
            out[key].append((time.perf_counter() - t0) / len(p.X))
    return {k: float(np.median(v)) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ printing
def print_task(task: Task) -> None:
    seeds = len(task.accuracy)
    print(f"\n{task.label}: {task.n_inputs} held-out inputs x {seeds} model seed(s); held-out accuracy "
          + ", ".join(f"{a:.3f}" for a in task.accuracy))
    head = f"  {'method':<34} {'grad evals':>10} {'deletion↓':>10} {'insertion↑':>11}   per seed (deletion / insertion)"
    print(head + "\n  " + "-" * (len(head) - 2))
    for name, vals in task.rows.items():
        v = np.asarray(vals)
        per = "  ".join(f"{d:.3f}/{i:.3f}" for d, i in v)
        evals = f"{task.evals[name]:.0f}" if name in task.evals else ""
        print(f"  {name:<34} {evals:>10} {v[:, 0].mean():>10.3f} {v[:, 1].mean():>11.3f}   {per}")
    if task.seconds:
        nf, ig = np.mean(task.seconds["neflag"]), np.mean(task.seconds["ig"])
        print(f"  seconds per input (median of repeats, mean over seeds): NeFLAG {nf:.4g}, IG {ig:.4g}, "
              f"ratio {nf / ig:.2f}")


def verdicts(tasks: dict[str, Task]) -> None:
    print("\nTargets")
    nf, ig, sal, rnd = "NeFLAG (default)", "Integrated Gradients (50 steps)", "Saliency", "random (5 draws)"
    for key in ("digits", "upscaled"):
        if key not in tasks:
            continue
        t = tasks[key]
        a, b = np.asarray(t.rows[nf]), np.asarray(t.rows[ig])
        wins_d, wins_i = int(np.sum(a[:, 0] <= b[:, 0])), int(np.sum(a[:, 1] >= b[:, 1]))
        met = a[:, 0].mean() <= b[:, 0].mean() and a[:, 1].mean() >= b[:, 1].mean()
        claim = ("target: NeFLAG at least as good as IG on deletion and insertion: " + ("MET" if met else "NOT MET")
                 if key == "digits" else "compared with IG (reported, no target)")
        print(f"  {t.label}: {claim} (deletion {a[:, 0].mean():.3f} vs {b[:, 0].mean():.3f}, insertion "
              f"{a[:, 1].mean():.3f} vs {b[:, 1].mean():.3f}; NeFLAG at least as good seed by seed: deletion "
              f"{wins_d}/{len(a)}, insertion {wins_i}/{len(a)})")
        if t.seconds:
            r = np.mean(t.seconds["neflag"]) / np.mean(t.seconds["ig"])
            print(f"  {t.label}: target: NeFLAG's time per input <= IG's: {'MET' if r <= 1 else 'NOT MET'} ({r:.2f}x IG, "
                  f"{t.evals[nf]:.0f} vs 50 gradient evaluations)")
    for key in ("cancer", "wine"):
        if key not in tasks:
            continue
        t = tasks[key]
        a, s, r, b = (np.asarray(t.rows[k]).mean(0) for k in (nf, sal, rnd, ig))
        better = a[0] < min(s[0], r[0]) and a[1] > max(s[1], r[1])
        print(f"  {t.label}: target: NeFLAG better than Saliency and random on both: {'MET' if better else 'NOT MET'} "
              f"(deletion {a[0]:.3f} vs {s[0]:.3f} / {r[0]:.3f}, insertion {a[1]:.3f} vs {s[1]:.3f} / {r[1]:.3f}); "
              f"distance to IG: deletion {a[0] - b[0]:+.3f}, insertion {a[1] - b[1]:+.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one model seed, fewer inputs, 16x16 upscaling")
    ap.add_argument("--seeds", type=int, default=None, help="model seeds (default 3; 1 with --quick)")
    ap.add_argument("--size", type=int, default=None, help="side of the upscaled digits (default 32; 16 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 7; 3 with --quick)")
    ap.add_argument("--only", default=None, help="comma-separated tasks: digits,upscaled,cancer,wine")
    args = ap.parse_args()

    import torch

    seeds = args.seeds or (1 if args.quick else 3)
    size = args.size or (16 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 7)
    q = args.quick
    tasks = {"digits": Task("digits CNN 1x8x8", (1, 8, 8), 32 if q else 64, timed=True),
             "upscaled": Task(f"digits CNN 1x{size}x{size} (upscaled)", (1, size, size), 16 if q else 48, timed=True),
             "cancer": Task("breast-cancer MLP (30 features)", (30,), 32 if q else 64),
             "wine": Task("wine MLP (13 features)", (13,), 44)}
    if args.only:
        tasks = {k: v for k, v in tasks.items() if k in args.only.split(",")}
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; model seeds 0..{seeds - 1}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-neflag-") as tmp:
        for key, task in tasks.items():
            for seed in range(seeds):
                t0 = time.perf_counter()
                net, held_out, acc = train_task(key, seed, size)
                task.accuracy.append(acc)
                measure(task, net, held_out, seed, Path(tmp) / f"{key}{seed}", repeats)
                print(f"  {task.label}, seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)
            print_task(task)
    verdicts(tasks)


if __name__ == "__main__":
    main()
