"""The Python API: the same operations as the CLI, returning objects instead of printing.

    import governance
    run = governance.explain("models:/digits-cnn/2", methods=["neflag"], data="eval.npz")
    print(run.status, run.mlflow_run_id, run.explanation("neflag").metrics)

Every keyword option is a field of :class:`governance.run.spec.RunSpec` (``config=`` is the per-method settings
dict); pass ``spec=`` to reuse one. This module composes the run (``governance.run``) and the report
(``governance.report``); neither of those calls back into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from governance.contract.results import RunResult

log = logging.getLogger("governance.api")
ProgressFn = Callable[[str, float, str], None]


def _host(plugins: Sequence[str] | None = None) -> Any:
    from governance.host.plugins import get_plugin_host

    return get_plugin_host(allow=list(plugins)) if plugins is not None else get_plugin_host()


def _spec(spec: Any, options: dict[str, Any]) -> Any:
    from governance.run.spec import RunSpec

    if spec is None:
        return RunSpec.build(options)
    return RunSpec.build({**spec.to_dict(), **options}) if options else spec


def explain(model_uri: str, *, spec: Any = None, workdir: str | Path | None = None,
            progress: ProgressFn | None = None, invocation: str | None = None,
            run_tags: dict[str, str] | None = None, **options: Any) -> RunResult:
    """Explain one model version with the selected methods (all installed ones by default) and log everything
    to a new MLflow run. A finished run with the same model and configuration is reused unless ``force`` (then
    the new run supersedes it). ``options`` are :class:`~governance.run.spec.RunSpec` fields; ``run_tags`` are
    added to the new MLflow run. Without ``workdir`` the evidence is kept in a temporary folder
    (``result.workdir``, yours to delete; it is removed when the run fails)."""
    from governance.run.pipeline import Pipeline

    run_spec = _spec(spec, options)
    pipe = Pipeline(model_uri, run_spec, host=_host(run_spec.plugins),
                    workdir=Path(workdir) if workdir else None, progress=progress,
                    invocation=invocation or f"governance.explain({model_uri!r})", run_tags=run_tags)
    return pipe.run()


def explain_many(model_uris: Sequence[str], *, executor: Any = "local",
                 executor_options: dict[str, Any] | None = None, return_exceptions: bool = False,
                 workdir: str | Path | None = None, spec: Any = None, invocation: str | None = None,
                 progress: ProgressFn | None = None, **options: Any) -> list[Any]:
    """Explain several model versions with the same options, fanned out by an executor: ``"local"`` (one
    after the other, here) or ``"ray"`` (one Ray task per model, each loading its own model;
    ``pip install 'governance[ray]'``). Results come back in input order; see
    :meth:`governance.run.executors.Executor.map_models` for ``return_exceptions``. ``workdir`` gets one
    sub-folder per model. A ``progress`` callback is only used by in-process executors."""
    from governance.contract.errors import ConfigError
    from governance.run.executors import ExplainJob, get_executor, portable_tracking_uri

    uris = list(model_uris)
    if not uris:
        raise ConfigError("no model URIs given", hint="pass at least one models:/NAME/VERSION")
    if dupes := sorted({u for u in uris if uris.count(u) > 1}):
        raise ConfigError(f"model URI(s) given more than once: {', '.join(dupes)}", hint="list each model once")
    run_spec = _spec(spec, options)
    ex = get_executor(executor, **(executor_options or {}))
    try:
        run_spec = run_spec.replace(tracking_uri=portable_tracking_uri(run_spec.tracking_uri, ex.in_process))
        root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="governance-runs-"))
        job = ExplainJob(spec=run_spec, workdir_root=str(root), invocation=invocation,
                         progress=progress if ex.in_process else None)
        return ex.map_models(uris, job, return_exceptions=return_exceptions)
    finally:
        if ex is not executor:
            ex.close()


def resolve(model_uri: str, *, tracking_uri: str | None = None, download_dir: str | Path | None = None):
    """Resolve a model URI to a ModelVersionInfo (downloads and hashes the files)."""
    from governance.host.registry import resolve as _resolve
    from governance.host.tracking import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if not model_uri.startswith(("/", ".")) and not model_uri.endswith(".onnx"):
        check_reachable(uri)
    dst = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="governance-model-"))
    return _resolve(model_uri, tracking_uri=uri, download_dir=dst)


def load(model_uri: str, *, device: str = "auto", tracking_uri: str | None = None, batch_size: int | None = None,
         output: str | None = None, task: str | None = None, trust_pickle: bool | None = None,
         download_dir: str | Path | None = None):
    """Resolve and load a model: a LoadedModel with ``predict`` and, where possible, a torch view.
    ``output`` names the graph output to explain, ``task`` overrides the detected task; ``trust_pickle=True``
    allows a pickle-format model (see :mod:`governance.host.runtimes.pickle_policy`). The files go to
    ``download_dir`` (else a temporary folder the model keeps using; removed if loading fails)."""
    import shutil

    from governance.run.pipeline import load_model

    dst = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="governance-model-"))
    try:
        info = resolve(model_uri, tracking_uri=tracking_uri, download_dir=dst)
        return load_model(info, device=device, batch_size=batch_size, host=_host(), output=output, task=task,
                          trust_pickle=trust_pickle)
    except BaseException:
        if download_dir is None:
            shutil.rmtree(dst, ignore_errors=True)
        raise


def report_model(model_uri: str, *, spec: Any = None, subfolder: bool = True, policy: Any = None,
                 model_card: Any = None, signer: Any = None, signing: Any = None, progress: ProgressFn | None = None,
                 invocation: str | None = None, workdir: str | Path | None = None, gate: Any = None,
                 run_tags: dict[str, str] | None = None, **options: Any) -> Any:
    """Explain ``model_uri`` (reusing an identical finished run unless ``force``), build the report in
    ``output_dir/<name>-v<version>/`` (or ``output_dir`` itself when ``subfolder`` is false), log it to the run and
    tag the model version. ``policy`` and ``model_card`` may be paths (RunSpec fields) or in-memory objects;
    ``signer`` a dict or "NAME, ROLE, ORG"; ``signing`` a :class:`~governance.report.signing.SigningIdentity`
    (else the ``sign_key``/``sign_cert`` options); ``gate`` a :class:`~governance.report.gate.GateRequest` whose
    decision the first page shows. Everything the report needs (its inputs, the signing key, a writable output
    folder, the notification URL) is checked before anything is explained or written. With ``notify`` the verdict
    is posted, signed, once the report is written. Returns a :class:`~governance.report.build.ReportResult`."""
    from governance.contract.errors import ReportError
    from governance.host.notify import check_notify
    from governance.report.build import check_output_dir, check_report_inputs
    from governance.report.signing import identity_for

    run_spec = _spec(spec, {**options, **{k: v for k, v in (("policy", policy), ("model_card", model_card),
                                                              ("signer", signer)) if isinstance(v, str)}})
    policy_obj = policy if policy is not None and not isinstance(policy, str) else run_spec.policy
    card = model_card if model_card is not None and not isinstance(model_card, str) else run_spec.model_card
    signer_rec = signer if isinstance(signer, dict) else run_spec.signer_record()
    # the user's files first: a typo in the policy must not cost a whole run
    policy_obj = check_report_inputs(policy_obj, card, run_spec.template_dirs)
    check_notify(run_spec.notify)
    signing = signing or identity_for(run_spec.sign_key, run_spec.sign_cert)
    if signing is not None and not run_spec.pdf:
        raise ReportError("a signed report needs its PDF", hint="drop --no-pdf, or do not pass a signing key")
    base = Path(run_spec.output_dir or "governance-reports")
    check_output_dir(base)  # a read-only or full output folder must fail before any MLflow write
    inputs = _ReportInputs(base=base, subfolder=subfolder, card=card, policy=policy_obj, signer=signer_rec,
                           signing=signing, gate=gate)
    with job_folder(workdir) as folder:
        result = _explain_and_report(model_uri, run_spec, folder, inputs, progress=progress, invocation=invocation,
                                     run_tags=run_tags)
    if run_spec.notify:
        from governance.host.notify import post_notification
        from governance.report.gate import report_notification

        result.notifications.append(
            post_notification(run_spec.notify, "report.verdict", report_notification(result)).to_dict())
    return result


@dataclasses.dataclass(frozen=True)
class _ReportInputs:
    """What the report of one job is made from, besides the run: checked by report_model before the run."""

    base: Path
    subfolder: bool
    card: Any
    policy: Any
    signer: Any
    signing: Any
    gate: Any


@contextlib.contextmanager
def job_folder(workdir: str | Path | None):
    """The caller's folder, or a temporary one removed afterwards, success or failure (a long-running worker
    must not keep one folder per job); kept only when results could not be uploaded (the error says where)."""
    if workdir is not None:
        yield Path(workdir)
        return
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="governance-run-"))
    try:
        yield tmp
    except BaseException as exc:
        if not getattr(exc, "kept_workdir", None):  # results that could not be uploaded stay on disk
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _explain_and_report(model_uri: str, run_spec: Any, workdir: Path, inputs: _ReportInputs, *,
                        progress: ProgressFn | None, invocation: str | None, run_tags: dict[str, str] | None) -> Any:
    from governance.report.build import build_report
    from governance.report.publish import previous_version_record, publish_report, report_folder_name

    run = explain(model_uri, spec=run_spec, progress=progress, workdir=workdir, run_tags=run_tags,
                  invocation=invocation or f"governance.report({model_uri!r})")
    run.model["previous_version"] = previous_version_record(run.tracking_uri, run.model)
    out = inputs.base / report_folder_name(run.model) if inputs.subfolder else inputs.base
    result = build_report(run, out_dir=out, model_card=inputs.card, policy=inputs.policy,
                          template_dirs=[Path(d) for d in run_spec.template_dirs], signer=inputs.signer,
                          signing=inputs.signing, pdf=run_spec.pdf, gate=inputs.gate)
    result.run_id = run.mlflow_run_id
    if run_spec.log_to_mlflow:
        publish_report(result, run, tracking_uri=run.tracking_uri)
    return result


def promote(model_uri: str, *, to: str, spec: Any = None, policy: Any = None, dry_run: bool = False,
            progress: ProgressFn | None = None, invocation: str | None = None, workdir: str | Path | None = None,
            **options: Any) -> Any:
    """The promotion gate: report on ``model_uri`` (explaining it, or reusing the identical finished run) under
    ``policy``, then move alias ``to`` to the version only when the verdict is ``pass``; otherwise leave the alias
    where it was and tag the version ``governance.gate=blocked`` with the failed checks. The move and the tags
    happen after the report is written and logged. ``dry_run`` resolves and checks everything and writes
    nothing. Returns a :class:`~governance.report.gate.Promotion` (``exit_code`` 11 when blocked)."""
    from governance.contract.errors import ConfigError
    from governance.host.aliases import alias_target, check_alias_name, pin_version
    from governance.host.notify import check_notify
    from governance.host.tracking import check_reachable, client, resolve_tracking_uri
    from governance.report.build import check_report_inputs
    from governance.report.gate import PROMOTE, GateRequest, Promotion

    run_spec = _spec(spec, {**options, **({"policy": policy} if isinstance(policy, str) else {})})
    alias = check_alias_name(to)
    policy_obj = policy if policy is not None and not isinstance(policy, str) else run_spec.policy
    if policy_obj is None:
        raise ConfigError("promote needs a policy: the gate moves the alias only when the policy's verdict is pass",
                          hint="pass --policy FILE (see examples/policy.yaml)")
    if not run_spec.log_to_mlflow:
        raise ConfigError("promote always logs the report and tags the version", hint="drop --no-log")
    policy_obj = check_report_inputs(policy_obj, run_spec.model_card, run_spec.template_dirs)
    check_notify(run_spec.notify)
    uri = resolve_tracking_uri(run_spec.tracking_uri)
    check_reachable(uri)
    registry = client(uri)
    name, version = pin_version(registry, model_uri)
    request = GateRequest(alias=alias, name=name, version=version, mode=PROMOTE,
                          alias_before=alias_target(registry, name, alias))
    if dry_run:
        last = dict(registry.get_model_version(name, version).tags or {})
        return Promotion(request=request, policy=policy_obj.name, dry_run=True,
                         last_verdict=last.get("governance.verdict"), last_report_id=last.get("governance.report_id"))
    result = report_model(f"models:/{name}/{version}", spec=run_spec, policy=policy_obj, gate=request,
                          progress=progress, workdir=workdir,
                          invocation=invocation or f"governance.promote({model_uri!r}, to={alias!r})")
    return _apply_promotion(registry, request, result, run_spec.notify)


def _apply_promotion(registry: Any, request: Any, result: Any, notify: str | None) -> Any:
    """After the report is written: move the alias (verdict pass) or not, tag the version, send the news."""
    from governance.host.aliases import alias_target, move_alias, tag_version
    from governance.report.document import utc_now
    from governance.report.gate import Promotion, alias_at, describe_version, gate_notification, gate_tags

    decision = result.gate
    name, version, alias = request.name, request.version, request.alias
    now = alias_target(registry, name, alias)  # read again right before the move: it may have moved meanwhile
    if not decision["passes"]:
        action, detail = "blocked", f"version {version} not promoted: {alias_at(alias, now)}"
    elif now == version:
        action, detail = "unchanged", f"@{alias} already pointed at version {version}"
    else:
        move_alias(registry, name, alias, version)
        action, detail = "promoted", f"@{alias} moved from {describe_version(now)} to version {version}"
    tags = gate_tags(decision, action, detail, at=utc_now(), report_id=result.report_id)
    tag_version(registry, name, version, tags)
    promotion = Promotion(request=request, policy=decision.get("policy"), decision=decision, action=action,
                          detail=detail, report=result, alias_after=version if action != "blocked" else now,
                          tags=tags)
    if notify:
        from governance.host.notify import post_notification

        promotion.notifications.append(post_notification(
            notify, f"gate.{action}", gate_notification(decision, action, detail, result)).to_dict())
    return promotion
