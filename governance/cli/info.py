"""``governance plugins``, ``governance doctor`` and ``governance inspect``."""

from __future__ import annotations

import sys

import click

from governance.cli.options import echo_json, json_option, tracking_option


@click.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Also list host plugins, blocked and not-allowed ones.")
@click.option("--hook", metavar="NAME", help="Only plugins implementing this hook.")
@click.option("--requirements", is_flag=True, help="Print pip requirement lines (name==version) only.")
@json_option
def plugins_cmd(show_all: bool, hook: str | None, requirements: bool, as_json: bool) -> None:
    """List installed plugins: name, version, source package, methods, hooks, load errors."""
    from governance.host.plugins import get_plugin_host

    host = get_plugin_host()
    host.methods  # noqa: B018 - collect methods first: a failing register_methods marks its plugin failed
    records = [r for r in host.records if show_all or r.status in ("loaded", "failed") or r.hook_errors]
    if hook:
        records = [r for r in records if hook in r.hooks]
    rows = []
    for r in records:
        row = r.to_dict()
        row["methods"] = [
            {"name": m, "version": host.methods[m].version, "requires": sorted(q.value for q in host.methods[m].requires),
             "title": host.methods[m].title}
            for m in r.methods if m in host.methods
        ]
        rows.append(row)
    if requirements:
        for dist in sorted({(r["distribution"], r["version"]) for r in rows if r["distribution"]}):
            click.echo(f"{dist[0]}=={dist[1]}")
        return
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("plugin", "status", "package", "methods (requires)", "hooks"):
        table.add_column(col)
    for row in rows:
        methods = "\n".join(f"{m['name']} {m['version']} ({', '.join(m['requires'])})" for m in row["methods"])
        status = row["status"] + (f"\n{row['error'].splitlines()[0]}" if row.get("error") else "")
        status += "".join(f"\nhook error: {e}" for e in row.get("hook_errors") or [])
        table.add_row(row["name"], status, f"{row['distribution'] or '-'} {row['version'] or ''}", methods,
                      ", ".join(row["hooks"]))
    Console().print(table)
    if any(r["status"] == "failed" for r in rows):
        click.echo("Some plugins failed to load; they are skipped. Set GOVERNANCE_STRICT_PLUGINS=1 to make "
                   "that an error, or block one with GOVERNANCE_BLOCK_PLUGINS=name.", err=True)


@click.command("doctor")
@tracking_option
@json_option
def doctor_cmd(tracking_uri: str | None, as_json: bool) -> None:
    """Check versions, execution providers, devices, plugins and the tracking store."""
    from governance.host.environment import describe_environment
    from governance.contract.errors import GovernanceError
    from governance.host.plugins import get_plugin_host
    from governance.host.tracking import check_reachable, resolve_tracking_uri

    report = describe_environment()
    uri = resolve_tracking_uri(tracking_uri)
    try:
        check_reachable(uri)
        store = {"uri": uri, "reachable": True}
    except GovernanceError as exc:
        store = {"uri": uri, "reachable": False, "error": str(exc)}
    report["tracking_store"] = store
    host = get_plugin_host()
    host.methods  # noqa: B018 - see plugins_cmd
    report["plugins"] = {r.name: r.status for r in host.records}
    report["methods"] = sorted(host.methods)
    problems = [f"tracking store: {store['error']}"] if not store["reachable"] else []
    problems += [f"plugin {r.name} failed: {(r.error or '').splitlines()[0]}" for r in host.records if r.status == "failed"]
    pkgs = report["packages"]
    if pkgs.get("onnxruntime") and pkgs.get("onnxruntime-gpu"):
        problems.append("both onnxruntime and onnxruntime-gpu are installed: CUDA is silently unavailable; "
                        "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`")
    report["problems"] = problems
    report["tabular_flavors"] = _tabular_flavors(pkgs)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"governance {pkgs.get('governance')}  python {report['python']}  {report['platform']}")
        for name in ("mlflow", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "captum", "weasyprint"):
            if pkgs.get(name):
                click.echo(f"  {name:<16} {pkgs[name]}")
        click.echo(f"  tabular flavors  {report['tabular_flavors']}")
        click.echo(f"  torch CUDA       {'yes: ' + ', '.join(report.get('cuda_devices', [])) if report.get('torch_cuda_available') else 'no'}")
        click.echo(f"  ORT providers    {', '.join(report.get('onnxruntime_providers', []))}")
        click.echo(f"  tracking store   {uri}  {'reachable' if store['reachable'] else 'NOT reachable'}")
        click.echo(f"  methods          {', '.join(report['methods']) or 'none'}")
        for p in problems:
            click.secho(f"problem: {p}", fg="yellow")
        if not problems:
            click.secho("all checks passed", fg="green")
    sys.exit(1 if problems else 0)


def _tabular_flavors(pkgs: dict) -> str:
    """What happens to sklearn/lightgbm/xgboost models with the packages installed here."""
    from governance.host.runtimes.sklearn_model import EXTRA_HINT

    if pkgs.get("skl2onnx") and pkgs.get("onnxmltools"):
        boosters = ", ".join(f"{n} {pkgs[n]}" for n in ("lightgbm", "xgboost") if pkgs.get(n)) or "none installed"
        return (f"sklearn, lightgbm, xgboost converted to ONNX (skl2onnx {pkgs['skl2onnx']}, onnxmltools "
                f"{pkgs['onnxmltools']}; boosting libraries: {boosters})")
    return f"sklearn, lightgbm, xgboost run forward-only through their own predict ({EXTRA_HINT} converts them)"


@click.command("inspect")
@click.argument("model_uri")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--output", metavar="NAME", help="The model output to explain (default: chosen automatically).")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]), default="auto",
              show_default=True)
@tracking_option
@click.option("--trust-pickle", is_flag=True, help="Allow a pickle-format model: loading it runs any code its author "
              "put into it (see README, 'Pickle-format models').")
@json_option
def inspect_cmd(model_uri: str, device: str, output: str | None, task: str, tracking_uri: str | None,
                trust_pickle: bool, as_json: bool) -> None:
    """Resolve and load MODEL_URI and show identity, file hashes, signature and what methods can use.
    Pickle-format models are refused unless --trust-pickle: loading one would run its code."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="governance-model-") as tmp:  # the downloaded copy goes afterwards
        _inspect(model_uri, device, output, None if task == "auto" else task, tracking_uri, trust_pickle,
                 as_json, tmp)


def _inspect(model_uri: str, device: str, output: str | None, task: str | None, tracking_uri: str | None,
             trust_pickle: bool, as_json: bool, download_dir: str) -> None:
    from governance.api import load

    model = load(model_uri, device=device, tracking_uri=tracking_uri, output=output, task=task,
                 trust_pickle=trust_pickle or None, download_dir=download_dir)
    model.torch_module()  # builds the torch view (ONNX) so gradient availability is real
    info = model.info.to_dict()
    doc = {"model": info, "runtime": model.describe(check_gradients=True), "layers": model.layer_names()[:200]}
    if as_json:
        echo_json(doc)
        return
    click.echo(f"{model.info.display_name}  ({model.info.uri})")
    for key in ("kind", "run_id", "model_id", "source", "aliases", "created_at", "status"):
        if info.get(key):
            click.echo(f"  {key:<12} {info[key]}")
    click.echo(f"  flavors      {', '.join(info['flavors'])}")
    rt = doc["runtime"]
    click.echo(f"  runtime      {rt['runtime']} on {rt['device']}; input {rt['input']['shape']} {rt['input']['dtype']}; "
               f"output {rt['output']['shape']}")
    sel = rt.get("output_selection") or {}
    if sel:
        click.echo(f"  explained    output '{sel['name']}': {sel['reason']}")
    click.echo(f"  task         {rt['task']} ({rt['task_reason']})")
    for note in rt.get("notes") or []:
        click.echo(f"  note         {note}")
    click.echo(f"  gradients    {'yes' if rt['gradients'] else 'no: ' + str(rt['torch_unavailable_reason'])}"
               + (f" (torch view vs ORT max |Δ| {rt['parity_max_abs_diff']:.2e})" if rt.get("parity_max_abs_diff") is not None else ""))
    click.echo(f"  sha256       {info['content_sha256']}")
    for rel, digest in info["files"].items():
        click.echo(f"    {digest[:16]}…  {rel}")
