"""Running methods on a model version: the run specification, the one place methods execute, the pipeline
that prepares a job and logs it to MLflow, and the executors that fan several jobs out."""
