"""
### Integration health

Tests every configured integration Connection, one mapped task per Connection, and reports a
table of results (task log, `integration_health` table in the warehouse, XCom of `report`).

* **Discovery**: all Connections listed by Airflow's REST API (through `tributary_airflow_api`) and
  `AIRFLOW_CONN_*` variables whose type has a testable hook. A new Connection is picked up on the
  next run; `{"health_check": false}` in its extra opts it out.
* **Failures** are classified (transient ones retry with backoff) and alerted through the
  configured notifiers; the run fails when any Connection is unhealthy.
* **Params**: `connections` restricts the run to the listed Connection ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified, raise_classified
from tributary.platform import SYSTEM


@dag(
    dag_id="integration_health",
    schedule="*/30 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["platform", "health"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=2, retry_delay=timedelta(seconds=5),
                              max_retry_delay=timedelta(seconds=30),
                              execution_timeout=timedelta(minutes=5)),
    params={
        "connections": Param([], type="array", items={"type": "string", "minLength": 1}, uniqueItems=True,
                             description="Only test these Connection ids (empty: all discovered)."),
    },
)
def integration_health():
    @task
    @classified(SYSTEM)
    def discover_connections(params: dict | None = None) -> list[dict[str, str]]:
        from tributary.platform.health import discover, restrict

        return restrict(discover(), params["connections"])

    @task(map_index_template="{{ target['conn_id'] }}")
    def check_connection(target: dict[str, str]) -> dict:
        from tributary.platform.health import check_connection as check

        result, error = check(target["conn_id"], target["conn_type"])
        get_current_context()["ti"].xcom_push(key="health_result", value=result)
        if error is not None:
            raise_classified(error, target["conn_type"])
        return result

    @task(trigger_rule="all_done")
    @classified(SYSTEM)
    def report() -> dict:
        from tributary.platform.health import publish_report, raise_if_unhealthy

        ti = get_current_context()["ti"]
        results = ti.xcom_pull(task_ids="check_connection", key="health_result")
        summary = publish_report(ti.run_id, list(results or []))
        ti.xcom_push(key="summary", value=summary)  # readable over REST even when the run fails
        raise_if_unhealthy(summary)
        return summary

    checks = check_connection.expand(target=discover_connections())
    checks >> report()


integration_health()
