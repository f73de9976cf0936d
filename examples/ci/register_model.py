"""CI step 1 (stands in for your training job): train a small classifier and register it as a new version.

Prints the new version number as the last line of stdout. The held-out split is logged beside the model as
``governance/eval.npz``, which is where ``governance promote`` finds labelled data to measure accuracy on.
``--epochs 0`` registers an untrained model: the release gate must block it.

    python examples/ci/register_model.py --name ci-demo --epochs 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def train(X: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (0: an untrained model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_breast_cancer()
    X = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    X_train, X_eval, y_train, y_eval = train_test_split(X, data.target.astype(np.int64), test_size=0.3,
                                                        random_state=args.seed, stratify=data.target)
    model = train(X_train, y_train, args.epochs, args.seed)
    mlflow.set_experiment("training")
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"epochs": args.epochs, "seed": args.seed})
        eval_file = Path(tmp) / "eval.npz"
        np.savez(eval_file, X=X_eval, y=y_eval, feature_names=np.array(data.feature_names),
                 class_names=np.array(data.target_names))
        mlflow.log_artifact(str(eval_file), "governance")
        info = mlflow.pytorch.log_model(model, name="model", input_example=X_eval[:2], pip_requirements=["torch"],
                                        registered_model_name=args.name)
    print(info.registered_model_version)


if __name__ == "__main__":
    main()
