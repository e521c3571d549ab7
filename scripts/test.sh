#!/usr/bin/env bash
# Command 2: ruff, then the tests. Arguments are passed to pytest. With none it runs the whole suite
# (what CI runs); every test carries a marker of what it needs, so `-m unit` (no PostgreSQL, no devnet,
# no Airflow processes; under a minute), `-m postgres`, `-m "devnet and not e2e"` and `-m e2e` run one group.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# The compose-file test runs `docker compose config` where a Docker client is installed. No compose
# plugin ships with Debian's client, so install Debian's docker-compose (offline validator) if we can.
# Tried once per environment (the stamp is in .venv): a failing apt-get would otherwise cost every run.
COMPOSE_TRIED="$ROOT/.venv/.tributary-docker-compose-tried"
if [ ! -e "$COMPOSE_TRIED" ] && command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 &&
   ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing Debian's docker-compose to validate docker-compose.yaml"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 ||
    echo "test: could not install docker-compose; the compose CLI check will be skipped" >&2
  touch "$COMPOSE_TRIED"
fi
# Keep compiled bytecode between runs, outside the work tree: with PYTHONDONTWRITEBYTECODE (set in some
# environments) every run compiles our ~200 modules and tests again, 5 s of a unit run. The first run
# after a fresh .venv fills the cache (site-packages too, ~20 s once).
export PYTHONPYCACHEPREFIX="$ROOT/.venv/pycache"
unset PYTHONDONTWRITEBYTECODE
"$ROOT/.venv/bin/ruff" check .
exec "$ROOT/.venv/bin/python" -m pytest "$@"
