#!/usr/bin/env bash
# Command 1: set up (venv, warehouse, metadata DB, settings, users) and run Airflow with our DAGs.
# Options are passed on: --port N, --home PATH, --prepare-only (see python -m tributary.cli.run -h).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m tributary.cli.run "$@"
