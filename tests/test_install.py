"""The distribution as users get it: build the wheel, install it (non-editable) into a fresh virtual
environment, and run the quick start from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import shutil

    out = tmp_path_factory.mktemp("dist")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    src = tmp_path_factory.mktemp("src") / "governance"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "*.egg-info",
                                                              "__pycache__", ".pytest_cache", "mlruns", "*.db"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
                   check=True, timeout=600)
    return next(out.glob("governance-*.whl"))


def test_wheel_ships_host_plugins_and_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("governance/cli/__init__.py", "governance/templates/__init__.py",
                     "governance_plugins/neflag/__init__.py", "governance_plugins/bort/__init__.py"):
        assert required in names, required
    assert any(n.startswith("governance/templates/") and n.endswith(".j2") for n in names)
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[governance.plugins]" in text and "neflag = governance_plugins.neflag" in text


@pytest.mark.slow
def test_fresh_venv_install_runs_quickstart(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Dependencies come from the test environment (no downloads); governance itself only from the wheel.
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=600)
    work = tmp_path / "work"
    work.mkdir()
    script = work / "quickstart.py"
    script.write_text((ROOT / "examples" / "quickstart" / "quickstart.py").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    where = subprocess.run([str(py), "-c", "import governance, governance_plugins; print(governance.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert str(venv) in where.stdout, where  # the wheel, not the source tree
    out = subprocess.run([str(py), str(script)], capture_output=True, text=True, cwd=work, env=env, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    pdfs = list((work / "governance-reports").rglob("*.pdf"))
    assert len(pdfs) == 2, out.stdout[-2000:]
    assert (work / "mlflow.db").is_file()
    gov = venv / "bin" / "governance"
    listed = subprocess.run([str(gov), "plugins", "--json"], capture_output=True, text=True, cwd=work, env=env,
                            timeout=120)
    assert listed.returncode == 0 and '"neflag"' in listed.stdout
