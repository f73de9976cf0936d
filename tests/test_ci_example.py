"""examples/ci end to end: the shell step registers an untrained model and `governance promote` blocks it (exit
11, the alias does not move), then registers a trained one and promotes it (exit 0). The GitHub Actions workflow
runs that same step, with options the real CLI accepts."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "examples" / "ci"
TINY_POLICY = "name: tiny gate\nrequired_methods: [occlusion]\nchecks:\n" \
              "  - metric: performance.accuracy\n    op: \">=\"\n    value: 0.9\n"


def _step(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GOVERNANCE_"))}
    base.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                PYTHON=sys.executable, PYTHONPATH=str(ROOT / "tests" / "fixture_plugins"),
                MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", MODEL_NAME="ci-demo", ALIAS="champion",
                POLICY=str(tmp_path / "tiny.yaml"), REPORTS=str(tmp_path / "reports"),
                PROMOTE_ARGS="--plugins testplugin --methods occlusion --max-samples 16 --no-pdf", **env)
    return subprocess.run(["bash", str(CI / "promote.sh")], cwd=tmp_path, env=base, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_the_ci_step_blocks_a_bad_version_then_promotes_the_fixed_one(tmp_path):
    from mlflow import MlflowClient

    (tmp_path / "tiny.yaml").write_text(TINY_POLICY)
    blocked = _step(tmp_path, TRAIN_ARGS="--epochs 0")
    assert blocked.returncode == 11, blocked.stdout + blocked.stderr
    assert "::error title=governance gate::ci-demo version 1 is blocked" in blocked.stdout
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert "champion" not in client.get_registered_model("ci-demo").aliases
    assert client.get_model_version("ci-demo", "1").tags["governance.gate"] == "blocked"

    fixed = _step(tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "promoted: @champion now points at ci-demo version 2" in fixed.stdout
    assert str(client.get_registered_model("ci-demo").aliases["champion"]) == "2"
    tags = client.get_model_version("ci-demo", "2").tags
    assert tags["governance.gate"] == "passed" and tags["governance.verdict"] == "pass"
    assert (tmp_path / "reports" / "ci-demo-v2" / "report.json").is_file()


def test_the_workflow_runs_the_step_with_options_promote_accepts():
    import click

    from governance.cli import cli
    from governance.report.policy import load_policy

    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    (job,) = flow["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    assert "bash examples/ci/promote.sh" in runs
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"].startswith(job["env"]["REPORTS"])
    script = (CI / "promote.sh").read_text()
    for name in ("MODEL_NAME", "ALIAS", "POLICY", "REPORTS", "PROMOTE_ARGS"):
        assert name in job["env"] and "${" + name in script
    args = shlex.split(job["env"]["PROMOTE_ARGS"].replace("${{ vars.GOVERNANCE_NOTIFY_URL }}", "https://x.example/h"))
    argv = ["models:/ci-demo/1", "--to", "champion", "--policy", str(CI / "release-gate.yaml"), *args]
    with click.Context(cli) as root:
        ctx = cli.get_command(root, "promote").make_context("promote", argv, parent=root)
    assert ctx.params["alias"] == "champion" and ctx.params["notify"] == "https://x.example/h"
    policy = load_policy(job["env"]["POLICY"].replace("examples/ci", str(CI)))
    assert policy.on_missing == "fail" and "neflag" in policy.required_methods
