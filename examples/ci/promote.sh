#!/usr/bin/env bash
# CI step: register the candidate model, then let governance decide whether it may hold the alias.
#
# `governance promote` reports on the new version (explanations, PDF report, policy verdict, all logged to
# MLflow) and moves the alias only when the verdict is pass. A blocked version exits 11: the step, and so the
# pipeline, fails, and the alias stays where it was.
#
# Environment (all optional except the tracking store):
#   MLFLOW_TRACKING_URI  the MLflow server, e.g. https://mlflow.example.com (or sqlite:///mlflow.db)
#   MODEL_NAME           registered model name                       [ci-demo]
#   ALIAS                the alias the gate protects                 [champion]
#   POLICY               the release gate                            [examples/ci/release-gate.yaml]
#   REPORTS              where the report folders are written        [governance-reports]
#   TRAIN_ARGS           extra arguments for register_model.py (e.g. --epochs 0 for a model that must fail)
#   PROMOTE_ARGS         extra arguments for governance promote (e.g. --methods neflag --notify URL)
#   PYTHON, GOVERNANCE   the interpreter and the governance command  [python, governance]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
governance="${GOVERNANCE:-governance}"
name="${MODEL_NAME:-ci-demo}"
alias="${ALIAS:-champion}"
policy="${POLICY:-$here/release-gate.yaml}"
reports="${REPORTS:-governance-reports}"

# shellcheck disable=SC2086  # TRAIN_ARGS / PROMOTE_ARGS are word lists on purpose
version="$("$python" "$here/register_model.py" --name "$name" ${TRAIN_ARGS:-} | tail -n 1)"
echo "registered $name version $version"

set +e
# shellcheck disable=SC2086
"$governance" promote "models:/$name/$version" --to "$alias" --policy "$policy" --out "$reports" ${PROMOTE_ARGS:-}
code=$?
set -e

case "$code" in
  0)  echo "promoted: @$alias now points at $name version $version" ;;
  11) echo "::error title=governance gate::$name version $version is blocked: the release gate failed" \
           "(report in $reports/$name-v$version/); @$alias did not move" ;;
  *)  echo "::error title=governance promote::failed with exit code $code" ;;
esac
exit "$code"
