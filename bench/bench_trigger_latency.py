"""Benchmark 2: wall time from ``POST /dagRuns`` to the run's terminal state, Tributary vs plain Airflow.

Starts a throw-away deployment (``python -m tributary.cli.run``, free ports, temporary AIRFLOW_HOME)
whose DAGs folder is ``bench/dags``: ``bench_tributary_chain`` (Tributary's default_args with its
callbacks, ``classified`` tasks, typed params) and ``bench_plain_chain`` (the same three steps as
plain PythonOperators, retries=2, no callbacks). After one untimed warm-up run per DAG, it triggers
RUNS runs of each DAG over REST as ``ops``, one at a time and alternating between the DAGs (so a
drift in machine load hits both alike), and polls the run every 0.1 s.

    .venv/bin/python bench/bench_trigger_latency.py [--runs 5]

Prints the per-run figures and
``trigger->success median: tributary X s, plain Y s, ratio R`` (target: ratio <= 1.5).
Exits non-zero when a run does not succeed, or when the ratio exceeds the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from _airflow import BENCH_DIR, Deployment, install_sigterm_handler, running, temporary_home

from tributary.platform.hook import TERMINAL_RUN_STATES, AirflowApiClient

TRIBUTARY, PLAIN = "bench_tributary_chain", "bench_plain_chain"
TARGET_RATIO = 1.5
RUN_TIMEOUT = 60.0


def timed_run(client: AirflowApiClient, dag_id: str, conf: dict[str, Any]) -> tuple[float, str, str]:
    """(seconds from the POST to a terminal state, state, run id)."""
    started = time.monotonic()
    response = client.trigger(dag_id, conf)
    if response.status_code != 200:
        raise RuntimeError(f"trigger {dag_id}: {response.status_code} {response.text[:300]}")
    run_id = response.json()["dag_run_id"]
    while True:
        state = client.get_run(dag_id, run_id)["state"]
        if state in TERMINAL_RUN_STATES:
            return time.monotonic() - started, str(state), run_id
        if time.monotonic() - started > RUN_TIMEOUT:
            raise TimeoutError(f"run {dag_id}/{run_id} still {state} after {RUN_TIMEOUT:.0f}s")
        time.sleep(0.1)


def task_spans(client: AirflowApiClient, dag_id: str, run_id: str) -> str:
    """Where the time of one run went: each task's queued->start->end, relative to the run's start."""
    from datetime import datetime

    def parse(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    run = client.get_run(dag_id, run_id)
    base = parse(run.get("queued_at")) or parse(run.get("start_date"))
    parts = []
    for ti in sorted(client.task_instances(dag_id, run_id), key=lambda t: t.get("start_date") or ""):
        start, end = parse(ti.get("start_date")), parse(ti.get("end_date"))
        if base and start and end:
            parts.append(f"{ti['task_id']} {(start - base).total_seconds():.1f}-{(end - base).total_seconds():.1f}")
    end = parse(run.get("end_date"))
    if base and end:
        parts.append(f"run end {(end - base).total_seconds():.1f}")
    return ", ".join(parts)


def success_events(client: AirflowApiClient, dag_id: str) -> int | None:
    """Success events the callbacks stored in the warehouse (proves they ran); None if unreadable."""
    import psycopg2

    response = client.request("GET", "/api/v2/connections/tributary_warehouse")
    if response.status_code != 200:
        return None
    conn_info = response.json()
    try:
        conn = psycopg2.connect(host=conn_info["host"], port=conn_info.get("port") or 5432,
                                user=conn_info.get("login"), password=conn_info.get("password") or None,
                                dbname=conn_info.get("schema"), connect_timeout=5)
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM error_events WHERE dag_id = %s AND kind = 'success'", (dag_id,))
            return int(cur.fetchone()[0])
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    install_sigterm_handler()

    times: dict[str, list[float]] = {TRIBUTARY: [], PLAIN: []}
    with temporary_home("tributary-bench-trigger-") as tmp:
        deployment = Deployment(home=tmp / "home", dags_folder=BENCH_DIR / "dags", reports_dir=tmp / "reports")
        with running(deployment) as airflow:
            print(f"airflow up after {time.monotonic() - airflow.started:.1f}s at {airflow.base_url}", flush=True)
            registered = airflow.wait_registered([TRIBUTARY, PLAIN])
            print(f"both DAGs registered {registered:.1f}s later", flush=True)
            client = airflow.client("ops")
            for dag_id in (TRIBUTARY, PLAIN):
                client.unpause(dag_id)
            schedule = [TRIBUTARY, PLAIN] * (args.runs + 1)  # the first round is the warm-up
            for index, dag_id in enumerate(schedule):
                seconds, state, run_id = timed_run(client, dag_id, {"start": index})
                warm_up = index < 2
                label = "warm-up" if warm_up else f"run {index // 2}"
                print(f"  {dag_id:22} {label:8} {seconds:6.2f} s  {state}  ({task_spans(client, dag_id, run_id)})",
                      flush=True)
                if state != "success":
                    raise RuntimeError(f"{dag_id} run {run_id} ended {state}")
                if not warm_up:
                    times[dag_id].append(seconds)
            events = success_events(client, TRIBUTARY)
            expected = 3 * (args.runs + 1)
            print(f"tributary callbacks stored {events if events is not None else '?'} success events "
                  f"(expected {expected})", flush=True)

    tributary, plain = statistics.median(times[TRIBUTARY]), statistics.median(times[PLAIN])
    ratio = tributary / plain
    print(f"trigger->success median: tributary {tributary:.2f} s, plain {plain:.2f} s, ratio {ratio:.2f} "
          f"(target <= {TARGET_RATIO})", flush=True)
    if ratio > TARGET_RATIO:
        print(f"FAIL: the framework adds more than {TARGET_RATIO - 1:.0%} to the run latency", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
