"""
### ML: batch scoring with the champion

Scores a stored dataset with `models:/<model_name>@champion` (resolved once to its version) and
stores one prediction per row in the warehouse table `ml_predictions`.

* **Idempotent per date**: the partition (model, dataset, score date) is deleted and re-copied in
  one transaction, so re-running a date replaces its predictions and never duplicates them. The
  stored `model_version` says which champion produced them.
* **Score date**: `score_date`, else the run's logical date, else the day the run was triggered.
  A source with `partition_column` is filtered on that date (one hive partition, one day's rows).
* **Input**: `source`, a dataset spec (`sklearn` | `parquet` | `postgres`); the model is fed the
  columns its signature names, extra columns are ignored.
* **Metrics**: `rows_scored`, `rows_replaced`, `model_version` in `ml_metrics`.

* **Params**: `model_name`, `source`, `score_date`, `batch_size`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from tributary.core.defaults import default_args
from tributary.ml.models.datasets import DEFAULT_SOURCE, SOURCE_PARAM_SCHEMA
from tributary.ml.models.operators import BatchScoreOperator

MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


@dag(
    dag_id="ml_batch_score",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "mlflow", "scoring"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args("mlflow", retries=2, retry_delay=timedelta(seconds=20),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "model_name": Param("tributary_breast_cancer", type="string", pattern=MODEL_NAME_PATTERN),
        "source": Param(DEFAULT_SOURCE, type="object", **SOURCE_PARAM_SCHEMA,
                        description="Rows to score: sklearn | parquet | postgres (docs/ml-models.md)."),
        "score_date": Param(None, type=["null", "string"], format="date",
                            description="Partition date (YYYY-MM-DD); empty: the logical date."),
        "batch_size": Param(10000, type="integer", minimum=100, maximum=1_000_000,
                            description="Rows read, scored and copied at a time."),
    },
)
def ml_batch_score():
    BatchScoreOperator(
        task_id="score",
        model_name="{{ params.model_name }}",
        source="{{ params.source }}",
        score_date="{{ params.score_date }}",
        batch_size="{{ params.batch_size }}",
    )


ml_batch_score()
