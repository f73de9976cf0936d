"""The Python API: the same operations as the CLI, returning objects instead of printing.

    import governance
    run = governance.explain("models:/digits-cnn/2", methods=["neflag"], data="eval.npz")
    print(run.status, run.mlflow_run_id, run.explanation("neflag").metrics)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from governance.contract.results import RunResult


def _host(plugins: Sequence[str] | None = None) -> Any:
    from governance.host.plugins import get_plugin_host

    return get_plugin_host(allow=list(plugins)) if plugins is not None else get_plugin_host()


def explain(
    model_uri: str,
    *,
    methods: Sequence[str] | None = None,
    data: str | Path | None = None,
    target: str | None = None,
    peers: Sequence[str] | None = None,
    config: dict[str, dict[str, Any]] | None = None,
    device: str = "auto",
    tracking_uri: str | None = None,
    experiment: str = "governance",
    seed: int = 0,
    max_samples: int = 512,
    batch_size: int | None = None,
    output: str | None = None,
    task: str | None = None,
    force: bool = False,
    reuse: bool = True,
    plugins: Sequence[str] | None = None,
    workdir: str | Path | None = None,
    progress: Callable[[str, float, str], None] | None = None,
    invocation: str | None = None,
) -> RunResult:
    """Explain one model version with the selected methods (all installed ones by default) and log
    everything to a new MLflow run. A finished run with the same model and configuration is reused unless
    ``force`` (then the new run supersedes it)."""
    from governance.run.pipeline import Pipeline, RunOptions
    from governance.host.tracking import resolve_tracking_uri

    opts = RunOptions(
        methods=list(methods) if methods is not None else None, data=str(data) if data else None, target=target,
        peers=list(peers) if peers is not None else None, method_config=dict(config or {}), device=device,
        seed=seed, max_samples=max_samples, batch_size=batch_size, output=output, task=task, experiment=experiment,
        force=force, reuse=reuse,
    )
    pipe = Pipeline(model_uri, opts, tracking_uri=resolve_tracking_uri(tracking_uri), host=_host(plugins),
                    workdir=Path(workdir) if workdir else None, progress=progress,
                    invocation=invocation or f"governance.explain({model_uri!r})")
    return pipe.run()


def explain_many(
    model_uris: Sequence[str],
    *,
    executor: Any = "local",
    executor_options: dict[str, Any] | None = None,
    return_exceptions: bool = False,
    workdir: str | Path | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Explain several model versions with the same settings (``kwargs`` as for :func:`explain`), fanned
    out by an executor: ``"local"`` (one after the other, here) or ``"ray"`` (one Ray task per model, each
    loading its own model; ``pip install 'governance[ray]'``). Results come back in input order; see
    :meth:`governance.run.executors.Executor.map_models` for ``return_exceptions``. ``workdir`` gets one
    sub-folder per model. A ``progress`` callback is only used by in-process executors."""
    from governance.contract.errors import ConfigError
    from governance.run.executors import ExplainJob, get_executor

    uris = list(model_uris)
    if not uris:
        raise ConfigError("no model URIs given", hint="pass at least one models:/NAME/VERSION")
    if dupes := sorted({u for u in uris if uris.count(u) > 1}):
        raise ConfigError(f"model URI(s) given more than once: {', '.join(dupes)}", hint="list each model once")
    ex = get_executor(executor, **(executor_options or {}))
    try:
        if not ex.in_process:
            kwargs.pop("progress", None)
        if kwargs.get("tracking_uri") is None:  # workers must write to the store this process would use
            from governance.host.tracking import resolve_tracking_uri

            kwargs["tracking_uri"] = resolve_tracking_uri(None)
        if not ex.in_process and str(kwargs["tracking_uri"]).startswith("sqlite:///"):
            db = str(kwargs["tracking_uri"])[len("sqlite:///"):]
            if db != ":memory:" and not db.startswith("/"):  # workers may start in another folder
                kwargs["tracking_uri"] = f"sqlite:///{Path(db).resolve()}"
        root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="governance-runs-"))
        job = ExplainJob(kwargs=kwargs, workdir_root=str(root))
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
         output: str | None = None, task: str | None = None):
    """Resolve and load a model: a LoadedModel with ``predict`` and, where possible, a torch view.
    ``output`` names the graph output to explain, ``task`` overrides the detected task."""
    from governance.run.pipeline import load_model

    info = resolve(model_uri, tracking_uri=tracking_uri)
    return load_model(info, device=device, batch_size=batch_size, host=_host(), output=output, task=task)


def report_model(model_uri: str, **kwargs: Any) -> Any:
    """Explain (or reuse a finished identical run), render the compliance report, log it to MLflow and tag
    the version. Keyword arguments: see :func:`governance.report.publish.report_for_model`."""
    from governance.report import report_for_model

    return report_for_model(model_uri, **kwargs)


#: the name the CLI, the webhook worker and older notes use
report = report_model
