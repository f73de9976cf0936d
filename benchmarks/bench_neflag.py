"""NeFLAG against Captum's Integrated Gradients (50 steps) and Saliency, measured in the same run on the same
inputs: seconds per explained input and deletion/insertion AUC (RISE's causal metric, zero substrate for images).

    python benchmarks/bench_neflag.py           # digits CNN (32 inputs) + ResNet-18-shaped at 3x224x224 (3 inputs)
    python benchmarks/bench_neflag.py --quick   # about a minute on an idle 2-core machine: 16 digits, 1 ResNet input

Everything goes through the plugin's own code (NeFLAG's batched sphere sampling, the Captum baselines and
governance.quality), so the numbers are what a governance run reports. Seconds per input are the median over
interleaved repeats (NeFLAG, IG, Saliency, variant, then again; 10 on digits and 3 on the ResNet by default),
because a shared machine's load drifts; process CPU seconds are shown too. AUCs come from one run.

Target (issue #3): NeFLAG at or below IG's cost per input, with a deletion AUC no worse than IG's. Besides the
spec's default (form B, rejection sampler S3, n = 20), one spec-sanctioned variant is measured: form A with the
descent sampler S4 (n = 4, m = 5).

The ResNet-18-shaped network has random weights (no pretrained weights offline). Its BatchNorm statistics are
re-estimated on 16 calibration images and its head is scaled to a logit spread of 5, so that its predictions are
not all ~1/1000. Even so, an untrained network's class probability collapses once a few percent of the pixels
go to the zero substrate, so every method's ResNet AUC comes out about the same (~0.01): those AUCs carry no
ranking information, and the ResNet rows are about cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Inputs for the random-weight ResNet: low-frequency colour fields in [0, 1] (not noise, not constant)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 7, 7, generator=g)
    img = torch.nn.functional.interpolate(low, size=(224, 224), mode="bicubic", align_corners=False)
    return torch.sigmoid(1.5 * img).numpy().astype(np.float32)


def calibrated_resnet(seed: int):
    """resnet18_shaped() with BatchNorm statistics from calibration images and a head with logit spread 5."""
    import torch

    from governance.testing.resnet import resnet18_shaped

    torch.manual_seed(seed)
    net = resnet18_shaped()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration batch
    calib = torch.from_numpy(smooth_images(16, seed + 1))
    net.train()
    with torch.no_grad():
        net(calib)
        net.eval()
        spread = net(calib).std(dim=1).mean()
        net.fc.weight.mul_(5.0 / spread)
        net.fc.bias.mul_(5.0 / spread)
    return net


def context(model, data, raw: dict, workdir: Path, seed: int):
    from governance.contract.method import MethodContext
    from governance_plugins.neflag.method import NeflagMethod

    return MethodContext(model=model, data=data, config=NeflagMethod.parse_config(raw), seed=seed, workdir=workdir)


def run_method(model, data, raw: dict, workdir: Path, seed: int):
    from governance_plugins.neflag.method import NeflagMethod

    return NeflagMethod().explain(context(model, data, raw, workdir, seed))


QUALITY_OFF = {"deletion_insertion": False, "max_sensitivity": False, "randomisation": False, "seed_stability": False}
VARIANT = {"form": "A", "sampler": "descent", "n_points": 4, "m": 5, "baselines": []}


def time_methods(model, data, n: int, repeats: int, workdir: Path, seed: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per input, wall clock and process CPU, of each method on the same inputs, interleaved."""
    from governance_plugins.neflag.runner import NeflagRun

    default = NeflagRun(context(model, data, {"n_samples": n, "quality": QUALITY_OFF}, workdir / "t0", seed)).prepare()
    variant = NeflagRun(context(model, data, {"n_samples": n, **VARIANT, "quality": QUALITY_OFF}, workdir / "t1",
                                seed)).prepare()
    jobs = {"neflag": (default.attributor, "neflag"), "ig": (default.attributor, "integrated_gradients"),
            "saliency": (default.attributor, "saliency"), "variant": (variant.attributor, "neflag")}
    out = {k: {"wall": [], "cpu": []} for k in jobs}
    for _ in range(repeats):
        for key, (attributor, method) in jobs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            attributor.run(method, default.X, default.targets)
            out[key]["wall"].append((time.perf_counter() - w0) / n)
            out[key]["cpu"].append((time.process_time() - c0) / n)
    return out


def bench_model(label: str, model, data, n: int, steps: int, repeats: int, workdir: Path, seed: int) -> list[dict]:
    t0 = time.perf_counter()
    quality = {**QUALITY_OFF, "deletion_insertion": True, "steps": steps}
    first = run_method(model, data, {"n_samples": n, "quality": quality}, workdir / "auc0", seed)
    variant = run_method(model, data, {"n_samples": n, **VARIANT, "quality": quality}, workdir / "auc1", seed)
    times = time_methods(model, data, n, repeats, workdir, seed)
    m, v = first.metrics, variant.metrics
    rows = [
        {"key": "neflag", "method": f"{first.details['variant']} (form B, S3; default)",
         "evals": m["evaluations_per_input"], "del": m["deletion_auc"], "ins": m["insertion_auc"]},
        {"key": "ig", "method": "Integrated Gradients (Captum, 50 steps)", "evals": 50.0,
         "del": m["ig_deletion_auc"], "ins": m["ig_insertion_auc"]},
        {"key": "saliency", "method": "Saliency (Captum)", "evals": 1.0,
         "del": m["saliency_deletion_auc"], "ins": m["saliency_insertion_auc"]},
        {"key": "variant", "method": "NeFLAG form A, S4 descent (n=4, m=5)", "evals": v["evaluations_per_input"],
         "del": v["deletion_auc"], "ins": v["insertion_auc"]},
    ]
    med = lambda v: float(np.median(v))  # noqa: E731
    ig_s, ig_c = med(times["ig"]["wall"]), med(times["ig"]["cpu"])
    for row in rows:
        t = times[row["key"]]
        row.update(model=label, n=n, s=med(t["wall"]), cpu=med(t["cpu"]), s_all=t["wall"], cpu_all=t["cpu"])
        row["x_ig"] = row["s"] / ig_s
        row["x_ig_cpu"] = row["cpu"] / ig_c
    print(f"  {label}: {time.perf_counter() - t0:.1f} s ({n} inputs, {repeats} timing repeat(s))", flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<34} {'method':<40} {'grad evals':>10} {'s/input':>9} {'× IG':>6} {'CPU s/in':>9} {'× IG':>6} "
            f"{'deletion↓':>9} {'insertion↑':>10} {'ins−del↑':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    last = None
    for r in rows:
        model = f"{r['model']} (n={r['n']})" if r["model"] != last else ""
        last = r["model"]
        print(f"{model:<34} {r['method']:<40} {r['evals']:>10.1f} {r['s']:>9.3g} {r['x_ig']:>6.2f} {r['cpu']:>9.3g} "
              f"{r['x_ig_cpu']:>6.2f} {r['del']:>9.4f} {r['ins']:>10.4f} {r['ins'] - r['del']:>8.4f}")
    print()
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["key"]: r for r in rows if r["model"] == model}
        for key, name in (("neflag", "default"), ("variant", "form A/S4")):
            r, ig = by[key], by["ig"]
            cost = "yes" if r["s"] <= ig["s"] else "NO"
            dele = "yes" if r["del"] <= ig["del"] else "NO"
            print(f"target on {model}, NeFLAG {name}: cost ≤ IG: {cost} ({r['x_ig']:.2f}× wall, "
                  f"{r['x_ig_cpu']:.2f}× CPU); deletion AUC ≤ IG: {dele} ({r['del']:.4f} vs {ig['del']:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="under a minute: fewer inputs, one ResNet input")
    ap.add_argument("--digits-inputs", type=int, default=None)
    ap.add_argument("--resnet-inputs", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="deletion/insertion steps (default 20; 10 with --quick)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timing repeats on the ResNet (default 3; 1 with --quick); digits get max(10, this)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    import torch

    from governance.contract.dataset import Dataset
    from governance.testing import models as tm

    n_digits = args.digits_inputs or (16 if args.quick else 32)
    n_resnet = args.resnet_inputs or (1 if args.quick else 3)
    steps = args.steps or (10 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    digit_repeats = max(5 if args.quick else 10, repeats)
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; seed {args.seed}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-neflag-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cnn, digits = tm.trained_digits_cnn(epochs=4 if args.quick else 8)
        cnn_model = tm.as_loaded(cnn, (1, 8, 8), name="digits-cnn")
        print(f"  digits CNN trained in {time.perf_counter() - t0:.1f} s", flush=True)
        # warm-up (imports, thread pools, allocator), not measured
        run_method(cnn_model, digits, {"n_samples": 2, "quality": {"deletion_insertion": True, "steps": 4,
               **{k: v for k, v in QUALITY_OFF.items() if k != "deletion_insertion"}}}, tmp / "warm", args.seed)
        rows += bench_model("digits CNN 1x8x8", cnn_model, digits, n_digits, steps, digit_repeats, tmp / "digits",
                            args.seed)

        resnet = tm.as_loaded(calibrated_resnet(args.seed), (3, 224, 224), name="resnet18-shaped")
        warm = torch.from_numpy(smooth_images(55, args.seed + 2)).requires_grad_(True)  # first touch of memory
        resnet.torch_module()(warm).sum().backward()
        del warm
        images = Dataset(X=smooth_images(n_resnet, args.seed), modality="image", source="synthetic smooth images")
        rows += bench_model("ResNet-18-shaped 3x224x224", resnet, images, n_resnet, steps, repeats, tmp / "resnet",
                            args.seed)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
