"""Build a realistic finished run for report tests: a trained breast-cancer MLP exported to ONNX (real
model files to hash), gradient x input attributions and an occlusion curve computed on it (real numbers,
real matplotlib PNGs), written in the pipeline's workdir layout (``explanations/<method>/...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from governance.contract.model import ModelVersionInfo
from governance.contract.results import Explanation, RunResult



def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save(fig: Any, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def build_run(root: Path) -> RunResult:
    """A finished RunResult with its workdir under ``root/work``."""
    import torch

    from governance.contract.figures import pyplot
    from governance.testing.models import export_onnx, trained_breast_cancer_mlp

    plt = pyplot()
    root.mkdir(parents=True, exist_ok=True)
    module, ds = trained_breast_cancer_mlp(epochs=5)
    model_dir = root / "model"
    model_dir.mkdir(exist_ok=True)
    export_onnx(module, ds.sample_shape, model_dir / "model.onnx")
    (model_dir / "MLmodel").write_text("flavors:\n  onnx:\n    onnx_version: 1.17.0\n", encoding="utf-8")
    files = {p.name: _sha(p) for p in sorted(model_dir.iterdir()) if p.is_file()}

    x = torch.tensor(ds.X[:64], requires_grad=True)
    logits = module(x)
    pred = logits.argmax(1)
    logits.gather(1, pred[:, None]).sum().backward()
    attr = (x.grad * (x - torch.tensor(ds.baseline))).detach().numpy()
    with torch.no_grad():
        acc = float((module(torch.tensor(ds.X)).argmax(1).numpy() == ds.y).mean())

    # deletion curve: remove features by |attribution| (most important first) vs random order
    order = np.argsort(-np.abs(attr), axis=1)
    fractions = np.linspace(0, 1, 11)
    def curve(idx: np.ndarray) -> np.ndarray:
        out = []
        for f in fractions:
            xm = ds.X[:64].copy()
            k = int(round(f * xm.shape[1]))
            rows = np.arange(64)[:, None]
            xm[rows, idx[:, :k]] = ds.baseline[idx[:, :k]]
            with torch.no_grad():
                p = torch.softmax(module(torch.tensor(xm)), 1).numpy()
            out.append(p[np.arange(64), pred.numpy()].mean())
        return np.array(out)
    rng = np.random.default_rng(0)
    deletion = curve(order)
    random_curve = curve(np.argsort(rng.random(attr.shape), axis=1))
    auc = float(np.trapezoid(deletion, fractions))
    auc_random = float(np.trapezoid(random_curve, fractions))

    work = root / "work"
    exp_dir = work / "explanations"
    mean_abs = np.abs(attr).mean(0)
    top = np.argsort(-mean_abs)[:10]

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh([ds.feature_names[i] for i in top][::-1], mean_abs[top][::-1], color="#1f3a5f")
    ax.set_xlabel("mean |gradient × (input − baseline)|")
    ax.set_title("Top 10 features by attribution")
    f_bars = _save(fig, exp_dir / "neflag", "attribution_bars")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(fractions, deletion, marker="o", label=f"attribution order (AUC {auc:.3f})")
    ax.plot(fractions, random_curve, marker="s", label=f"random order (AUC {auc_random:.3f})")
    ax.set_xlabel("fraction of features replaced by the baseline")
    ax.set_ylabel("probability of predicted class")
    ax.set_title("Deletion curve")
    ax.legend()
    f_curve = _save(fig, exp_dir / "neflag", "deletion_curve")
    np.savez(exp_dir / "neflag" / "arrays.npz", attributions=attr)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(attr.sum(1), bins=20, color="#6b8fb5")
    ax.set_xlabel("sum of attributions per sample")
    ax.set_ylabel("samples")
    ax.set_title("Completeness of attributions")
    f_hist = _save(fig, exp_dir / "interpreter", "completeness")

    neflag = Explanation(
        method="neflag", summary="Gradient-flux attributions concentrate on a handful of size and texture features.",
        metrics={"deletion_auc": auc, "random_deletion_auc": auc_random, "insertion_auc": 1 - auc, "seed_stability": 0.93},
        figures={"attribution_bars": f_bars, "deletion_curve": f_curve},
        tables={"top_features": [{"feature": ds.feature_names[i], "mean_abs_attribution": float(mean_abs[i]),
                                  "rank": r + 1} for r, i in enumerate(top)]},
        findings=[f"'{ds.feature_names[top[0]]}' carries the largest attribution.",
                  "Deleting the top-attributed features lowers confidence faster than a random order."],
        warnings=["The baseline is the feature mean; attributions are relative to it."],
        method_version="0.1.0", title="NeFLAG negative-flux attributions", config={"n_steps": 32, "samples": 64},
        seed=0, seconds=0.42, plugin="neflag",
    )
    interpreter = Explanation(
        method="interpreter", summary="A sparse interpreter reproduces the model's decisions.",
        metrics={"fidelity": 0.97, "conciseness": 3.2}, figures={"completeness": f_hist},
        findings=["Interpreter and model agree on 97 % of the held-out samples."],
        method_version="0.1.0", title="FLINT-style interpreter", config={"epochs": 2}, seed=0, seconds=1.3,
        plugin="interpreter",
    )
    bort = Explanation(method="bort", status="skipped", reason="needs the model's weights, which this runtime does not expose",
                       method_version="0.1.0", title="Bort weight audit", plugin="bort")
    spectral = Explanation(method="spectral", status="failed", reason="RuntimeError: ONNX operator Loop is not supported",
                           error_type="RuntimeError", method_version="0.1.0", title="SpecXAI spectral characterisation",
                           plugin="spectral", seconds=0.01)
    for e in (neflag, interpreter):
        folder = exp_dir / e.method
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(e.to_dict(), indent=2), encoding="utf-8")

    description = "## Intended use\nRanks biopsy reports for a second reading by a pathologist.\n\n## Limitations\nTrained on one hospital's data."
    tags = {"governance.users": "Pathology department; screening programme analysts",
            "mlflow.source.git.commit": "3f2c1d0e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e"}
    name = "breast-cancer-mlp"
    info = ModelVersionInfo(
        uri=f"models:/{name}/3", kind="registry", name=name, version="3", run_id="a1b2c3d4e5f60718293a4b5c6d7e8f90",
        model_id="m-0123456789abcdef", source="models:/m-0123456789abcdef", aliases=["champion"], tags=tags,
        description=description, created_at="2026-11-20T09:12:00+00:00", status="READY",
        flavors={"onnx": {"onnx_version": "1.17.0", "code": None}}, files=files,
    )
    model = info.to_dict()
    model["training_run"] = {"params": {"epochs": "5", "lr": "0.01", "hidden": "32,16"},
                             "metrics": {"train_accuracy": acc, "val_loss": 0.083}, "tags": {}}
    model["previous_version"] = {"version": "2", "run_id": "0f9e8d7c6b5a49382716", "content_sha256": "ab" * 32,
                                 "files": {**files, "model.onnx": "cd" * 32}, "status": "READY"}
    run = RunResult(
        model=model,
        runtime={"runtime": "onnxruntime", "device": "cpu",
                 "input": {"name": "x", "shape": [None, 30], "dtype": "float32"},
                 "output": {"name": "logits", "shape": [None, 2], "dtype": "float32"},
                 "gradients": True, "torch_unavailable_reason": None, "parity_max_abs_diff": 1.2e-7},
        data=ds.describe(), config={"methods": ["neflag", "interpreter", "bort", "spectral"], "seed": 0, "device": "auto"},
        environment={"python": "3.11.7", "torch": torch.__version__, "onnxruntime": "1.32.0", "mlflow": "3.17.2",
                     "platform": "Linux-x86_64", "device": "cpu"},
        plugins=[{"name": "neflag", "module": "governance_plugins.neflag", "distribution": "governance", "version": "0.1.0",
                  "status": "loaded", "methods": ["neflag"], "builtin": True},
                 {"name": "acme", "module": "acme_governance", "distribution": "acme-governance", "version": "2.0",
                  "status": "failed", "error": "ImportError: no module named acme_internal\nTraceback...", "methods": []}],
        explanations=[neflag, interpreter, bort, spectral],
        performance={"evaluation": {"accuracy": acc, "n": len(ds), "on": ds.source}},
        invocation=f"governance report models:/{name}/3 --policy policy.yaml",
        mlflow_run_id="feedbeef00112233445566778899aabb", experiment_id="1", tracking_uri="sqlite:///mlflow.db",
        started_at="2026-11-24T10:30:00+00:00", finished_at="2026-11-24T10:31:05+00:00", status="partial",
        config_hash="9c1f0e2d", workdir=work,
    )
    (work / "run.json").write_text(json.dumps(run.to_dict(), indent=2), encoding="utf-8")
    return run


def hostile(run: RunResult, port: int) -> RunResult:
    """A copy of ``run`` whose registry text tries markup, script and network fetches against ``port``."""
    import copy

    url = f"http://127.0.0.1:{port}"
    bad = copy.copy(run)
    model = copy.deepcopy(run.model)
    model["name"] = "mlp<b>bold</b><script>x()</script>"
    model["description"] = (f"<script>document.title='pwned'</script><img src=\"{url}/img\">"
                            f"<link rel=\"attachment\" href=\"file:///etc/hostname\">\n## Limitations\n"
                            f"<style>body {{ background: url({url}/style) }}</style>")
    model["tags"] = {
        **model["tags"],
        "governance.out_of_scope_use": f"background-image: url({url}/css); <iframe src=\"{url}/iframe\"></iframe>",
        "governance.risks": f"</td></tr></table><object data=\"{url}/object\"></object>",
        "evil": f"<svg onload=alert(1)><image href=\"{url}/svg\"/></svg>",
    }
    bad.model = model
    bad.explanations = [copy.copy(e) for e in run.explanations]
    bad.explanations[0].findings = [*bad.explanations[0].findings, f"<img src='{url}/finding'>"]
    return bad
