#!/usr/bin/env bash
# Runs the benchmarks (bench/README.md): bootstrap, then DAG parse time, trigger->success latency
# (Tributary vs plain Airflow), startup/shutdown of the run command, the ML data pipeline on 1M and
# 10M rows, Bitcoin chain sync (batched RPC + COPY vs row by row) and EVM transactions and indexing. The output is also written to bench/results/latest.txt. Each benchmark has a time limit; the
# suite takes about 10 minutes on two cores and at most 25. Exits non-zero when a benchmark failed or
# missed its target.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/results"
GRACE=40  # seconds a timed-out benchmark gets to stop its Airflow processes before SIGKILL

suite() {
  local failed=() name limit started status
  echo "# Tributary benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ), commit" \
       "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), $(nproc) CPUs"
  started=$SECONDS
  "$ROOT/scripts/bootstrap.sh" || { echo "FAIL: scripts/bootstrap.sh"; return 1; }
  echo "(bootstrap: $((SECONDS - started)) s)"
  cd "$ROOT" || return 1
  for spec in "bench_dag_parse.py 90" "bench_trigger_latency.py 240" "bench_startup.py 150" \
              "bench_ml_pipeline.py 600" "bench_bitcoin_sync.py 240" "bench_evm.py 120" \
              "bench_web5.py 240"; do
    name="${spec% *}" limit="${spec#* }"
    echo
    echo "## $name"
    started=$SECONDS
    timeout --kill-after="$GRACE" "$limit" "$ROOT/.venv/bin/python" "bench/$name"
    status=$?
    [ "$status" -eq 124 ] && echo "TIMEOUT: $name took longer than $limit s"
    [ "$status" -ne 0 ] && failed+=("$name (exit $status)")
    echo "($name: $((SECONDS - started)) s)"
  done
  echo
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    return 1
  fi
  echo "all benchmarks passed"
}

mkdir -p "$RESULTS"
suite 2>&1 | tee "$RESULTS/latest.txt"
exit "${PIPESTATUS[0]}"
