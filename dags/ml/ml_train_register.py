"""
### ML: train and register

Trains a scikit-learn pipeline (impute + scale / one-hot, then the estimator) on a labelled dataset,
one **mapped task per hyperparameter grid point**, tracks every point in MLflow, gates the best one
and registers it in the MLflow Model Registry.

1. `open_training_run` creates the DAG run's parent MLflow run (experiment = `model_name`).
2. `expand_grid` turns `grid` into one point per combination; `train` is mapped over them: fit on
   the training part, stratified cross-validation, holdout metrics, model with signature, input
   example and pinned `pip_requirements`, `metrics.json` and `confusion_matrix.png`.
3. `gate_and_register` picks the best mean cross-validation `gate_metric` and decides:
   * **rejected**: a `thresholds` entry failed, or it did not beat the champion by more than
     `min_improvement` on the same holdout: recorded (parent run, `ml_metrics`, XCom), not registered;
     the run still succeeds;
   * **champion**: no champion exists yet (first model) and every threshold passed;
   * **challenger**: thresholds passed and it beat the champion; `ml_deploy` promotes it.

4. `announce_champion` / `announce_challenger` emit the Assets `ml_model_champion` (a first model:
   `ml_batch_score` runs) or `ml_model_challenger` (`ml_deploy` runs); the other one skips.

**Scheduled on the Asset** of the table `ml_dataset_breast_cancer`: every stored date of
`ml_pipeline_breast_cancer` trains on that date's partition. `resolve_source` pins the source to one
partition: `source.filters`, else the partition of the triggering event, else the newest stored.

The holdout is fixed per row (a salted hash of the row key), so the champion and the candidate are
always scored on the same rows. Data comes from `source` (default: the pipeline's table; also
scikit-learn's bundled data with `{"kind": "sklearn", "dataset": "breast_cancer"}` and `parquet`
folders). Aliases, not stages. See docs/ml-models.md.

* **Params**: `model_name`, `source`, `estimator`, `grid`, `max_grid_points`, `cv_folds`,
  `gate_metric`, `thresholds`, `min_improvement`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.ml import SYSTEM
from tributary.ml.models.assets import challenger_asset, champion_asset
from tributary.ml.models.datasets import PIPELINE_SOURCE, SOURCE_PARAM_SCHEMA
from tributary.ml.models.evaluation import METRICS
from tributary.ml.models.operators import GateRegisterOperator, TrainCandidateOperator, classified_mlflow
from tributary.ml.models.training import ESTIMATORS
from tributary.ml.pipeline.assets import table_asset

MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


@dag(
    dag_id="ml_train_register",
    schedule=table_asset("ml_dataset_breast_cancer"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "mlflow", "training"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=2, retry_delay=timedelta(seconds=20),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "model_name": Param("tributary_breast_cancer", type="string", pattern=MODEL_NAME_PATTERN,
                            description="Registered model and MLflow experiment name."),
        "source": Param(PIPELINE_SOURCE, type="object", **SOURCE_PARAM_SCHEMA,
                        description="Labelled training data: postgres | parquet | sklearn (docs/ml-models.md)."),
        "estimator": Param("logistic_regression", type="string", enum=list(ESTIMATORS)),
        "grid": Param({"C": [0.1, 1.0, 10.0]}, type="object",
                      additionalProperties={"type": "array", "minItems": 1, "maxItems": 20,
                                            "items": {"type": ["number", "string", "boolean", "null"]}},
                      description="Estimator hyperparameter -> list of values; one mapped task per combination."),
        "max_grid_points": Param(12, type="integer", minimum=1, maximum=100,
                                 description="Refuse grids with more combinations than this."),
        "cv_folds": Param(3, type="integer", minimum=2, maximum=10),
        "gate_metric": Param("f1_macro", type="string", enum=list(METRICS),
                             description="Ranks the grid points and decides 'beats the champion'."),
        "thresholds": Param({"accuracy": 0.9, "f1_macro": 0.9}, type="object", propertyNames={"enum": list(METRICS)},
                            additionalProperties={"type": "number", "minimum": 0, "maximum": 1},
                            description="Minimum holdout value per metric."),
        "min_improvement": Param(0.0, type="number", minimum=0, maximum=1,
                                 description="The candidate must beat the champion by more than this."),
    },
)
def ml_train_register():
    @task
    @classified_mlflow
    def resolve_source(params: dict | None = None) -> dict:
        """The source pinned to one partition, so every task of the run reads the same snapshot."""
        from tributary.ml.models.assets import triggering_partition
        from tributary.ml.models.datasets import source_from_spec

        context = get_current_context()
        source = source_from_spec(params["source"]).pinned(triggering_partition(context))
        print(f"training data: {source.name} {dict(source.filters) or ''}")
        return source.to_spec()

    @task
    @classified_mlflow
    def open_training_run(source: dict, params: dict | None = None) -> str:
        from tributary.ml.models.datasets import source_from_spec
        from tributary.ml.models.registry import connect
        from tributary.ml.models.training import open_training_run as open_run

        hook, client = connect()
        return open_run(client, hook.ensure_experiment(params["model_name"]), get_current_context()["run_id"],
                        model_name=params["model_name"], source=source_from_spec(source),
                        estimator=params["estimator"], grid=params["grid"])

    @task
    @classified_mlflow
    def expand_grid(params: dict | None = None) -> list[dict]:
        from tributary.ml.models.training import expand_grid as expand

        return expand(params["estimator"], params["grid"], params["max_grid_points"])

    @task(outlets=[champion_asset()])
    def announce_champion(gate: dict, source: dict, params: dict | None = None) -> dict:
        """A first model became champion: ml_batch_score scores with it (skips otherwise)."""
        from tributary.ml.models.assets import announce_alias

        outcome = gate["decision"]["outcome"]
        return announce_alias(get_current_context(), "champion", model_name=params["model_name"],
                              version=gate.get("version"), changed=outcome == "champion",
                              why=f"gate outcome {outcome}", source=source)

    @task(outlets=[challenger_asset()])
    def announce_challenger(gate: dict, source: dict, params: dict | None = None) -> dict:
        """A challenger beat the champion: ml_deploy promotes it (skips otherwise)."""
        from tributary.ml.models.assets import announce_alias

        outcome = gate["decision"]["outcome"]
        return announce_alias(get_current_context(), "challenger", model_name=params["model_name"],
                              version=gate.get("version"), changed=outcome == "challenger",
                              why=f"gate outcome {outcome}", source=source)

    source = resolve_source()
    parent_run = open_training_run(source)
    candidates = TrainCandidateOperator.partial(
        task_id="train",
        model_name="{{ params.model_name }}",
        source=source,
        estimator="{{ params.estimator }}",
        cv_folds="{{ params.cv_folds }}",
        parent_run_id=parent_run,
        max_active_tis_per_dagrun=2,
        map_index_template="{{ task.estimator }} {{ task.hyperparams | tojson }}",
    ).expand(hyperparams=expand_grid())
    gate = GateRegisterOperator(
        task_id="gate_and_register",
        model_name="{{ params.model_name }}",
        source=source,
        candidates=candidates.output,
        parent_run_id=parent_run,
        gate_metric="{{ params.gate_metric }}",
        thresholds="{{ params.thresholds }}",
        min_improvement="{{ params.min_improvement }}",
    )
    announce_champion(gate.output, source)
    announce_challenger(gate.output, source)


ml_train_register()
