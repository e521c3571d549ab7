#!/usr/bin/env bash
# Command 2: the whole test suite (unit, DAG integrity, PostgreSQL-backed, end-to-end with real
# Airflow processes), then ruff. Arguments are passed to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
exec "$ROOT/.venv/bin/python" -m pytest "$@"
