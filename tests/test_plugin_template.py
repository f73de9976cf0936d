"""examples/plugin-template is a real distribution: it builds and installs on its own into a fresh virtual
environment, governance discovers it through its entry point, and its own test suite (which runs
governance's conformance suite) passes there."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "plugin-template"


def test_template_declares_its_entry_point_and_packages_its_template():
    import tomllib

    meta = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["governance.plugins"] == {"gradinput": "governance_gradinput"}
    assert "*.j2" in meta["tool"]["setuptools"]["package-data"]["governance_gradinput"]
    assert (TEMPLATE / "src" / "governance_gradinput" / "section.html.j2").is_file()
    first_test = (TEMPLATE / "tests" / "test_gradinput.py").read_text().split("\ndef test_")[1]
    assert first_test.startswith("discovered_through_the_entry_point")


def _newest_setuptools(dirs: list[str]) -> str | None:
    """The folder holding the newest visible setuptools, if it is 70.1+ (bdist_wheel built in), else None."""
    import importlib.metadata

    found = []
    for d in dirs:
        for dist in importlib.metadata.distributions(path=[d]):
            if (dist.metadata["Name"] or "").lower() == "setuptools":
                version = tuple(int(p) for p in dist.version.split(".")[:2] if p.isdigit())
                found.append((version, d))
    best = max(found, default=None)
    return best[1] if best and best[0] >= (70, 1) else None


@pytest.fixture(scope="module")
def template_env(tmp_path_factory):
    """A fresh venv that sees this test environment's packages (through a .pth file) plus the template,
    installed non-editable from a copy (building writes build/ and *.egg-info next to the sources)."""
    root = tmp_path_factory.mktemp("template")
    src = root / "src"
    shutil.copytree(TEMPLATE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    # addsitedir (not a bare path line) so that the .pth files of those folders (editable installs,
    # shared dependency folders) are processed too
    dirs = [p for p in dict.fromkeys([*site.getsitepackages(), *sys.path]) if p.endswith("site-packages")]
    (purelib / "zz_test_env.pth").write_text(f"import site; list(map(site.addsitedir, {dirs!r}))\n")
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH", "GOVERNANCE_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    cmd = [str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(src)]
    build_env = env
    builder = _newest_setuptools(dirs)
    if builder:  # build offline with a setuptools that has bdist_wheel built in
        cmd[4:4] = ["--no-build-isolation", "--no-index"]
        build_env = dict(env, PYTHONPATH=builder)
    # else pip builds in an isolated environment and fetches setuptools from the package index
    out = subprocess.run(cmd, capture_output=True, text=True, env=build_env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return py, src, env, root


@pytest.mark.slow
def test_governance_discovers_the_installed_template(template_env):
    py, src, env, root = template_env
    where = subprocess.run([str(py), "-c", "import governance_gradinput; print(governance_gradinput.__file__)"],
                           capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert str(root / "venv") in where.stdout, where  # the installed copy, not the sources
    listed = subprocess.run([str(py), "-m", "governance", "plugins", "--json"], capture_output=True, text=True,
                            env=env, cwd=root, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    row = rows["gradinput"]
    assert row["status"] == "loaded" and row["distribution"] == "governance-gradinput" and not row["builtin"]
    assert [m["name"] for m in row["methods"]] == ["gradinput"] and row["methods"][0]["requires"] == ["gradients"]


@pytest.mark.slow
def test_template_test_suite_passes_in_the_fresh_env(template_env):
    py, src, env, root = template_env
    out = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={root / 'bt'}"],
                         capture_output=True, text=True, env=env, cwd=src, timeout=900)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert "failed" not in out.stdout.splitlines()[-1]
    assert "passed" in out.stdout.splitlines()[-1]
