"""
### Benchmark: the same three steps as plain PythonOperators

No Tributary code: `retries=2`, no callbacks, no classification. The baseline for
`bench_tributary_chain` in `bench/bench_trigger_latency.py`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def first(params):
    return int(params.get("start", 1)) + 1


def second(ti):
    return ti.xcom_pull(task_ids="first") * 2


def third(ti):
    return ti.xcom_pull(task_ids="second") + 3


with DAG(
    dag_id="bench_plain_chain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["bench"],
    doc_md=__doc__,
    default_args={"retries": 2},
    params={"start": 1},
):
    (PythonOperator(task_id="first", python_callable=first)
     >> PythonOperator(task_id="second", python_callable=second)
     >> PythonOperator(task_id="third", python_callable=third))
