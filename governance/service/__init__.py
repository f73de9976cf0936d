"""Registry automation: governance reacting to MLflow by itself.

Producers put report jobs into one durable queue; workers run them::

    MLflow webhook ──▶ receiver.Receiver (signature, window, delivery-id de-dup) ─┐
    registry polling ──▶ watcher.Watcher (search_model_versions, cursor) ────────┼──▶ queue.JobQueue (SQLite, WAL)
    cron / timer / CronJob ──▶ scheduler.schedule_pass (versions behind an alias) ┘        │ claim + lease
                                                                                           ▼
                                          worker.Worker ──▶ handlers.report_job ──▶ governance.api.report_model

Modules: ``config`` (paths, secret), ``signing`` (the MLflow signature), ``triggers`` (events, rules),
``jobs`` (settings fingerprint, idempotency key), ``queue``, ``worker``, ``handlers``, ``receiver``,
``watcher``, ``scheduler``, ``webhooks`` (install/list); the promotion gate: ``gate`` (alias moves -> gate jobs),
``gate_ledger`` (where gated aliases point, every move), ``gate_job`` (report, keep or revert). The commands live
in ``governance.cli.service``.
"""
