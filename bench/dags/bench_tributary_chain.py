"""
### Benchmark: three-step chain built with Tributary's framework

`default_args("bench")` (retries with backoff, failure/retry/success callbacks that record an event
in the warehouse), `@task` functions wrapped with `classified("bench")`, typed params. Each step
passes a small number along through XCom. Compared with `bench_plain_chain` by
`bench/bench_trigger_latency.py`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified


@dag(
    dag_id="bench_tributary_chain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["bench"],
    doc_md=__doc__,
    default_args=default_args("bench"),
    params={"start": Param(1, type="integer", minimum=0, maximum=1000, description="First number.")},
)
def bench_tributary_chain():
    @task
    @classified("bench")
    def first(params: dict | None = None) -> int:
        return int(params["start"]) + 1

    @task
    @classified("bench")
    def second(value: int) -> int:
        return value * 2

    @task
    @classified("bench")
    def third(value: int) -> int:
        return value + 3

    third(second(first()))


bench_tributary_chain()
