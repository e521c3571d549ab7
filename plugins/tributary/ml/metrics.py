"""Per-task ML metrics: one table (``ml_metrics``) shared by the pipelines and the model lifecycle.

``record_metrics`` upserts by (dag, run, task, map index, metric), so a retried task replaces its
numbers instead of adding a second set. ``mirror_to_mlflow`` also logs them to MLflow (one run per
DAG run), which is how the pipelines' numbers appear next to the models' in the MLflow UI.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from tributary.storage import WAREHOUSE_CONN_ID


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
                        warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> int:
    """``record_metrics`` for the running task, from its Airflow context."""
    from tributary.storage.warehouse import WarehouseHook

    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return record_metrics(conn, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                              map_index=-1 if map_index is None else map_index, metrics=metrics, tags=tags)


def mirror_to_mlflow(context: Mapping[str, Any], metrics: Mapping[str, float | int],
                     experiment: str, tags: Mapping[str, Any] | None = None,
                     mlflow_conn_id: str = "tributary_mlflow") -> str:
    """Log a task's metrics to MLflow: one run per Airflow DAG run in ``experiment``, metric keys
    prefixed with the task id (``store.rows_out``). Returns the MLflow run id.

    The run is found again by its ``airflow_run_id`` tag, so every task of a DAG run (and a retried
    task) writes into the same MLflow run; a metric logged twice keeps its latest value.
    """
    from tributary.ml.hook import MlflowHook

    ti = context["ti"]
    hook = MlflowHook(mlflow_conn_id)
    client = hook.get_conn()
    experiment_id = hook.ensure_experiment(experiment)
    found = client.search_runs([experiment_id], filter_string=f"tags.airflow_run_id = '{ti.run_id}'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(experiment_id, run_name=ti.run_id,
                                tags={"airflow_run_id": ti.run_id, "airflow_dag_id": ti.dag_id,
                                      **{k: str(v) for k, v in (tags or {}).items()}})
        run_id = run.info.run_id
    map_index = getattr(ti, "map_index", None)
    prefix = ti.task_id if map_index in (None, -1) else f"{ti.task_id}.{map_index}"
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{prefix}.{k}", float(v), stamp, 0) for k, v in metrics.items()])
    return run_id
