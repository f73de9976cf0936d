"""Registry automation commands: ``serve``, ``jobs``, ``watch``, ``schedule`` and ``webhook``.

All of them share one durable queue (``--queue``, default ``$GOVERNANCE_HOME/queue.db`` or
``$XDG_STATE_HOME/governance/queue.db``); producers (the webhook receiver, ``watch``, ``schedule``) add
report jobs, workers (``jobs work``, or the in-process worker of ``serve``/``watch``/``schedule``) run them.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable

import click

from governance.cli.options import echo_json, spec_from_cli, spec_options

# ------------------------------------------------------------------------------------------ shared options


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (not the stream at set-up time)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(level: str) -> None:
    root = logging.getLogger("governance")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _apply(fn: Callable, decorators: list[Callable]) -> Callable:
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def queue_option(fn: Callable) -> Callable:
    return click.option(
        "--queue", "queue_url", envvar="GOVERNANCE_QUEUE", metavar="URL",
        help="Job queue: sqlite:///path.db [env GOVERNANCE_QUEUE; default $GOVERNANCE_HOME/queue.db, else "
             "$XDG_STATE_HOME/governance/queue.db].")(fn)


def log_option(fn: Callable) -> Callable:
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                        show_default=True, help="Log verbosity (stderr).")(fn)


def trigger_options(fn: Callable) -> Callable:
    return _apply(fn, [
        click.option("--created/--no-created", default=True, show_default=True,
                     help="Report on every newly registered version (model_version.created)."),
        click.option("--alias", "aliases", multiple=True, metavar="ALIAS",
                     help="Report when this alias is set or moved (model_version_alias.created). Repeatable."),
        click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]",
                     help="Report when this tag is set on a version (model_version_tag.set). Repeatable."),
        click.option("--model", "models", multiple=True, metavar="PATTERN",
                     help="Only these registered models (shell patterns such as 'fraud-*'). Repeatable."),
    ])


def gate_option(fn: Callable) -> Callable:
    return click.option(
        "--gate", "gate", multiple=True, metavar="ALIAS",
        help="Promotion gate on this alias (repeatable): when someone moves it to a version whose report fails "
             "--policy, move it back to where it pointed before (or remove it) and tag both versions.")(fn)


def report_options(fn: Callable) -> Callable:
    """The job options (generated from RunSpec, as for `governance report`) plus the queue's attempts."""
    fn = click.option("--max-attempts", type=click.IntRange(1, 50), default=5, show_default=True,
                      help="Attempts per job before a transient error becomes final.")(fn)
    return spec_options("service")(fn)


def worker_options(fn: Callable) -> Callable:
    return _apply(fn, [
        click.option("--concurrency", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Jobs run at the same time."),
        click.option("--lease", "lease_s", type=click.FloatRange(0.5), default=60.0, show_default=True,
                     help="Seconds a claimed job stays reserved without a heartbeat; a killed worker's job is "
                          "taken over after this."),
        click.option("--job-timeout", type=click.FloatRange(1), default=None, help="Kill a job after this many seconds."),
        click.option("--retry-delay", type=click.FloatRange(0), default=10.0, show_default=True,
                     help="First back-off after a transient error (doubles each attempt, capped at 10 min)."),
        click.option("--handler", default=None, metavar="MODULE:FUNCTION",
                     help="Job handler (default: explain + report, governance.service.handlers:report_job)."),
        click.option("--isolation", type=click.Choice(["process", "thread"]), default="process", show_default=True,
                     help="Run each job in a fresh process (crash-proof, killable) or in a worker thread."),
        click.option("--poll", "poll_s", type=click.FloatRange(0.05), default=1.0, show_default=True,
                     help="Seconds between queue polls when idle."),
    ])


def _settings_from(kw: dict[str, Any]) -> Any:
    """The jobs' RunSpec from the command's options (report.* defaults from the settings file, as `governance
    report` reads them), with absolute paths (the worker may run elsewhere) and its files read now, not in
    every job."""
    settings = spec_from_cli(kw, "service").with_absolute_paths()
    settings.fingerprint()
    from governance.report.signing import identity_for

    identity_for(settings.sign_key, settings.sign_cert)  # a wrong key or passphrase fails at start, not per job
    return settings


def _rules(created: bool, aliases: tuple[str, ...], tags: tuple[str, ...], models: tuple[str, ...],
           gate: tuple[str, ...] = ()) -> Any:
    """The trigger rules; a gated alias is a watched alias too (its events are handled by the gate)."""
    from governance.service.triggers import TagRule, TriggerRules

    return TriggerRules(created=created, aliases=tuple(dict.fromkeys((*aliases, *gate))),
                        tags=tuple(TagRule.parse(t) for t in tags), models=tuple(models))


def _gate(queue: Any, gate: tuple[str, ...], models: tuple[str, ...], settings: Any, max_attempts: int,
          on_enqueued: Callable[[], None] | None = None) -> Any:
    """The promotion gate of `serve --gate` / `watch --gate` (None without --gate: the service only reports)."""
    if not gate:
        return None
    from governance.host.aliases import check_alias_name
    from governance.service.gate import Gate, GateRules

    rules = GateRules(aliases=tuple(check_alias_name(a) for a in dict.fromkeys(gate)), models=tuple(models))
    return Gate(queue, rules, settings, max_attempts=max_attempts, on_enqueued=on_enqueued)


def _queue(queue_url: str | None) -> Any:
    from governance.service.config import queue_path
    from governance.service.queue import JobQueue

    return JobQueue(queue_path(queue_url))


def _worker(queue: Any, kw: dict[str, Any]) -> Any:
    from governance.service.handlers import DEFAULT_HANDLER
    from governance.service.worker import RetryPolicy, Worker

    handler = kw.pop("handler") or DEFAULT_HANDLER
    retry = RetryPolicy(base_delay=kw.pop("retry_delay"))
    return Worker(queue, handler, concurrency=kw.pop("concurrency"), lease_seconds=kw.pop("lease_s"),
                  poll_interval=kw.pop("poll_s"), retry=retry, isolation=kw.pop("isolation"),
                  job_timeout=kw.pop("job_timeout"))


class _Stopper:
    """SIGINT/SIGTERM: first stops gracefully (running jobs finish), a second one gives jobs back at once.
    A context manager: the previous handlers come back on exit."""

    def __init__(self, worker: Any = None) -> None:
        self.event = threading.Event()
        self.worker = worker
        self._hits = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self._hits += 1
        self.event.set()
        if self.worker is not None:
            self.worker.stop(force=self._hits > 1)
        if self._hits == 1:
            click.echo("stopping: running jobs finish first (signal again to stop now)", err=True)


# ------------------------------------------------------------------------------------------ serve


ENV = {"auto_envvar_prefix": "GOVERNANCE"}
SHARED_NOTE = """
    Every option may also come from an environment variable named GOVERNANCE_<PARAMETER> (e.g.
    GOVERNANCE_METHODS, GOVERNANCE_POLICY, GOVERNANCE_MAX_SAMPLES, GOVERNANCE_ALIASES="a b"): give
    `serve`, `watch` and `schedule` the same report options that way, so the jobs they queue for one
    version share one idempotency key (the settings fingerprint is logged at start).
"""


def _shared_note(fn: Callable) -> Callable:
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + SHARED_NOTE
    return fn


@click.command("serve", context_settings=ENV)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--path", "url_path", default="/webhook", show_default=True, help="URL path MLflow posts to.")
@click.option("--window", "window_s", type=click.FloatRange(10), default=300.0, show_default=True,
              help="Accepted clock difference of X-MLflow-Timestamp, seconds (covers MLflow's ~8 s of retries).")
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Also run a worker in this process (--no-worker: run `governance jobs work` separately).")
@trigger_options
@gate_option
@report_options
@worker_options
@queue_option
@log_option
@_shared_note
def serve_cmd(host: str, port: int, url_path: str, window_s: float, worker: bool, created: bool,
              aliases: tuple[str, ...], tags: tuple[str, ...], models: tuple[str, ...], gate: tuple[str, ...],
              max_attempts: int, queue_url: str | None, log_level: str, **kw: Any) -> None:
    """Receive MLflow registry webhooks and queue a report job for each matching event.

    Every delivery is checked (HMAC-SHA256 signature with the secret in GOVERNANCE_WEBHOOK_SECRET,
    timestamp window, delivery-id de-duplication) and answered at once; the work happens in the worker.

    \b
    Example:
      export GOVERNANCE_WEBHOOK_SECRET=...          # the same value for `webhook install`
      governance serve --alias champion --tracking-uri http://mlflow:5000
      governance webhook install --url http://this-host:8787/webhook --alias champion --test

    \b
    Promotion gate (an alias moved to a failing version is moved back):
      governance serve --gate champion --policy release-gate.yaml
      governance webhook install --url http://this-host:8787/webhook --gate champion
    """
    import uvicorn

    from governance.service.config import webhook_secrets
    from governance.service.receiver import Receiver, create_app

    _setup_logging(log_level)
    secrets = webhook_secrets()
    settings = _settings_from(kw)
    rules = _rules(created, aliases, tags, models, gate)
    queue = _queue(queue_url)
    gate_obj = _gate(queue, gate, models, settings, max_attempts)
    if gate_obj is not None:  # where the gated aliases point now: the baseline (or the moves missed while down)
        _gate_look(gate_obj, settings, "startup")
    worker_obj = _worker(queue, kw) if worker else None
    receiver = Receiver(queue, secrets=secrets, rules=rules, settings=settings, window_seconds=window_s,
                        max_attempts=max_attempts, gate=gate_obj)
    app = create_app(receiver, path=url_path, worker=worker_obj)
    click.echo(f"governance receiver on http://{host}:{port}{url_path} ({rules.describe()}"
               f"{'; ' + gate_obj.rules.describe() if gate_obj else ''}); queue {queue.path}; "
               f"worker {'in-process' if worker_obj else 'separate (governance jobs work)'}; "
               f"settings {settings.fingerprint()[:12]}", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level if log_level != "info" else "warning",
                access_log=False, lifespan="on", workers=1)


def _gate_look(gate_obj: Any, settings: Any, source: str) -> None:
    """Where the gated aliases point now; without it the gate could not tell where a moved alias came from."""
    from governance.contract.errors import TrackingError
    from governance.host.tracking import client, resolve_tracking_uri

    try:
        result = gate_obj.sync(client(resolve_tracking_uri(settings.tracking_uri)), source=source)
    except Exception as exc:
        raise TrackingError(f"the gate cannot read where the gated aliases point: {type(exc).__name__}: {exc}",
                            hint="the gate needs the registry at start-up; check --tracking-uri and the server") \
            from exc
    what = "baseline recorded" if result.baseline else f"{len(result.queued)} move(s) missed meanwhile queued"
    click.echo(f"gate: {result.seen} gated alias position(s) looked up, {what}", err=True)


# ------------------------------------------------------------------------------------------ jobs


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _jobs_table(jobs: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in ("id", "state", "model", "trigger", "source", "tries", "dup", "updated", "result / error"):
        table.add_column(col, overflow="fold")
    colours = {"succeeded": "green", "failed": "red", "running": "cyan", "queued": "yellow", "cancelled": "dim"}
    for j in jobs:
        if j.state == "succeeded" and (j.result or {}).get("gate"):
            gate = j.result["gate"]
            note = f"gate {gate['action']}: {gate['detail']} (verdict {gate.get('verdict')})"
        elif j.state == "succeeded":
            res = j.result or {}
            note = f"{res.get('status', 'ok')}, run {res.get('mlflow_run_id') or '-'}"
            if res.get("pdf"):
                note += f", {res['pdf']}"
        elif j.state == "queued" and j.run_after > time.time() + 0.5:
            note = f"retry at {_ago(j.run_after)}: {(j.error or '').splitlines()[0][:80] if j.error else ''}"
        else:
            note = (j.error or "").splitlines()[0][:100] if j.error else ""
        table.add_row(str(j.id), f"[{colours.get(j.state, 'white')}]{j.state}[/]",
                      f"{j.payload.get('name')}/{j.payload.get('version')}", j.trigger, j.source,
                      f"{j.attempts}/{j.max_attempts}", str(j.duplicates), _ago(j.updated_at), note)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


@click.group("jobs", invoke_without_command=True)
@click.option("--state", "states", multiple=True, type=click.Choice(["queued", "running", "succeeded", "failed",
                                                                      "cancelled"]), help="Only these states.")
@click.option("--limit", type=click.IntRange(1), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@queue_option
@click.pass_context
def jobs_cmd(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool, queue_url: str | None) -> None:
    """List report jobs (newest first) and their states; sub-commands manage them and run a worker."""
    ctx.ensure_object(dict)
    ctx.obj["queue_url"] = queue_url
    if ctx.invoked_subcommand is not None:
        return
    queue = _queue(queue_url)
    jobs = queue.jobs(states=tuple(states) or None, limit=limit)
    if as_json:
        echo_json({"counts": queue.counts(), "jobs": [j.to_dict() for j in jobs]})
        return
    counts = queue.counts()
    click.echo(f"queue {queue.path}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if any(counts.values())
               else f"queue {queue.path}: empty")
    if jobs:
        _jobs_table(jobs)


def _queue_of(ctx: click.Context, queue_url: str | None) -> Any:
    return _queue(queue_url or (ctx.obj or {}).get("queue_url"))


@jobs_cmd.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@queue_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int, as_json: bool, queue_url: str | None) -> None:
    """One job in full: payload, result or error, and its history."""
    from governance.contract.errors import ConfigError

    queue = _queue_of(ctx, queue_url)
    job = queue.get(job_id)
    if job is None:
        raise ConfigError(f"no job {job_id} in {queue.path}", hint="list jobs with `governance jobs`")
    doc = {**job.to_dict(), "history": queue.events(job_id)}
    if as_json:
        echo_json(doc)
        return
    click.echo(f"job {job.id}: {job.state}  {job.payload.get('model_uri')}  ({job.source}: {job.trigger})")
    click.echo(f"  attempts {job.attempts}/{job.max_attempts}, duplicates {job.duplicates}, key {job.key[:16]}…")
    if job.result:
        click.echo("  result: " + json.dumps(job.result, sort_keys=True))
    if job.error:
        click.echo("  error: " + job.error.rstrip().replace("\n", "\n    "))
    click.echo("  history:")
    for ev in doc["history"]:
        click.echo(f"    {_ago(ev['at'])}  {ev['event']:<10} {ev['detail'] or ''}")


@jobs_cmd.command("gate")
@click.option("--limit", type=click.IntRange(1), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@queue_option
@click.pass_context
def jobs_gate(ctx: click.Context, limit: int, as_json: bool, queue_url: str | None) -> None:
    """Gate actions, newest first: every move of a gated alias the service saw and what the gate did about it
    (kept, reverted, removed, left alone), with the job that checked it."""
    from governance.service.gate_ledger import GateLedger

    moves = GateLedger(_queue_of(ctx, queue_url)).moves(limit=limit)
    if as_json:
        echo_json([m.to_dict() for m in moves])
        return
    if not moves:
        click.echo("no gated alias moves recorded")
        return
    for m in moves:
        where = f"{m.name}@{m.alias}: {m.from_version or '-'} -> {m.to_version or '-'}"
        job = f"job {m.job_id}" if m.job_id else "no job"
        click.echo(f"{_ago(m.observed_at)}  move {m.id:<4} {where:<34} {m.state:<10} {m.source:<8} {job:<8} "
                   f"{m.detail or ''}")


@jobs_cmd.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@queue_option
@click.pass_context
def jobs_retry(ctx: click.Context, job_ids: tuple[int, ...], queue_url: str | None) -> None:
    """Queue failed or cancelled jobs again, with a fresh attempt budget."""
    queue = _queue_of(ctx, queue_url)
    for job_id in job_ids:
        job = queue.requeue(job_id)
        click.echo(f"job {job.id} queued again ({job.payload.get('model_uri')})")


@jobs_cmd.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@queue_option
@click.pass_context
def jobs_cancel(ctx: click.Context, job_ids: tuple[int, ...], queue_url: str | None) -> None:
    """Cancel queued jobs."""
    queue = _queue_of(ctx, queue_url)
    for job_id in job_ids:
        queue.cancel(job_id)
        click.echo(f"job {job_id} cancelled")


@jobs_cmd.command("work", context_settings=ENV)
@click.option("--drain", is_flag=True, help="Exit once nothing is queued or running.")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Exit after claiming this many jobs.")
@worker_options
@queue_option
@log_option
@click.pass_context
def jobs_work(ctx: click.Context, drain: bool, max_jobs: int | None, queue_url: str | None, log_level: str,
              **kw: Any) -> None:
    """Run a worker: claim queued jobs and run them until stopped (SIGINT/SIGTERM: finish, then exit).

    Several workers, on one machine or several sharing the queue file's disk, may run at once: each job
    is claimed by exactly one. A job whose worker dies is taken over when its lease expires.
    """
    from governance.service.worker import queue_idle

    _setup_logging(log_level)
    queue = _queue_of(ctx, queue_url)
    worker = _worker(queue, kw)
    click.echo(f"worker {worker.owner} on {queue.path} (concurrency {worker.concurrency}, {worker.isolation} "
               "isolation)", err=True)
    with _Stopper(worker):
        stats = worker.run(until=queue_idle(queue) if drain else None, max_jobs=max_jobs)
    click.echo(f"worker done: {stats.succeeded} succeeded, {stats.failed} failed, {stats.retried} retried", err=True)


# ------------------------------------------------------------------------------------------ watch


@click.command("watch", context_settings=ENV)
@click.option("--interval", "interval", default="60s", show_default=True, metavar="DURATION",
              help="Time between registry polls (e.g. 30s, 5m).")
@click.option("--once", is_flag=True, help="Poll once (and, with --worker, run what was queued), then exit.")
@click.option("--lookback", default="10m", show_default=True, metavar="DURATION",
              help="How far before the newest version seen each pass looks again (clock skew, slow registrations); "
                   "also where the very first pass starts.")
@click.option("--backfill", is_flag=True, help="On the first pass, queue every existing version, not only recent ones.")
@click.option("--worker/--no-worker", default=True, show_default=True, help="Also run the queued jobs in this process.")
@trigger_options
@gate_option
@report_options
@worker_options
@queue_option
@log_option
@_shared_note
def watch_cmd(interval: str, once: bool, lookback: str, backfill: bool, worker: bool, created: bool,
              aliases: tuple[str, ...], tags: tuple[str, ...], models: tuple[str, ...], gate: tuple[str, ...],
              max_attempts: int, queue_url: str | None, log_level: str, **kw: Any) -> None:
    """Poll the registry (search_model_versions) and queue reports for new versions, aliases or tags.

    For stores that fire no webhooks (file stores, direct database access, managed MLflow), and as a
    safety net beside `governance serve`: MLflow drops an event after 4 failed deliveries. Jobs already
    queued or reported, by either path, are not queued again.

    With --gate ALIAS each pass also checks where the gated aliases point; a move since the last pass (the
    first pass only records the baseline) is reported on and moved back when the version fails --policy.
    """
    from governance.service.scheduler import parse_duration
    from governance.service.watcher import Watcher
    from governance.service.worker import jobs_final

    _setup_logging(log_level)
    settings = _settings_from(kw)
    rules = _rules(created, aliases, tags, models, gate)
    queue = _queue(queue_url)
    worker_obj = _worker(queue, kw) if worker else None
    wake = worker_obj.wake if worker_obj else None
    watcher = Watcher(queue, rules, settings, lookback_s=parse_duration(lookback), backfill=backfill,
                      max_attempts=max_attempts, on_enqueued=wake,
                      gate=_gate(queue, gate, models, settings, max_attempts, on_enqueued=wake))
    click.echo(f"watch: settings {settings.fingerprint()[:12]}, queue {queue.path}", err=True)
    with _Stopper(worker_obj) as stopper:
        if once:
            result = watcher.poll_once()
            click.echo(f"watch: {result.summary()}", err=True)
            if worker_obj is not None and result.queued:
                stats = worker_obj.run(until=jobs_final(queue, result.queued))
                click.echo(f"ran {stats.finished} job(s): {stats.succeeded} succeeded, {stats.failed} failed",
                           err=True)
                if stats.failed:
                    sys.exit(1)
            return
        thread = None
        if worker_obj is not None:
            thread = threading.Thread(target=worker_obj.run, name="governance-worker", daemon=True)
            thread.start()
        click.echo(f"watching {settings.tracking_uri or 'the default tracking store'} every {interval} "
                   f"({rules.describe()})", err=True)
        watcher.run(interval_s=parse_duration(interval), stop=stopper.event)
        if worker_obj is not None and thread is not None:
            worker_obj.stop()
            thread.join()


# ------------------------------------------------------------------------------------------ schedule


@click.command("schedule", context_settings=ENV)
@click.option("--alias", "aliases", multiple=True, required=True, metavar="ALIAS",
              help="Report on the version behind this alias of every selected model. Repeatable.")
@click.option("--model", "models", multiple=True, metavar="PATTERN", help="Only these registered models. Repeatable.")
@click.option("--every", default=None, metavar="DURATION",
              help="Repeat every DURATION (e.g. 6h, 1d) until stopped; without it, one pass (for cron).")
@click.option("--run/--enqueue-only", "run_jobs", default=True, show_default=True,
              help="Run the queued jobs here, or leave them to `governance jobs work`.")
@report_options
@worker_options
@queue_option
@log_option
@_shared_note
def schedule_cmd(aliases: tuple[str, ...], models: tuple[str, ...], every: str | None, run_jobs: bool,
                 max_attempts: int, queue_url: str | None, log_level: str, **kw: Any) -> None:
    """Recurring reports on every version that carries an alias (e.g. champion).

    Idempotent: a version already reported under the same settings (policy, config and data file
    contents, methods, options) is not reported again, so running it from cron every hour costs one
    registry query when nothing changed. Exit code 1 when a job of this pass failed.

    \b
    Examples:
      governance schedule --alias champion                # one pass, e.g. from cron
      governance schedule --alias champion --every 1d     # a long-running scheduler
    """
    from governance.service.scheduler import parse_duration, schedule_pass
    from governance.service.worker import jobs_final

    _setup_logging(log_level)
    settings = _settings_from(kw)
    queue = _queue(queue_url)
    worker_obj = _worker(queue, kw) if run_jobs else None
    period = parse_duration(every) if every else None
    click.echo(f"schedule: settings {settings.fingerprint()[:12]}, queue {queue.path}", err=True)
    with _Stopper(worker_obj) as stopper:
        failed_any = False
        while True:
            started = time.monotonic()
            result = schedule_pass(queue, tuple(aliases), settings, models=tuple(models), max_attempts=max_attempts)
            click.echo(f"schedule: {len(result.targets)} version(s) behind {', '.join('@' + a for a in aliases)}; "
                       f"{len(result.queued)} queued, {len(result.already)} already queued or reported", err=True)
            if worker_obj is not None and result.job_ids:
                worker_obj.run(until=jobs_final(queue, result.job_ids))
                jobs = queue.jobs(ids=result.job_ids, limit=len(result.job_ids))
                failed = [j for j in jobs if j.state != "succeeded"]
                for j in failed:
                    click.echo(f"  job {j.id} {j.payload.get('model_uri')}: {j.state} "
                               f"{(j.error or '').splitlines()[0] if j.error else ''}", err=True)
                failed_any = failed_any or bool(failed)
            if period is None or stopper.event.is_set():
                break
            if stopper.event.wait(max(0.0, period - (time.monotonic() - started))):
                break
    if failed_any:
        sys.exit(1)


# ------------------------------------------------------------------------------------------ webhook


@click.group("webhook")
def webhook_cmd() -> None:
    """Manage the MLflow webhook that feeds `governance serve`."""


@webhook_cmd.command("install", context_settings=ENV)
@click.option("--url", required=True, metavar="URL", help="Where MLflow posts: the receiver's URL, e.g. "
              "https://governance.example.com/webhook.")
@click.option("--name", default="governance", show_default=True, help="Webhook name; an existing one is updated.")
@click.option("--description", default=None, help="Webhook description (default: what it triggers).")
@click.option("--test/--no-test", default=True, show_default=True,
              help="Send MLflow's test delivery and check that the receiver verified its signature.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
              help="The MLflow server (http/https) [env MLFLOW_TRACKING_URI].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@trigger_options
@gate_option
def webhook_install(url: str, name: str, description: str | None, test: bool, tracking_uri: str | None,
                    as_json: bool, created: bool, aliases: tuple[str, ...], tags: tuple[str, ...],
                    models: tuple[str, ...], gate: tuple[str, ...]) -> None:
    """Create (or update) the MLflow webhook, with the secret from GOVERNANCE_WEBHOOK_SECRET.

    Subscribes to the events the trigger options need: model_version.created (--created),
    model_version_alias.created (--alias, --gate), model_version_alias.deleted (--gate: the gate keeps
    track of removed aliases), model_version_tag.set (--tag). Model and alias filters are applied by the
    receiver, so use the same trigger and --gate options for `governance serve`.

    The MLflow server must run with a fixed MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (kept across restarts),
    and, for http:// or private-network receivers, MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and
    MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true.
    """
    from governance.contract.errors import TrackingError
    from governance.service.config import webhook_secrets
    from governance.service.webhooks import explain_test_failure, install_webhook

    from governance.service.gate import GATE_EVENTS

    secret = webhook_secrets()[0]
    rules = _rules(created, aliases, tags, models, gate)
    res = install_webhook(url=url, rules=rules, secret=secret, tracking_uri=tracking_uri, name=name,
                          description=description, test=test, extra_events=GATE_EVENTS if gate else ())
    wh = res.webhook
    doc = {"action": res.action, "id": wh.webhook_id, "name": wh.name, "url": wh.url,
           "events": [f"{e.entity.value}.{e.action.value}" for e in wh.events]}
    if res.test is not None:
        doc["test"] = {"success": res.test.success, "status": res.test.response_status,
                       "error": res.test.error_message}
    if as_json:
        echo_json(doc)
    else:
        click.echo(f"webhook {doc['name']} {res.action} ({doc['id']}): {doc['url']} <- {', '.join(doc['events'])}")
        if res.test is not None:
            click.echo("test delivery: " + ("ok, the receiver verified the signature" if res.test.success
                                            else f"FAILED ({res.test.response_status}) {res.test.error_message or ''}"))
    if res.test is not None and not res.test.success:
        raise TrackingError("the webhook is installed but its test delivery failed",
                            hint=explain_test_failure(res.test))


@webhook_cmd.command("list")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
              help="The MLflow server (http/https) [env MLFLOW_TRACKING_URI].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def webhook_list(tracking_uri: str | None, as_json: bool) -> None:
    """List the webhooks registered on the MLflow server."""
    from governance.service.webhooks import list_webhooks

    rows = [{"id": w.webhook_id, "name": w.name, "url": w.url, "status": str(w.status),
             "events": [f"{e.entity.value}.{e.action.value}" for e in w.events]}
            for w in list_webhooks(tracking_uri)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no webhooks")
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['name']:<20} {r['status']:<8} {r['url']}  <- {', '.join(r['events'])}")
