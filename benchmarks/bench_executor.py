"""Executors benchmark: wall time of one job (4 registered model versions x 2 methods) on the local executor
and on Ray, measured in the same run.

    python benchmarks/bench_executor.py            # 4 models, 256 samples each, Ray with every CPU
    python benchmarks/bench_executor.py --quick    # 4 models, 64 samples (< 60 s on a quiet 2-core machine)
    python benchmarks/bench_executor.py --methods neflag,spectral --cpus 8

Methods: the given ones, else the built-in neflag and spectral, else the fixture plugin's occlusion plus the
plugin template's gradient x input (made discoverable through an entry point in the temporary folder).
Everything is written below a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def register_models(root: Path, n_eval: int) -> tuple[str, list[str], Path]:
    """A SQLite store with 4 digits models: two torch versions and two ONNX versions."""
    import mlflow
    import onnx

    from governance.testing.models import export_onnx, trained_digits_cnn

    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    uris = []
    for seed in (0, 1):
        cnn, digits = trained_digits_cnn(seed=seed, epochs=4)
        with mlflow.start_run():
            mlflow.pytorch.log_model(cnn, name="model", input_example=digits.X[:2], pip_requirements=["torch"],
                                     registered_model_name="bench-cnn")
        path = export_onnx(cnn, (1, 8, 8), root / f"cnn{seed}.onnx")
        with mlflow.start_run():
            mlflow.onnx.log_model(onnx.load(str(path)), name="model", input_example=digits.X[:2],
                                  pip_requirements=["onnx"], registered_model_name="bench-cnn-onnx")
        uris += [f"models:/bench-cnn/{seed + 1}", f"models:/bench-cnn-onnx/{seed + 1}"]
    data = root / "eval.npz"
    idx = np.random.default_rng(0).choice(len(digits.X), n_eval, replace=False)
    np.savez(data, X=digits.X[idx], y=digits.y[idx])
    return uri, uris, data


def plugin_paths(root: Path, methods: list[str] | None) -> tuple[list[str], list[str], dict]:
    """(methods, extra sys.path entries, per-method config)."""
    from governance.host.plugins import PluginHost

    host = PluginHost(strict=False)
    if methods:
        return methods, [], {}
    if {"neflag", "spectral"} <= set(host.methods):  # a gradient method and a forward-only one
        return ["neflag", "spectral"], [], {}
    # the plugin template, discoverable through its entry point without building it
    dist = root / "plugins" / "governance_gradinput-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: governance-gradinput\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[governance.plugins]\ngradinput = governance_gradinput\n")
    extra = [str(root / "plugins"), str(ROOT / "examples" / "plugin-template" / "src"),
             str(ROOT / "tests" / "fixture_plugins")]
    return ["occlusion", "gradinput"], extra, {"occlusion": {"n_samples": 16}, "gradinput": {"n_samples": 256}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 evaluation samples instead of 256")
    ap.add_argument("--methods", help="two methods to run (default: see module docstring)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the local Ray instance")
    args = ap.parse_args()
    n_eval = 64 if args.quick else 256

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as tmp:
        root = Path(tmp)
        os.chdir(root)  # MLflow writes new experiments' artifacts to ./mlruns, Ray workers start here
        methods, extra, config = plugin_paths(root, args.methods.split(",") if args.methods else None)
        sys.path[:0] = extra
        os.environ["PYTHONPATH"] = os.pathsep.join([*extra, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        from governance.host.plugins import get_plugin_host

        get_plugin_host(refresh=True)
        t = time.perf_counter()
        tracking, uris, data = register_models(root, n_eval)
        import torch

        print(f"setup: 4 models registered in {time.perf_counter() - t:.1f} s; methods {', '.join(methods)}; "
              f"{n_eval} samples; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch threads "
              f"here {torch.get_num_threads()}, in each Ray worker 1 (Ray sets OMP_NUM_THREADS per task)")

        import governance.api as api
        from governance.run.executors import RayExecutor

        job = dict(methods=methods, data=str(data), tracking_uri=tracking, config=config, force=True, seed=0)
        rows = []
        t = time.perf_counter()
        local = api.explain_many(uris, executor="local", experiment="bench-local", workdir=root / "local", **job)
        first_local = time.perf_counter() - t
        t = time.perf_counter()  # again, now that this process has imported and loaded everything once
        api.explain_many(uris, executor="local", experiment="bench-local", workdir=root / "local2", **job)
        rows.append(("explain 4 models x 2 methods", "local (warm process)", time.perf_counter() - t))
        rows.append(("explain 4 models x 2 methods", "local (first call, cold imports)", first_local))

        t = time.perf_counter()
        ray_ex = RayExecutor(num_cpus=args.cpus, temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
                             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if extra else None)
        started = time.perf_counter() - t
        try:
            t = time.perf_counter()
            cold = api.explain_many(uris, executor=ray_ex, experiment="bench-ray", workdir=root / "ray1", **job)
            rows.append(("explain 4 models x 2 methods", "ray (cold workers, + start)",
                         time.perf_counter() - t + started))
            t = time.perf_counter()
            api.explain_many(uris, executor=ray_ex, experiment="bench-ray", workdir=root / "ray2", **job)
            rows.append(("explain 4 models x 2 methods", "ray (warm workers)", time.perf_counter() - t))

            diffs = [f"{a.model['uri']} {ea.method}: {d}" for a, b in zip(local, cold)
                     for ea, eb in zip(a.explanations, b.explanations) for d in differences(ea, eb)]
            same = not diffs
        finally:
            ray_ex.close()
            os.chdir(cwd)

    print(f"\nray: started in {started:.1f} s with {args.cpus} CPUs\n")
    print(f"{'job':34} {'executor':34} {'wall s':>8} {'vs local':>9}")
    base = {}
    for job_name, ex, secs in rows:
        base.setdefault(job_name, secs)
        print(f"{job_name:34} {ex:34} {secs:8.2f} {secs / base[job_name]:8.2f}x")
    print(f"\nidentical results (1e-6, wall-time metrics excepted): explanations {same}")
    for line in diffs[:20]:
        print("  differs:", line)


def differences(a, b) -> list[str]:
    """Metrics (wall-time ones excepted) and arrays that differ by more than 1e-6 between two runs."""
    from governance.testing.conformance import is_timing_metric

    out = [f"metric {k}: {a.metrics[k]!r} vs {b.metrics.get(k)!r}" for k in a.metrics
           if not is_timing_metric(k) and not abs(a.metrics[k] - b.metrics.get(k, np.inf)) <= 1e-6 * max(1.0, abs(a.metrics[k]))]
    for k, arr in a.arrays.items():
        other = b.arrays.get(k)
        if other is None or arr.shape != other.shape or not np.allclose(arr, other, rtol=1e-6, atol=1e-6, equal_nan=True):
            out.append(f"array {k}")
    return out


if __name__ == "__main__":
    main()
