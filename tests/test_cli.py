"""The command line as users meet it: exit codes, messages with fixes, --json, lazy start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def test_help_does_not_import_heavy_packages():
    code = ("import sys\nfrom governance.cli import cli\ntry:\n    cli.main(['--help'], prog_name='governance', standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'mlflow', 'onnxruntime', 'weasyprint', 'matplotlib', 'numpy', 'rich',\n"
            "                     'pandas', 'scipy', 'sklearn', 'pydantic', 'onnx', 'jinja2') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert "Usage: governance" in out.stdout
    assert out.stdout.strip().endswith("HEAVY="), out.stdout[-300:]


def test_console_script_runs_end_to_end(registry, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri}
    exe = os.path.join(os.path.dirname(sys.executable), "governance")
    out = subprocess.run([exe, "run", "models:/bc-mlp/1", "--methods", "occlusion", "--json"],
                         capture_output=True, text=True, env={**env, "PYTHONPATH": str(_fixture_path())}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["explanations"][0]["method"] == "occlusion"


def _fixture_path():
    from tests.conftest import FIXTURE_PLUGINS

    return FIXTURE_PLUGINS


def test_run_json_and_exit_code_10_on_failed_method(registry, test_plugins, cli_invoke, tmp_path):
    code, out, err = cli_invoke("run", "models:/digits-cnn/2", "--methods", "occlusion,crash", "--data",
                                str(registry.data["digits"]), "--tracking-uri", registry.uri, "--json",
                                "--experiment", "cli-crash", "--trust-pickle")  # v2 is a pickle-format model
    assert code == 10
    doc = json.loads(out)
    assert [e["status"] for e in doc["explanations"]] == ["ok", "failed"]


@pytest.mark.parametrize("args, code, needle", [
    (["run", "models:/nope/1"], 4, "no registered model named 'nope'"),
    (["run", "models:/digits-cnn/9"], 4, "has no version 9"),
    (["run", "models:/digits-cnn"], 4, "names no version or alias"),
    (["run", "models:/digits-cnn/1", "--methods", "occlusoin"], 2, "unknown method 'occlusoin'"),
    (["run", "models:/digits-cnn/1", "--set", "occlusion.n_sample=3"], 2, "invalid configuration for method"),
    (["run", "models:/digits-cnn/1", "--set", "oops"], 2, "is not METHOD.KEY=VALUE"),
    (["run", "models:/digits-cnn/1", "--data", "/does/not/exist.npz"], 5, "does not exist"),
    (["run", "models:/digits-cnn/1", "--tracking-uri", "http://127.0.0.1:9"], 6, "cannot reach"),
])
def test_bad_input_messages_and_exit_codes(registry, test_plugins, cli_invoke, args, code, needle):
    if "--tracking-uri" not in args:
        args = [*args, "--tracking-uri", registry.uri]
    got, out, err = cli_invoke(*args)
    assert got == code, (out, err)
    assert needle in err and "hint:" in err


def test_nan_and_shape_errors_from_cli(registry, test_plugins, cli_invoke, tmp_path):
    X = np.load(registry.data["bc"])["X"].copy()
    X[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X=X)
    code, _, err = cli_invoke("run", "models:/bc-mlp/1", "--data", str(tmp_path / "nan.npz"), "--tracking-uri",
                              registry.uri, "--methods", "occlusion")
    assert code == 5 and "NaN" in err
    code, _, err = cli_invoke("run", "models:/bc-mlp/1", "--data", str(registry.data["digits"]), "--tracking-uri",
                              registry.uri, "--methods", "occlusion")
    assert code == 5 and "does not fit bc-mlp v1" in err


def test_plugins_command_lists_failed_and_builtin(test_plugins, cli_invoke):
    code, out, _ = cli_invoke("plugins", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["testplugin"]["status"] == "loaded" and rows["broken"]["status"] == "failed"
    assert rows["testplugin"]["methods"][0]["name"] == "occlusion"
    code, out, _ = cli_invoke("plugins", "--requirements")
    assert "gov-testplugin==0.1" in out


def test_doctor_and_inspect(registry, cli_invoke):
    code, out, _ = cli_invoke("doctor", "--json", "--tracking-uri", registry.uri)
    doc = json.loads(out)
    assert doc["tracking_store"]["reachable"] and "CPUExecutionProvider" in doc["onnxruntime_providers"]
    assert code == 0, doc["problems"]
    code, out, _ = cli_invoke("doctor", "--json", "--tracking-uri", "http://127.0.0.1:9")
    assert code == 1 and not json.loads(out)["tracking_store"]["reachable"]
    code, out, _ = cli_invoke("inspect", "models:/digits-cnn-onnx/1", "--tracking-uri", registry.uri, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["runtime"]["runtime"] == "onnxruntime" and doc["runtime"]["gradients"] is True
