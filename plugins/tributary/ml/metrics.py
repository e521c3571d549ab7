"""Per-task ML metrics: one table (``ml_metrics``) shared by the pipelines and the model lifecycle.

``record_metrics`` upserts by (dag, run, task, map index, metric), so a retried task replaces its
numbers instead of adding a second set. MLflow gets model metrics through its own API; this table
is what the warehouse (and dashboards on it) query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def record_metrics(
    conn: Any,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    metrics: Mapping[str, float | int],
    map_index: int = -1,
    tags: Mapping[str, Any] | None = None,
) -> int:
    """Upsert ``metrics`` for one task try; non-finite values are refused. Commits."""
    rows = []
    for name, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"metric {name} is not a finite number: {value!r}")
        rows.append((dag_id, run_id, task_id, map_index, name, number, json.dumps(dict(tags or {}))))
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ml_metrics (dag_id, run_id, task_id, map_index, metric, value, tags)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (dag_id, run_id, task_id, map_index, metric)"
            " DO UPDATE SET value = EXCLUDED.value, tags = EXCLUDED.tags, recorded_at = now()",
            rows,
        )
    conn.commit()
    return len(rows)


def record_task_metrics(context: Mapping[str, Any], metrics: Mapping[str, float | int],
                        tags: Mapping[str, Any] | None = None,
                        warehouse_conn_id: str = "tributary_warehouse") -> int:
    """``record_metrics`` for the running task, from its Airflow context."""
    from tributary.storage.warehouse import connect, ensure_schema

    ti = context["ti"]
    conn = connect(warehouse_conn_id)
    try:
        ensure_schema(conn)
        map_index = getattr(ti, "map_index", None)
        return record_metrics(conn, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                              map_index=-1 if map_index is None else map_index, metrics=metrics, tags=tags)
    finally:
        conn.close()
