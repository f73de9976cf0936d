"""Benchmark of the ``interaction`` method.

0. Solvers (issue 19 targets): the joint problem (K = 2 models, error term on, γ̂-ratio 0.5) of real breast-cancer
   MLP outputs (log-odds, the n features farthest from the mean of each sample), solved by the first-order PDHG
   solver (torch, batched over the samples) and by the generic HiGHS interior-point LP of the same problems in the
   same run (the peer). Targets: n = 10 certified relative gap ≤ 1e-6 in ≤ 1 s per sample; n = 12 ≤ 1 % in ≤ 10 s;
   n = 14 ≤ 1 % in ≤ 2 min; the same optimum as HiGHS where HiGHS finishes. The table says which are met.
1. Masked-input throughput: all 2ⁿ masked inputs of one sample built, evaluated and turned into v, as a ratio
   of the same model's plain batched forward throughput on as many real samples, measured in the same run
   (interleaved repetitions, medians). Target: ratio ≥ 0.9.
2. End to end: seconds per sample of ``InteractionMethod.explain`` with two model versions (the reviewed model
   and one peer), for n = 10 and n = 12, on the digits CNN and on a ResNet-18-shaped network (ONNX Runtime),
   split into masked-input evaluation and extraction (solver chosen by ``solver="auto"``).

    python benchmarks/bench_interaction.py            # quick: solvers at n = 8, 10 + the quick tables below
    python benchmarks/bench_interaction.py --full     # solver targets at n = 10, 12, 14 and the full tables
                                                      # (ResNet at 3x224x224 for throughput; tens of minutes)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _models(args, workdir: Path):
    """(label, reviewed LoadedModel, peer LoadedModel, Dataset, sample_shape, batch_size) per network."""
    import torch

    from governance.contract.dataset import Dataset
    from governance.testing.models import as_loaded, as_onnx_loaded, trained_digits_cnn
    from governance.testing.resnet import resnet18_shaped

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # training only (several threads only contend on a small CPU)
    new, ds = trained_digits_cnn(seed=0, epochs=4 if args.quick else 8)
    old, _ = trained_digits_cnn(seed=1, epochs=4 if args.quick else 8)
    torch.set_num_threads(threads)
    out = []
    for rt in args.runtimes:
        if rt == "onnxruntime":
            a = as_onnx_loaded(new, (1, 8, 8), _mk(workdir / "digits_new"))
            b = as_onnx_loaded(old, (1, 8, 8), _mk(workdir / "digits_old"))
        else:
            a, b = as_loaded(new, (1, 8, 8), name="digits-new"), as_loaded(old, (1, 8, 8), name="digits-old")
        out.append(("digits CNN 1x8x8", rt, a, b, ds, 256))

    size = args.resnet_size
    torch.manual_seed(0)
    r_old = resnet18_shaped(num_classes=10)
    r_new = copy.deepcopy(r_old)
    with torch.no_grad():  # a "new version": the old weights moved by 5 % noise
        for p in r_new.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p) if p.numel() > 1 else torch.zeros_like(p))
    images = np.repeat(np.kron(ds.X[:64, 0], np.ones((size // 8 + 1, size // 8 + 1), np.float32))
                       [:, None, :size, :size], 3, axis=1)
    rds = Dataset(X=np.ascontiguousarray(images), modality="image", source="digits upsampled to 3xHxW")
    for rt in args.runtimes:
        if rt == "onnxruntime":
            a = as_onnx_loaded(r_new, (3, size, size), _mk(workdir / "resnet_new"))
            b = as_onnx_loaded(r_old, (3, size, size), _mk(workdir / "resnet_old"))
        else:
            a = as_loaded(r_new, (3, size, size), name="resnet-new")
            b = as_loaded(r_old, (3, size, size), name="resnet-old")
        out.append((f"ResNet-18-shaped 3x{size}x{size}", rt, a, b, rds, 32))
    return out


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def throughput(model, ds, n: int, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of plain forwards on 2ⁿ real samples vs all 2ⁿ masked inputs of one sample (built,
    evaluated, turned into v), interleaved."""
    from governance_plugins.interaction.variables import (
        VariableSet,
        build_masked,
        evaluate_masked,
        output_value,
        patch_candidates,
    )

    rows = 1 << n
    X = np.ascontiguousarray(np.resize(ds.X, (rows, *ds.X.shape[1:])))
    x, b = ds.X[0], np.zeros_like(ds.X[0])
    cands = patch_candidates(ds.X.shape[1:], (4, 4))
    vs = VariableSet(cands.names[:n], cands.groups[:n], list(range(n)), "first n patches")
    labels = vs.labels(int(np.prod(ds.X.shape[1:])))
    predict = [lambda z: model.predict(z, batch_size=batch)]
    value = [lambda out: output_value(out, 0)]
    model.predict(X[:batch], batch_size=batch)  # warm-up
    plain, masked, overhead = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(X, batch_size=batch)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        evaluate_masked(predict, x, b, labels, n, value, rows)
        masked.append(time.perf_counter() - t)
        t = time.perf_counter()
        for start in range(0, rows, batch):
            idx = np.arange(start, min(start + batch, rows))
            output_value(np.zeros((len(idx), 10), np.float32), 0)
            build_masked(x, b, labels, n, idx)
        overhead.append(time.perf_counter() - t)
    tp, tm, to = float(np.median(plain)), float(np.median(masked)), float(np.median(overhead))
    return {"rows": rows, "plain_per_s": rows / tp, "masked_per_s": rows / tm, "ratio": tp / tm,
            "ratio_best": min(plain) / min(masked), "overhead_share": to / tm}


def end_to_end(model, peer, ds, n: int, n_samples: int, workdir: Path, solver: str) -> dict[str, float]:
    from governance.contract.method import MethodContext
    from governance_plugins.interaction.method import InteractionMethod

    cfg = InteractionMethod.parse_config({"n_variables": n, "n_samples": n_samples, "target": "predicted",
                                          "solver": solver})
    ctx = MethodContext(model=model, data=ds, config=cfg, seed=0, workdir=_mk(workdir / f"e2e_{n}"), peers=[peer])
    t = time.perf_counter()
    res = InteractionMethod().explain(ctx)
    total = time.perf_counter() - t
    rows = [r for r in res.tables["solver"] if r["problem"] == "joint"]
    return {"s_per_sample": total / n_samples, "eval_s": res.metrics["evaluation_seconds"] / n_samples,
            "extract_s": res.metrics["extraction_seconds"] / n_samples, "solver": rows[0]["solver"],
            "loss": res.metrics["loss"], "loss_gamma0": res.metrics["loss_gamma0"],
            "gap": res.metrics["lower_bound_gap"], "shared": res.metrics["shared_fraction"],
            "trad_s": (res.metrics.get("traditional_s_and", float("nan")) +
                       res.metrics.get("traditional_s_or", float("nan"))) / 2,
            "joint_s": (res.metrics["s_and"] + res.metrics["s_or"]) / 2}


def _solver_problems(n: int, samples: int):
    """Joint problems of two breast-cancer MLPs (seeds 0 and 1) on ``samples`` samples, n features each."""
    import torch

    from governance.testing.models import breast_cancer_dataset, trained_breast_cancer_mlp
    from governance_plugins.interaction.extract import ExtractOptions, joint_problem
    from governance_plugins.interaction.variables import VariableSet, evaluate_masked, output_value

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    nets = [trained_breast_cancer_mlp(seed=s)[0] for s in (0, 1)]
    torch.set_num_threads(threads)
    ds = breast_cancer_dataset()
    base = ds.X.mean(axis=0)
    predicts = [lambda z, net=net: net(torch.from_numpy(z)).detach().numpy() for net in nets]
    vs = []
    for row in range(samples):
        x, t = ds.X[row], int(ds.y[row])
        feats = np.argsort(-np.abs(x - base), kind="stable")[:n]
        labels = VariableSet([str(f) for f in feats], [np.array([f]) for f in feats], list(feats), "bench").labels(30)
        with torch.no_grad():
            v = evaluate_masked(predicts, x, base.astype(np.float32), labels, n,
                                [lambda o, t=t: output_value(o, t)] * 2, 1 << n)
        vs.append(v - v[:, :1])
    tau = 0.5 * np.mean([np.abs(v[:, -1]) for v in vs], axis=0)
    return [joint_problem(v, tau, ExtractOptions()) for v in vs]


SOLVER_TARGETS = {10: (1e-6, 1.0), 12: (1e-2, 10.0), 14: (1e-2, 120.0)}  # n: (certified gap, seconds / sample)


def solver_table(ns: list[int], samples: int, highs_limit: float) -> list[str]:
    """PDHG against HiGHS on the same problems; one row per n; returns the 'target met / not met' lines."""
    from governance_plugins.interaction.solver_lp import LPFailed, solve_lp
    from governance_plugins.interaction.solver_pdhg import PDHGSettings, solve_pdhg

    print("\n## joint solver (K = 2): first-order PDHG vs HiGHS interior point, same problems, same run")
    print(f"{'n':>3} {'PDHG s/smp':>10} {'PDHG loss':>11} {'certified':>11} {'gap':>9} {'HiGHS s/smp':>11} "
          f"{'HiGHS loss':>11} {'|Δloss|/L*':>10} {'time ratio':>10}  target")
    verdicts = []
    for n in ns:
        tol, seconds = SOLVER_TARGETS.get(n, (1e-6, 1.0))
        problems = _solver_problems(n, samples)
        sols = solve_pdhg(problems, PDHGSettings(tol=tol, time_limit=seconds * samples))
        t_pdhg = sum(s.seconds for s in sols) / samples
        highs, t_highs = [], 0.0
        for p in problems:
            t0 = time.perf_counter()
            try:
                highs.append(solve_lp(p, time_limit=highs_limit).loss)
            except LPFailed:
                highs.append(float("nan"))
            t_highs += (time.perf_counter() - t0) / samples
        gap = max(s.gap if s.gap is not None else float("inf") for s in sols)
        diff = max(abs(s.loss - h) / h if np.isfinite(h) else float("nan") for s, h in zip(sols, highs))
        met = gap <= tol and t_pdhg <= seconds
        verdicts.append(f"n = {n}: certified gap <= {tol:g} in <= {seconds:g} s/sample: "
                        f"{'met' if met else 'NOT met'} (gap {gap:.2e}, {t_pdhg:.1f} s/sample)")
        done = [h for h in highs if np.isfinite(h)]
        highs_txt = f"{np.mean(done):>11.6g}" if len(done) == len(highs) else f"{'no optimum':>11}"
        print(f"{n:>3} {t_pdhg:>10.2f} {np.mean([s.loss for s in sols]):>11.6g} "
              f"{np.mean([s.lower_bound for s in sols]):>11.6g} {gap:>9.2e} {t_highs:>11.2f} {highs_txt} "
              f"{diff:>10.2e} {t_highs / max(t_pdhg, 1e-9):>10.2f}  {'met' if met else 'NOT met'}", flush=True)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the default: solvers at n = 8, 10; small tables")
    parser.add_argument("--full", action="store_true", help="solver targets at n = 10, 12, 14; full tables")
    parser.add_argument("--solver-ns", type=int, nargs="+", default=None, help="n values of the solver table")
    parser.add_argument("--solver-samples", type=int, default=None, help="samples per solver row")
    parser.add_argument("--highs-limit", type=float, default=None, help="HiGHS time limit per problem (s)")
    parser.add_argument("--resnet-size", type=int, default=None, help="ResNet input side (default 224; quick 32)")
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="n values end to end (default 10 12)")
    parser.add_argument("--throughput-n", type=int, default=None, help="n for the throughput table")
    parser.add_argument("--resnet-e2e-size", type=int, default=None,
                        help="ResNet side for the end-to-end rows (default: --resnet-size)")
    parser.add_argument("--samples", type=int, default=1, help="samples per end-to-end run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "torch"])
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--skip-resnet-e2e", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true", help="throughput table only")
    parser.add_argument("--ort-threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads (default 1: steadier timings on a shared CPU; 0 = all)")
    args = parser.parse_args(argv)
    args.quick = not args.full
    import os

    os.environ["GOVERNANCE_ORT_THREADS"] = str(args.ort_threads)
    args.resnet_size = args.resnet_size or (32 if args.quick else 224)
    ns = args.ns or ([6, 7] if args.quick else [10, 12])
    repeats = args.repeats or (3 if args.quick else 7)
    workdir = Path(tempfile.mkdtemp(prefix="bench_interaction_"))
    print(f"# interaction benchmark ({'quick' if args.quick else 'full'}); ONNX Runtime threads "
          f"{args.ort_threads or 'all'}; workdir {workdir}", flush=True)
    verdicts = solver_table(args.solver_ns or ([10, 12, 14] if args.full else [8, 10]),
                            args.solver_samples or (2 if args.full else 1),
                            args.highs_limit or (300.0 if args.full else 120.0))
    nets = _models(args, workdir)

    print("\n## masked-input evaluation vs plain batched forward (same model, same batch size, same run)")
    print(f"{'network':<28} {'runtime':<12} {'rows':>6} {'plain/s':>10} {'masked/s':>10} {'ratio':>6} "
          f"{'best':>6} {'mask+v share':>12}")
    for label, rt, model, _peer, ds, batch in nets:
        big = "ResNet" in label and not args.quick
        n = args.throughput_n or (7 if big else (8 if args.quick else 12))
        r = throughput(model, ds, n, batch, 5 if big else repeats)
        print(f"{label:<28} {rt:<12} {r['rows']:>6} {r['plain_per_s']:>10.1f} {r['masked_per_s']:>10.1f} "
              f"{r['ratio']:>6.2f} {r['ratio_best']:>6.2f} {100 * r['overhead_share']:>11.1f}%", flush=True)

    if args.skip_e2e:
        _targets(verdicts)
        return 0
    print("\n## end to end, two model versions, seconds per sample")
    print(f"{'network':<28} {'runtime':<12} {'n':>3} {'s/sample':>9} {'eval s':>8} {'extract s':>9} "
          f"{'solver':<13} {'loss':>9} {'loss@γ0':>9} {'gap':>7} {'s joint':>7} {'s trad':>7}")
    for label, rt, model, peer, ds, _batch in nets:
        if "ResNet" in label and args.skip_resnet_e2e:
            continue
        if "ResNet" in label and args.resnet_e2e_size and args.resnet_e2e_size != args.resnet_size:
            continue  # handled below at the end-to-end size
        for n in ns:
            r = end_to_end(model, peer, ds, n, args.samples, workdir, args.solver)
            print(f"{label:<28} {rt:<12} {n:>3} {r['s_per_sample']:>9.1f} {r['eval_s']:>8.1f} {r['extract_s']:>9.1f} "
                  f"{r['solver']:<13} {r['loss']:>9.3g} {r['loss_gamma0']:>9.3g} {100 * r['gap']:>6.1f}% "
                  f"{r['joint_s']:>7.2f} {r['trad_s']:>7.2f}", flush=True)
    if args.resnet_e2e_size and args.resnet_e2e_size != args.resnet_size and not args.skip_resnet_e2e:
        sub = argparse.Namespace(**{**vars(args), "resnet_size": args.resnet_e2e_size})
        for label, rt, model, peer, ds, _batch in _models(sub, workdir / "e2e"):
            if "ResNet" not in label:
                continue
            for n in ns:
                r = end_to_end(model, peer, ds, n, args.samples, workdir, args.solver)
                print(f"{label:<28} {rt:<12} {n:>3} {r['s_per_sample']:>9.1f} {r['eval_s']:>8.1f} "
                      f"{r['extract_s']:>9.1f} {r['solver']:<13} {r['loss']:>9.3g} {r['loss_gamma0']:>9.3g} "
                      f"{100 * r['gap']:>6.1f}% {r['joint_s']:>7.2f} {r['trad_s']:>7.2f}", flush=True)
    print("\nratio = masked-input throughput / plain forward throughput, medians of interleaved repeats (target "
          ">= 0.9); best = the same with the fastest repeat of each (less sensitive to other load); mask+v share = CPU time to "
          "build the masked inputs and compute v, as a share of the masked run. gap = relative gap of the joint "
          "loss to the certified lower bound (0 for the exact LP). s = mean transferability (AND, OR) of the "
          "joint (Eq. 6) and per-model (Eq. 4) extractions.")
    _targets(verdicts)
    return 0


def _targets(verdicts: list[str]) -> None:
    print("\n## solver targets (issue 19)")
    for line in verdicts:
        print("  " + line)
    print("gap = certified relative duality gap (primal - dual) / dual of the first-order solver; time ratio = "
          "HiGHS seconds / PDHG seconds on the same problems (HiGHS exact; 'no optimum' = time limit reached).")


if __name__ == "__main__":
    sys.exit(main())
