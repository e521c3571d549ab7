#!/usr/bin/env bash
# Creates or refreshes the project's virtual environment from the lock (requirements.txt).
# Idempotent: when the lock and pyproject.toml are unchanged since the last install, it returns
# in well under a second. Sourced by scripts/run.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
UV_VERSION="0.13.8"

find_python() {
  for candidate in "${TRIBUTARY_PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (set TRIBUTARY_PYTHON to its path)" >&2
  return 1
}

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$(find_python)" -m venv "$VENV"
fi
want="$(stamp_of)"
if [ "$(cat "$VENV/.tributary-stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "bootstrap: installing the locked dependencies (requirements.txt)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  # --compile-bytecode: this environment sets PYTHONDONTWRITEBYTECODE, and every task process
  # would otherwise pay ~1 s more to import Airflow.
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --compile-bytecode --quiet -r "$ROOT/requirements.txt"
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --compile-bytecode --quiet --no-deps -e "$ROOT"
  echo "$want" > "$VENV/.tributary-stamp"
fi

# Node packages of the devnets and the contract build (pinned by their package-lock.json): `npm ci`
# when a lock changed since the last install. Needs Node.js 20 and npm (the registry is reachable).
for lock in "$ROOT/package-lock.json" "$ROOT"/devnets/*/package-lock.json; do
  [ -f "$lock" ] || continue
  dir="$(dirname "$lock")"
  npm_stamp="$(cat "$lock" "$dir/package.json" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$dir/node_modules/.tributary-stamp" 2>/dev/null || true)" != "$npm_stamp" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "error: npm is required for $dir (install Node.js 20 and npm)" >&2
      exit 1
    fi
    rel="${dir#"$ROOT"}"
    echo "bootstrap: npm ci in ./${rel#/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$npm_stamp" > "$dir/node_modules/.tributary-stamp"
  fi
done
