"""Quick start: train two small models, register two versions of each as PyTorch AND ONNX, explain them and
render signed compliance reports. Everything runs on CPU in about a minute, against the local store
sqlite:///mlflow.db. The reports are signed with a throw-away test key made by `governance keygen` in a
temporary folder; its certificate is kept beside the reports so `governance verify --trust` can check them.

    python examples/quickstart/quickstart.py [--tracking-uri URI] [--out DIR] [--fresh]

Registered models (two versions each; alias ``champion`` on version 2):
  digits-cnn, digits-cnn-onnx               small CNN on scikit-learn's 8x8 digits
  breast-cancer-mlp, breast-cancer-mlp-onnx  MLP on scikit-learn's breast-cancer data
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODELS = {
    "digits-cnn": ("digits", dict(epochs=(3, 8))),
    "breast-cancer-mlp": ("breast-cancer", dict(epochs=(5, 30))),
}


def say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def train_versions(kind: str, epochs: tuple[int, int]):
    """Two versions: v1 under-trained, v2 trained longer (a realistic 'new version')."""
    from governance import Dataset
    from governance.testing.models import (breast_cancer_dataset, digits_cnn, digits_dataset, tabular_mlp,
                                           train)

    ds = digits_dataset() if kind == "digits" else breast_cancer_dataset()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds))
    n_test = len(ds) // 5
    test, train_idx = idx[:n_test], idx[n_test:]
    train_ds = Dataset(X=ds.X[train_idx], y=ds.y[train_idx], feature_names=ds.feature_names,
                       class_names=ds.class_names, modality=ds.modality, source=ds.source)
    versions = []
    for v, ep in enumerate(epochs, start=1):
        module = digits_cnn() if kind == "digits" else tabular_mlp(ds.n_features, 2)
        train(module, train_ds, epochs=ep, lr=3e-3, seed=v)
        versions.append((module, ep))
    return versions, ds, test


def register(name: str, kind: str, epochs: tuple[int, int], client, workdir: Path) -> None:
    import mlflow
    import onnx
    import torch

    from governance.testing.models import export_onnx

    versions, ds, test = train_versions(kind, epochs)
    X_test, y_test = ds.X[test], ds.y[test]
    eval_path = workdir / "eval.npz"
    np.savez(eval_path, X=X_test, y=y_test, feature_names=np.array(ds.feature_names or []),
             class_names=np.array(ds.class_names or []))
    mlflow.set_experiment(f"quickstart-{name}")
    for v, (module, ep) in enumerate(versions, start=1):
        with torch.no_grad():
            acc = float((module(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())
        with mlflow.start_run(run_name=f"{name}-v{v}"):
            mlflow.log_params({"epochs": ep, "optimizer": "adam", "lr": 3e-3, "seed": v, "dataset": ds.source})
            mlflow.log_metric("test_accuracy", acc)
            mlflow.log_artifact(str(eval_path), "governance")  # the data governance explains by default
            mlflow.pytorch.log_model(module, name="model", input_example=X_test[:2], pip_requirements=["torch"],
                                     registered_model_name=name)
            path = export_onnx(module, ds.sample_shape, workdir / f"{name}-v{v}.onnx")
            mlflow.onnx.log_model(onnx.load(str(path)), name="onnx-model", input_example=X_test[:2],
                                  pip_requirements=["onnx", "onnxruntime"], registered_model_name=f"{name}-onnx")
        say(f"registered {name} v{v} and {name}-onnx v{v} (test accuracy {acc:.3f})")
    for reg_name in (name, f"{name}-onnx"):
        client.set_registered_model_alias(reg_name, "champion", "2")
        client.update_registered_model(reg_name, description=(
            f"Quick-start {kind} classifier. Intended use: demonstration of governance reports; "
            "not for clinical or production decisions."))
        client.set_model_version_tag(reg_name, "2", "governance.intended_use",
                                     "Demonstration of the governance tool on scikit-learn's bundled data.")


def test_signing_key(keys: Path, out: Path) -> tuple[Path, Path]:
    """A throw-away key and self-signed certificate from `governance keygen`; the certificate is copied
    beside the reports (the key is deleted with the temporary folder)."""
    subprocess.run([sys.executable, "-m", "governance", "keygen", "--out", str(keys), "--name",
                    "Quick-start test signer (not a real identity)"], check=True, stdout=subprocess.DEVNULL)
    out.mkdir(parents=True, exist_ok=True)
    cert = out / "quickstart-signer-cert.pem"
    shutil.copy(keys / "cert.pem", cert)
    say(f"signing the reports with a test key; its certificate is {cert}")
    return keys / "key.pem", cert


def verified(pdf: Path | None, cert: Path) -> bool:
    from governance.report import verify_report

    check = verify_report(pdf, trust=[cert])
    say(f"  verify: {'VERIFIED, signed by ' + check.signers[0]['name'] if check.ok else 'NOT VERIFIED'}"
        f"  (governance verify {pdf} --trust {cert})")
    return check.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--out", default="governance-reports", help="where the reports are written")
    parser.add_argument("--fresh", action="store_true", help="register new versions even if they exist")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="reports made at the same time, one process each (default: 2, or 1 on one core)")
    example_policy = Path(__file__).resolve().parents[1] / "policy.yaml"
    parser.add_argument("--policy", default=str(example_policy) if example_policy.is_file() else None,
                        help="policy file for the pass/fail verdict (default: examples/policy.yaml)")
    args = parser.parse_args()

    import mlflow

    import governance
    from governance.host.tracking import client as make_client

    t0 = time.time()
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_registry_uri(args.tracking_uri)
    client = make_client(args.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, opts) in MODELS.items():
            existing = client.search_model_versions(f"name='{name}'")
            if len(existing) >= 2 and not args.fresh:
                say(f"{name} already has {len(existing)} versions in {args.tracking_uri}: reusing them")
                continue
            register(name, kind, opts["epochs"], client, Path(tmp))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(var, None)

    failures = 0
    uris = ("models:/digits-cnn@champion", "models:/breast-cancer-mlp-onnx@champion")
    jobs = max(1, min(args.jobs, len(uris)))
    with tempfile.TemporaryDirectory() as keys:
        key, cert = test_signing_key(Path(keys), Path(args.out))
        args.sign = (str(key), str(cert))
        say(f"explaining and reporting on {', '.join(uris)} ({jobs} at a time) ...")
        for res in run_reports(uris, args, jobs):
            verdict = f", policy verdict {res['verdict']}" if res["verdict"] else ""
            say(f"  {res['uri']}: {res['pdf']}  (run {res['run_id']}, run status {res['run_status']}{verdict}, "
                f"{res['seconds']:.0f} s: " + ", ".join(f"{m} {s:.1f} s" for m, s in res["methods"].items()) + ")")
            # a failed policy check is a finding the report documents, not a failure of the quick start
            failures += res["run_status"] != "ok"
            failures += not verified(Path(res["pdf"]), cert)
    say(f"done in {time.time() - t0:.0f} s. Open the PDFs under {args.out}/, or browse the runs with "
        f"`mlflow ui --backend-store-uri {args.tracking_uri}`.")
    return 1 if failures else 0


def report_one(uri: str, tracking_uri: str, out: str, policy: str | None, threads: int,
               sign: tuple[str, str]) -> dict:
    """One model's report (in its own process when several run at once): explain, render, sign, log, tag."""
    import json

    import torch

    os.environ["GOVERNANCE_ORT_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    import governance

    t = time.time()
    result = governance.report_model(uri, tracking_uri=tracking_uri, output_dir=out, policy=policy,
                                     sign_key=sign[0], sign_cert=sign[1])
    doc = json.loads(Path(result.json_path).read_text())
    return {"uri": uri, "pdf": str(result.pdf), "run_id": result.run_id, "run_status": result.run_status,
            "verdict": result.verdict, "seconds": time.time() - t,
            "methods": {e["method"]: e.get("seconds") or 0.0 for e in doc["explanations"]}}


def run_reports(uris: tuple[str, ...], args: argparse.Namespace, jobs: int) -> list[dict]:
    """The reports, ``jobs`` at a time: methods are single-threaded enough on small models that one process
    per core beats one process with every core (measured: see the README's quick-start timing)."""
    if jobs == 1:
        return [report_one(u, args.tracking_uri, args.out, args.policy, os.cpu_count() or 1, args.sign) for u in uris]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(report_one, u, args.tracking_uri, args.out, args.policy, threads, args.sign)
                   for u in uris]
        return [f.result() for f in futures]


if __name__ == "__main__":
    sys.exit(main())
