"""
### Error analysis

Daily (and on demand) report of the outcome events that every Tributary task records through its
callbacks: failures by class (transient / permanent / data / security), system and DAG, with
spikes flagged against the trailing daily average.

* **Output**: `<TRIBUTARY_REPORTS_DIR>/error_analysis/<day>/error_analysis.md` and `failures.png`
  (default `reports/` in the project), the summary in the task log and as the `analyze` XCom.
* **Params**: `day` (YYYY-MM-DD, default: the run's logical date or today), `window_days`,
  `spike_factor`, `min_failures`.
* Events that callbacks could only spool (warehouse down) are written first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.platform import SYSTEM
from tributary.storage import SYSTEM as WAREHOUSE_SYSTEM


@dag(
    dag_id="error_analysis",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["platform", "errors"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=2, execution_timeout=timedelta(minutes=10),
                              record_success=False),
    params={
        "day": Param(None, type=["null", "string"], format="date",
                     description="Report day (YYYY-MM-DD); empty: the logical date, or today."),
        "window_days": Param(7, type="integer", minimum=1, maximum=90,
                             description="Trailing days the spike baseline averages over."),
        "spike_factor": Param(2.0, type="number", exclusiveMinimum=1,
                              description="A day is a spike above this multiple of the baseline."),
        "min_failures": Param(3, type="integer", minimum=1,
                              description="Fewer failures than this are never a spike."),
    },
)
def error_analysis():
    @task
    @classified(WAREHOUSE_SYSTEM)
    def flush_spooled_events() -> int:
        from tributary.core.events import EventStore

        return EventStore().flush_spool()

    @task
    @classified(WAREHOUSE_SYSTEM)
    def analyze(params: dict | None = None) -> dict:
        from tributary.platform.reports import run_error_analysis

        return run_error_analysis(params, get_current_context().get("logical_date"))

    flush_spooled_events() >> analyze()


error_analysis()
