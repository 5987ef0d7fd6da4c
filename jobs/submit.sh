#!/usr/bin/env bash
# Submit a study to a running Ray cluster through its Jobs API:
#
#   jobs/submit.sh [hydra overrides…]      e.g. jobs/submit.sh family=width search.trials=12 tracking.uri=http://mlflow:5000
#
# The repository (less .venv, .orthoscale, .git and build debris) is uploaded as the job's working
# directory and the study runs on the cluster as `python -m orthoscale.sweep ray.address=auto …`.
#
# Environment:
#   RAY_ADDRESS     the cluster's dashboard / Jobs API (default http://127.0.0.1:8265: the compose
#                   cluster, or a `ray dashboard` / `kubectl port-forward` tunnel)
#   RAY_AUTH_TOKEN  the cluster's token (required: Ray token authentication stays on)
#   RAY_JOB_FLAGS   extra `ray job submit` flags, e.g. "--no-wait" or "--submission-id depth-1"
#   ORTHOSCALE_ENTRY  what the job runs after `python -m` (default orthoscale.sweep; "orthoscale paper" for
#                     `make paper-cluster`)
set -euo pipefail

if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
  echo "jobs/submit.sh: RAY_AUTH_TOKEN is not set; export the cluster's token first," >&2
  echo "  e.g. export RAY_AUTH_TOKEN=\$(ray get-auth-token)   (or the value given to the cluster)" >&2
  exit 2
fi
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"

# `ray` from the project's .venv when there is one, else from PATH.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/ray ]]; then
  ray=.venv/bin/ray
elif command -v ray > /dev/null; then
  ray=ray
else
  echo "jobs/submit.sh: no ray CLI (run 'make install', or install ray==2.60.0)" >&2
  exit 2
fi

runtime_env='{"excludes": [".venv", ".orthoscale", ".build", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "build"]}'

# shellcheck disable=SC2086  # RAY_JOB_FLAGS is a list of flags
read -r -a entry <<< "${ORTHOSCALE_ENTRY:-orthoscale.sweep}"
exec "$ray" job submit --address "$address" --working-dir . --runtime-env-json "$runtime_env" \
  ${RAY_JOB_FLAGS:-} -- python -m "${entry[@]}" ray.address=auto "$@"
