"""
### ML: deploy the champion

Promotes a challenger that beat the champion, serves the champion with MLflow's scoring server,
smoke-tests it with real HTTP requests and rolls back when the smoke test fails.

1. `promote`: if a `challenger` exists and still beats the current `champion` on the holdout, move
   `previous-champion` to the old champion, `champion` to the challenger, and drop `challenger`.
   Nothing to promote (or a challenger that lost) is a normal outcome.
2. `serve` (setup): `mlflow models serve --env-manager local` for the champion's version on
   127.0.0.1:`port`; a running endpoint of the same version is reused.
3. `smoke_test`: `/ping`, `/health`, one batch and single-row requests at `/invocations` (MLflow JSON
   `dataframe_split`) with holdout rows: one prediction per row, only known labels, p95 latency
   within `latency_budget_ms`. **On failure** the promotion made by this run is rolled back
   (`champion` -> previous version), the endpoint is stopped and the task fails (permanent error,
   alert). A champion promoted earlier is not rolled back by a later run.
4. `announce_champion`: after a promotion that passed its smoke test, emits the Asset
   `ml_model_champion` (`ml_batch_score` re-scores with the new champion); skips otherwise.
5. `stop_endpoint` (teardown, runs whatever happened): stops the endpoint unless `keep_running`.

**Scheduled on the Asset** `ml_model_challenger`, which `ml_train_register` emits when a new
version beats the champion; trigger it by hand (or over REST) to re-check or re-serve.

Every step is idempotent: a retry finds its promotion, its endpoint and its rollback.

* **Params**: `model_name`, `port`, `keep_running`, `smoke_rows`, `latency_budget_ms`, `startup_timeout`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.ml import SYSTEM
from tributary.ml.models.assets import challenger_asset, champion_asset
from tributary.ml.models.operators import (
    PromoteChallengerOperator,
    SmokeTestOperator,
    StartEndpointOperator,
    StopEndpointOperator,
)

MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


@dag(
    dag_id="ml_deploy",
    schedule=challenger_asset(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "mlflow", "deploy"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=2, retry_delay=timedelta(seconds=15),
                              max_retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=15)),
    params={
        "model_name": Param("tributary_breast_cancer", type="string", pattern=MODEL_NAME_PATTERN),
        "port": Param(5001, type="integer", minimum=1024, maximum=65535,
                      description="Port of the scoring server on 127.0.0.1."),
        "keep_running": Param(False, type="boolean",
                              description="Leave the endpoint running after a successful smoke test."),
        "smoke_rows": Param(20, type="integer", minimum=1, maximum=1000,
                            description="Holdout rows sent in the smoke test's batch request."),
        "latency_budget_ms": Param(500.0, type="number", exclusiveMinimum=0,
                                   description="Maximum 95th-percentile latency of the smoke test's requests."),
        "startup_timeout": Param(180, type="integer", minimum=10, maximum=1800,
                                 description="Seconds the scoring server may take to answer /ping."),
    },
)
def ml_deploy():
    promote = PromoteChallengerOperator(task_id="promote", model_name="{{ params.model_name }}")
    serve = StartEndpointOperator(
        task_id="serve",
        model_name="{{ params.model_name }}",
        port="{{ params.port }}",
        promotion=promote.output,
        startup_timeout="{{ params.startup_timeout }}",
    )
    smoke = SmokeTestOperator(
        task_id="smoke_test",
        model_name="{{ params.model_name }}",
        endpoint=serve.output,
        promotion=promote.output,
        rows="{{ params.smoke_rows }}",
        latency_budget_ms="{{ params.latency_budget_ms }}",
    )

    @task(outlets=[champion_asset()])
    def announce_champion(promotion: dict, params: dict | None = None) -> dict:
        """The promoted champion passed its smoke test: ml_batch_score scores with it (skips otherwise)."""
        from tributary.ml.models.assets import announce_alias

        return announce_alias(get_current_context(), "champion", model_name=params["model_name"],
                              version=promotion.get("champion"), changed=bool(promotion.get("promoted")),
                              why=promotion.get("reason") or "nothing promoted")

    stop = StopEndpointOperator(
        task_id="stop_endpoint",
        model_name="{{ params.model_name }}",
        keep_running="{{ params.keep_running }}",
    )
    announced = announce_champion(promote.output)
    promote >> serve >> smoke >> announced >> stop.as_teardown(setups=serve)


ml_deploy()
