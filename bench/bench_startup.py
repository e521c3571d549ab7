"""Benchmark 3: how long command 1 (the run command) takes until the API is healthy, and to stop.

cold: a fresh temporary AIRFLOW_HOME (metadata DB migration, warehouse database and migrations,
settings load, then the four components); warm: a second start on the same home. Each is timed from
process start until ``GET /api/v2/monitor/health`` shows metadatabase and scheduler healthy (polled
every 0.1 s); then SIGTERM goes to the process group and the shutdown is timed until every process
of the deployment has exited. Also times ``scripts/bootstrap.sh`` on the up-to-date venv.

    .venv/bin/python bench/bench_startup.py

Prints ``startup cold: X s, warm: Y s (ratio warm/cold Z), shutdown: W s`` (W: the slower of the two
shutdowns) and ``bootstrap (up-to-date venv): B s``. Exits non-zero when Airflow does not become
healthy, a process stays behind, or bootstrap takes 1 s or more.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _airflow import Deployment, install_sigterm_handler, temporary_home

from tributary.cli.env import PROJECT_ROOT

BOOTSTRAP_TARGET = 1.0


def start_and_stop(deployment: Deployment, label: str) -> tuple[float, float]:
    try:
        deployment.start()
        startup = deployment.wait_healthy(timeout=120)
    finally:
        shutdown = deployment.stop()
    prepared = deployment.prepare_seconds()
    slowest = ", ".join(f"{name} {seconds:.1f} s" for seconds, name in deployment.last_stop[:3])
    answered = f"{deployment.api_answered:.1f}" if deployment.api_answered is not None else "?"
    print(f"  {label}: healthy after {startup:.2f} s (prepare {prepared if prepared is not None else '?'} s, "
          f"API answering after {answered} s), "
          f"shutdown {shutdown:.2f} s (slowest to exit: {slowest})", flush=True)
    return startup, shutdown


def time_bootstrap(runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        result = subprocess.run([str(PROJECT_ROOT / "scripts" / "bootstrap.sh")], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=120)
        times.append(time.monotonic() - started)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/bootstrap.sh failed ({result.returncode}):\n{result.stderr[-2000:]}")
        if result.stdout.strip():  # it had work to do: not the up-to-date case, measure again
            print(f"  bootstrap had work to do ({times.pop():.1f} s): {result.stdout.strip()}", flush=True)
    return statistics.median(times) if times else float("nan")


def main() -> int:
    install_sigterm_handler()
    with temporary_home("tributary-bench-startup-") as tmp:
        deployment = Deployment(home=tmp / "home", reports_dir=tmp / "reports")
        try:
            cold, cold_stop = start_and_stop(deployment, "cold (fresh AIRFLOW_HOME)")
            warm, warm_stop = start_and_stop(deployment, "warm (same AIRFLOW_HOME)")
        finally:
            deployment.drop_warehouse_database()
    print(f"startup cold: {cold:.1f} s, warm: {warm:.1f} s (ratio warm/cold {warm / cold:.2f}), "
          f"shutdown: {max(cold_stop, warm_stop):.1f} s", flush=True)

    bootstrap = time_bootstrap()
    print(f"bootstrap (up-to-date venv): {bootstrap:.2f} s (median of 3, target < {BOOTSTRAP_TARGET:.0f} s)",
          flush=True)
    if not bootstrap < BOOTSTRAP_TARGET:
        print("FAIL: scripts/bootstrap.sh is slow on an up-to-date venv", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
