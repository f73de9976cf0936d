"""``governance report``, ``governance verify`` and ``governance policy check``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from governance.cli.options import echo_json, invocation, json_option, spec_from_cli, spec_options

EXIT_VERIFY_FAILED = 8  # ReportError's code: "rendering or verifying a report failed"

_MARK = {"ok": ("✓", "green"), "pass": ("✓", "green"), "fail": ("✗", "red"), "warn": ("!", "yellow"),
         "skipped": ("–", "bright_black"), "not_evaluated": ("–", "bright_black"), "unavailable": ("?", "yellow")}


def _trust_paths(trust: tuple[str, ...]) -> list[str]:
    from governance.host.settings import setting

    if trust:
        return list(trust)
    default = setting("report.trust") or []
    return [default] if isinstance(default, str) else list(default)


def _load_run_folder(folder: Path) -> Any:
    from governance.contract.errors import ReportError
    from governance.contract.results import run_from_dict

    run_json = folder / "run.json"
    if not run_json.is_file():
        raise ReportError(f"{folder} has no run.json", hint="pass the folder a run wrote (run.json + explanations/)")
    try:
        doc = json.loads(run_json.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{run_json} is not valid JSON: {exc}") from None
    return run_from_dict(doc, folder)


def _print_policy(policy: dict[str, Any]) -> None:
    """One line per check (plain text: readable in CI logs as well as on a terminal)."""
    counts = policy.get("counts") or {}
    version = f" v{policy['version']}" if policy.get("version") else ""
    click.echo(f"policy {policy.get('name')}{version}: {policy.get('verdict')} ({counts.get('pass', 0)} pass, "
               f"{counts.get('fail', 0)} fail, {counts.get('warn', 0)} warn, "
               f"{counts.get('not_evaluated', 0)} not evaluated)")
    width = max((len(c["id"]) for c in policy.get("checks") or []), default=10)
    for c in policy.get("checks") or []:
        mark, colour = _MARK.get(c["status"], ("?", "white"))
        label = click.style(f"{mark} {c['status'].replace('_', ' '):<13}", fg=colour)
        if isinstance(c.get("actual"), (int, float)) and isinstance(c.get("expected"), (int, float)):
            detail = f"{c['actual']:.4g} {c['op']} {c['expected']:.4g}"
        else:
            detail = c.get("reason") or ""
        click.echo(f"  {label} {c['id']:<{width}}  {detail}")


def print_report(result: Any) -> None:
    verdict = result.verdict or "no policy"
    colour = {"pass": "green", "fail": "red"}.get(result.verdict or "", "yellow")
    model = result.model
    title = f"{model.get('name')} v{model.get('version')}" if model.get("name") else model.get("uri")
    click.echo(f"report {result.report_id} for {title}: verdict " + click.style(verdict, fg=colour, bold=True)
               + f", run status {result.run_status}")
    if result.pdf_path:
        click.echo(f"  PDF       {result.pdf_path}  ({result.pages} pages, {result.pdf_variant})")
        click.echo(f"            sha256 {result.pdf_sha256}")
    if result.signature:
        sig = result.signature
        click.echo(f"  signed    by {sig['name']} (certificate sha256 {sig['certificate_sha256']})")
    click.echo(f"  HTML      {result.html_path}")
    click.echo(f"  JSON      {result.json_path}  (sha256 {result.json_sha256})")
    click.echo(f"  manifest  {result.manifest_path}")
    if result.logged:
        click.echo(f"  MLflow    run {result.run_id}, artifacts under report/")
        for k, v in result.version_tags.items():
            click.echo(f"  tag       {k} = {v}")
    for note in result.notes:
        click.echo(click.style("  note      ", fg="yellow") + note)
    print_notifications(result.notifications)
    if result.policy:
        _print_policy(result.policy)


def print_notifications(deliveries: list[dict[str, Any]]) -> None:
    """One line per notification sent (--notify): delivered, or why not."""
    for d in deliveries:
        state = f"delivered ({d['status']})" if d["ok"] else f"NOT delivered after {d['attempts']} try(s): {d['error']}"
        click.echo(f"  notify    {d['event']} -> {d['url']}: {state}")


def _exit_code(result: Any) -> int:
    """With a policy the verdict decides (11 on fail); without one, a run with failed methods gives 10."""
    from governance.contract.errors import EXIT_METHODS_FAILED
    from governance.report.policy import exit_code

    if result.policy is not None:
        return exit_code(result.verdict)
    return 0 if result.run_status in ("ok", None) else EXIT_METHODS_FAILED


@click.command("report")
@click.argument("model_uri", required=False)
@spec_options("report")
@json_option
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Build from a local run folder (run.json + explanations/) without running or logging.")
def report_cmd(model_uri: str | None, as_json: bool, from_run: str | None, **options: Any) -> None:
    """Explain MODEL_URI (or reuse an identical earlier run) and write a dated, signable compliance report:
    report.json, report.html, a PDF/A-3b with report.json and manifest.json embedded, and the manifest.
    The report is logged under report/ in the MLflow run, and the model version is tagged with
    governance.report_run_id, governance.report_sha256 and governance.status.

    Exit code: with --policy, 11 when a required check fails, else 0; without a policy, 10 when some
    method failed, else 0. Defaults for --policy, --template-dir, --out, --signer, --sign-key and
    --sign-cert can be set in the settings file's [report] table (policy, template_dirs, out_dir, signer,
    sign_key, sign_cert). With a signing key the PDF carries a PAdES signature and manifest.json gets a
    detached signature (manifest.json.p7s); the signer's name and certificate fingerprint are printed in
    the sign-off section and tagged on the MLflow run and model version.
    """
    from governance.contract.errors import ConfigError

    spec = spec_from_cli(options, "report")
    if bool(model_uri) == bool(from_run):
        raise ConfigError("give a MODEL_URI or --from-run DIR (one of them)",
                          hint="e.g. governance report models:/my-model@champion --policy policy.yaml")
    from governance.report.signing import identity_for

    identity_for(spec.sign_key, spec.sign_cert)  # a bad key or passphrase fails before anything is computed
    result = _report_from_folder(Path(from_run), spec) if from_run else _report_on_model(model_uri, spec, as_json)
    if as_json:
        echo_json(result.to_dict())
    else:
        print_report(result)
    code = _exit_code(result)
    if code:
        sys.exit(code)


def _report_from_folder(folder: Path, spec: Any) -> Any:
    from governance.report.build import build_report
    from governance.report.publish import report_folder_name

    run = _load_run_folder(folder)
    out = Path(spec.output_dir or "governance-reports") / report_folder_name(run.model)
    from governance.report.signing import identity_for

    return build_report(run, out_dir=out, workdir=folder, policy=spec.policy, model_card=spec.model_card,
                        template_dirs=[Path(d) for d in spec.template_dirs], signer=spec.signer_record(),
                        signing=identity_for(spec.sign_key, spec.sign_cert), pdf=spec.pdf)


def _report_on_model(model_uri: str, spec: Any, as_json: bool) -> Any:
    from governance.api import report_model
    from governance.cli.run import progress_printer

    callback, bar = progress_printer(not as_json and sys.stderr.isatty())
    with bar:
        return report_model(model_uri, spec=spec, progress=callback, invocation=invocation())


@click.command("verify")
@click.argument("report", type=click.Path(exists=True))
@click.option("--trust", multiple=True, type=click.Path(exists=True), metavar="CERT|DIR",
              help="Certificate (or folder of certificates) trusted to sign reports: the signer's own or its CA "
              "(repeatable) [settings: report.trust].")
@click.option("--skip", "skip", multiple=True, metavar="CHECK[,CHECK]",
              help="Accept not running these checks when they cannot run: signature, sidecar, files, evidence.")
@click.option("--artifacts", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Evidence root to check (default: evidence/ beside the PDF, or the MLflow run root above it).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Also check the model files in DIR against the registry hashes in the report.")
@click.option("--sha256", "expected", metavar="HEX", help="The PDF's expected sha256 (e.g. the version tag).")
@json_option
def verify_cmd(report: str, trust: tuple[str, ...], skip: tuple[str, ...], artifacts: str | None,
               model_dir: str | None, expected: str | None, as_json: bool) -> None:
    """Check who made a report and that nothing in it changed: the PDF's signature against --trust, the
    embedded report.json and manifest.json against each other and the printed pages, the PDF against
    report.pdf.sha256, the files beside it and the evidence against the manifest.

    It fails closed: a check that cannot run (an unsigned report, no --trust, no sidecar, evidence not
    found) gives "not verified" unless you name it with --skip. An unsigned report verified with
    --skip signature is integrity only: anyone who can run governance could have made it.

    REPORT is report.pdf or the folder holding it. Exit code 0 when verified, 8 otherwise.
    """
    from governance.report.verify import verify_report

    skips = [part for item in skip for part in item.split(",")]
    result = verify_report(Path(report), artifacts_dir=artifacts, model_dir=model_dir, expected_sha256=expected,
                           trust=_trust_paths(trust), skip=skips)
    if as_json:
        echo_json(result.to_dict())
    else:
        _print_verify(result)
    if not result.ok:
        sys.exit(EXIT_VERIFY_FAILED)


def _print_verify(result: Any) -> None:
    from governance.report.verify import INTEGRITY_ONLY

    for c in result.checks:
        mark, colour = _MARK.get(c.status, ("?", "white"))
        label = " (cannot run)" if c.status == "unavailable" else " (skipped)" if c.status == "skipped" else ""
        click.echo(click.style(f"{mark} ", fg=colour) + f"{c.name}{label}" + (f": {c.detail}" if c.detail else ""))
    who = f"report {result.report_id or '?'}" + (f" ({result.model})" if result.model else "")
    passed = sum(c.status == "ok" for c in result.checks)
    skipped = [c.group for c in result.checks if c.status == "skipped"]
    skipped_text = f"; skipped: {', '.join(sorted(set(skipped)))}" if skipped else ""
    if result.ok and result.trusted:
        names = "; ".join(f"{s['name']} (certificate sha256 {s['certificate_sha256']})" for s in result.signers)
        click.secho(f"VERIFIED: {who}, signed by {names}, trusted; {passed} checks passed{skipped_text}", fg="green")
    elif result.ok:
        click.secho(f"VERIFIED ({INTEGRITY_ONLY}): {who}, {passed} checks passed{skipped_text}", fg="yellow")
    else:
        parts = []
        if result.failures:
            parts.append(f"{len(result.failures)} check(s) failed: " + "; ".join(c.name for c in result.failures))
        if result.unavailable:
            parts.append(f"{len(result.unavailable)} check(s) could not run: "
                         + "; ".join(f"{c.name} ({c.hint})" if c.hint else c.name for c in result.unavailable))
        click.secho(f"NOT VERIFIED: {who}: " + " | ".join(parts), fg="red", err=True)


@click.command("keygen")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for key.pem (mode 0600) and cert.pem.")
@click.option("--name", default="governance test signer", show_default=True, help="The certificate's common name.")
@click.option("--organisation", default=None, help="The certificate's organisation (O=).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Validity.")
@click.option("--force", is_flag=True, help="Overwrite key.pem and cert.pem if they exist.")
def keygen_cmd(out_dir: str, name: str, organisation: str | None, days: int, force: bool) -> None:
    """Make a test signing key and a self-signed certificate (ECDSA P-256) for trying out signed reports.

    \b
    governance keygen --out keys/ --name "A. Validator"
    governance report models:/m/1 --sign-key keys/key.pem --sign-cert keys/cert.pem
    governance verify governance-reports/m-v1/report.pdf --trust keys/cert.pem

    The key is unencrypted unless GOVERNANCE_SIGN_PASSPHRASE is set. For real reports use a certificate
    your organisation's CA issued for document signing, and let verifiers trust that CA.
    """
    from governance.report.signing import load_identity, make_test_identity

    key, cert = make_test_identity(Path(out_dir), name=name, organisation=organisation, days=days, overwrite=force)
    ident = load_identity(key, cert)
    click.echo(f"key          {key}  (keep it private)")
    click.echo(f"certificate  {cert}  (give it to verifiers: governance verify --trust {cert})")
    click.echo(f"signer       {ident.name}, certificate sha256 {ident.fingerprint}, valid until "
               f"{ident.cert.not_valid_after_utc:%Y-%m-%d}")


@click.group("policy")
def policy_group() -> None:
    """Evaluate policy files (thresholds per metric) against runs and reports."""


@policy_group.command("check")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False))
@click.argument("run", type=click.Path(exists=True))
@json_option
def policy_check_cmd(policy: str, run: str, as_json: bool) -> None:
    """Evaluate POLICY against RUN: a run.json, a report.json, or a folder holding either.

    Exit code 11 when a required check fails, 0 otherwise (also when nothing could be evaluated).
    """
    from governance.contract.errors import ConfigError
    from governance.report.policy import evaluate_policy, exit_code

    path = Path(run)
    if path.is_dir():
        found = next((path / n for n in ("report.json", "run.json") if (path / n).is_file()), None)
        if found is None:
            raise ConfigError(f"{path} holds neither report.json nor run.json")
        path = found
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    result = evaluate_policy(policy, doc)
    if as_json:
        echo_json(result)
    else:
        _print_policy(result)
    code = exit_code(result["verdict"])
    if code:
        sys.exit(code)
