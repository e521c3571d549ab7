#!/usr/bin/env bash
# Command 2: the whole test suite (unit, DAG integrity, PostgreSQL-backed, end-to-end with real
# Airflow processes), then ruff. Arguments are passed to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# The compose-file test runs `docker compose config` where a Docker client is installed. No compose
# plugin ships with Debian's client, so install Debian's docker-compose (offline validator) if we can.
if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 &&
   ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing Debian's docker-compose to validate docker-compose.yaml"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 ||
    echo "test: could not install docker-compose; the compose CLI check will be skipped" >&2
fi
"$ROOT/.venv/bin/ruff" check .
exec "$ROOT/.venv/bin/python" -m pytest "$@"
