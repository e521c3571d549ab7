"""
### Alert drill

Raises one failure of the chosen class so operators can check the whole error path end to end:
classification, retry policy, the `error_events` row and the alerts of every configured notifier.

* `transient` retries with exponential backoff, then fails; `permanent`, `data` and `security`
  fail on the first try without retrying.
* **Params**: `error_class`, `message`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.platform import SYSTEM


@dag(
    dag_id="platform_alert_drill",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["platform", "errors", "drill"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=2, retry_delay=timedelta(seconds=2),
                              max_retry_delay=timedelta(seconds=10), execution_timeout=timedelta(minutes=2)),
    params={
        "error_class": Param("permanent", type="string", enum=["transient", "permanent", "data", "security"],
                             description="The class of the failure to raise."),
        "message": Param("alert drill", type="string", minLength=1, maxLength=500),
    },
)
def platform_alert_drill():
    @task
    @classified(SYSTEM)
    def raise_failure(params: dict | None = None) -> None:
        from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError

        error = {"transient": TransientError, "permanent": PermanentError, "data": DataError,
                 "security": SecurityError}[params["error_class"]]
        raise error(f"{params['message']} ({params['error_class']})", system=SYSTEM, reason="drill")

    raise_failure()


platform_alert_drill()
