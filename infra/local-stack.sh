#!/usr/bin/env bash
# The production stack's native twin on this machine: PostgreSQL, a Prefect server and an
# MLflow server on it, `rclone serve s3` and anvil, each on 127.0.0.1 (STACK_HOST to change),
# stopped by PID. Usage: infra/local-stack.sh up|down|status|env
#   STACK_ROOT  where the services keep data, logs and PIDs (default .flock/stack)
#   STACK_PORT_<NAME>  a service's port (POSTGRES 15432, S3 19000, ANVIL 18545, PREFECT 14200,
#                      MLFLOW 15000)
# After `up`: `source .flock/stack/stack.env` points flock at the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "error: no .venv here: run \`make setup\` first" >&2
    exit 2
fi
exec .venv/bin/python -m flock_pipeline.faces.stack "$@"
