"""``default_args`` for every Tributary DAG: owner, retries with exponential backoff, callbacks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tributary.core.callbacks import on_failure, on_retry, on_success
from tributary.core.conn_policy import check_run_connections


def default_args(
    system: str,
    *,
    owner: str = "tributary",
    retries: int = 3,
    retry_delay: timedelta = timedelta(seconds=10),
    max_retry_delay: timedelta = timedelta(minutes=10),
    execution_timeout: timedelta = timedelta(hours=1),
    record_success: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Defaults shared by all DAGs. ``system`` names the integration in events and alerts.

    Transient errors are retried by Airflow (``retries`` times, exponential backoff from
    ``retry_delay`` up to ``max_retry_delay``); the other classes fail fast through
    ``core.failfast`` and are never retried.
    """
    if retries < 2:
        raise ValueError("Tributary DAGs retry transient failures at least twice (retries >= 2)")
    args: dict[str, Any] = {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": execution_timeout,
        "on_failure_callback": on_failure(system),
        "on_retry_callback": on_retry(system),
        # Before each task's execute: a param may choose only a Connection the DAG is allowed to use
        # (core.conn_policy), so the first task refuses a foreign signing key before any side effect.
        "pre_execute": check_run_connections,
    }
    if record_success:
        args["on_success_callback"] = on_success(system)
    args.update(overrides)
    return args
