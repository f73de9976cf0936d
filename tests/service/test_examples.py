"""The deployment examples (cron, systemd, Kubernetes) use commands, options and environment variables
that exist: each command line is parsed by the real CLI, each GOVERNANCE_* variable maps to an option."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from governance.cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scheduling"
#: read by the service itself, not through an option
SERVICE_ENV = {"GOVERNANCE_HOME", "GOVERNANCE_QUEUE", "GOVERNANCE_WEBHOOK_SECRET", "GOVERNANCE_WEBHOOK_SECRET_PREVIOUS"}


def parse(argv: list[str]) -> click.Context:
    """Parse ``governance <command> ...`` exactly as the CLI would, without running it."""
    assert Path(argv[0]).name == "governance", argv
    with click.Context(cli) as root:
        cmd = cli.get_command(root, argv[1])
        assert cmd is not None, f"unknown command {argv[1]}"
        return cmd.make_context(argv[1], argv[2:], parent=root)


def env_names(cmd_name: str) -> set[str]:
    with click.Context(cli) as root:
        cmd = cli.get_command(root, cmd_name)
    names = set(SERVICE_ENV)
    for p in cmd.params:
        names.add(f"GOVERNANCE_{p.name.upper()}")
        if p.envvar:
            names.update([p.envvar] if isinstance(p.envvar, str) else p.envvar)
    return names


def check_env(keys: list[str], commands: list[str]) -> None:
    known = set().union(*(env_names(c) for c in commands))
    unknown = [k for k in keys if k.startswith("GOVERNANCE_") and k not in known]
    assert not unknown, f"no option reads {unknown}"


def test_cron():
    text = (EXAMPLES / "cron" / "governance.cron").read_text()
    env = [m.group(1) for m in re.finditer(r"^#?\s*([A-Z_]+)=", text, re.M)]
    check_env(env, ["schedule"])
    (line,) = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "=" not in ln.split()[0]]
    fields = line.split(None, 6)
    assert len(fields) == 7 and fields[5] == "governance"  # /etc/cron.d format has a user column
    argv = shlex.split(fields[6].split(">>")[0])
    ctx = parse(argv[argv.index("governance"):])
    assert ctx.params["aliases"] == ("champion",)


def _unit(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit, command", [("governance-schedule.service", "schedule"),
                                           ("governance-serve.service", "serve")])
def test_systemd_units(unit, command):
    fields = _unit(EXAMPLES / "systemd" / unit)
    (exec_start,) = fields["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[1] == command
    parse(argv)
    env_file = EXAMPLES / "systemd" / "governance.env"
    keys = [m.group(1) for m in re.finditer(r"^#?\s*([A-Z_]+)=", env_file.read_text(), re.M)]
    check_env(keys + [v.split("=")[0] for v in fields.get("Environment", [])], [command])


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for f in (EXAMPLES / "systemd").iterdir():
        if f.suffix not in (".service", ".timer"):
            continue
        text = f.read_text().replace("/opt/governance/bin/governance", "/bin/true")
        (tmp_path / f.name).write_text(text.replace("EnvironmentFile=/", "EnvironmentFile=-/"))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, sorted(tmp_path.iterdir()))],
                         capture_output=True, text=True, timeout=60, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_kubernetes_cronjob():
    docs = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "cronjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PersistentVolumeClaim", "ConfigMap", "CronJob"}
    cron = kinds["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and len(cron["schedule"].split()) == 5
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    parse(["governance", *container["args"]])
    check_env(list(kinds["ConfigMap"]["data"]), ["schedule"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert kinds["ConfigMap"]["data"]["GOVERNANCE_HOME"] in mounts  # the queue lives on the claim
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == \
        {kinds["PersistentVolumeClaim"]["metadata"]["name"]}
