"""
### ML: batch scoring with the champion

Scores a stored dataset with `models:/<model_name>@champion` (resolved once to its version) and
stores one prediction per row in the warehouse table `ml_predictions`.

* **Idempotent per date**: the partition (model, dataset, score date) is deleted and re-copied in
  one transaction, so re-running a date replaces its predictions and never duplicates them. The
  stored `model_version` says which champion produced them.
* **Scheduled on Assets**: the table `ml_dataset_breast_cancer` (a pipeline run stored a date: score
  it) or `ml_model_champion` (a new champion: re-score the newest date). An Asset-triggered run
  before any champion exists skips; a manual run without a champion fails (permanent).
* **Score date**: `score_date`, else the partition of the triggering Asset event, else the run's
  logical date, else the newest stored partition, else the day the run was triggered. A source with
  `partition_column` is filtered on that date (one partition, one day's rows).
* **Input**: `source`, a dataset spec (`postgres` | `parquet` | `sklearn`; default: the pipeline's
  table); the model is fed the columns its signature names, extra columns are ignored.
* **Metrics**: `rows_scored`, `rows_replaced`, `model_version` in `ml_metrics`.

* **Params**: `model_name`, `source`, `score_date`, `batch_size`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from tributary.core.defaults import default_args
from tributary.ml import SYSTEM
from tributary.ml.models.assets import champion_asset
from tributary.ml.models.datasets import PIPELINE_SOURCE, SOURCE_PARAM_SCHEMA
from tributary.ml.models.operators import BatchScoreOperator
from tributary.ml.pipeline.assets import table_asset

MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


@dag(
    dag_id="ml_batch_score",
    schedule=table_asset("ml_dataset_breast_cancer") | champion_asset(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "mlflow", "scoring"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=2, retry_delay=timedelta(seconds=20),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "model_name": Param("tributary_breast_cancer", type="string", pattern=MODEL_NAME_PATTERN),
        "source": Param(PIPELINE_SOURCE, type="object", **SOURCE_PARAM_SCHEMA,
                        description="Rows to score: postgres | parquet | sklearn (docs/ml-models.md)."),
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
