"""Build the Airflow DAGs of the pipeline specs (used by ``dags/ml/ml_pipelines.py``).

Per valid spec:

* ``ml_pipeline_<name>``: collect >> validate >> process >> store, on the spec's schedule; ``store``
  emits the dataset Assets;
* ``ml_pipeline_<name>_analysis``: analyze, scheduled on the Parquet dataset Asset, so it runs after
  every store of that dataset (also backfills and manual re-runs), and can be re-run by itself.

Broken specs never take the other pipelines down: :func:`build_dags` skips them, and
:func:`raise_for_broken_specs` (called by ``dags/ml/_pipeline_spec_errors.py``) raises one import
error naming each broken file and field. Airflow attaches an import error to the *file* that raised
and marks every DAG of that file as broken (not schedulable, not triggerable), which is why the
error is raised from a separate file and not from the one that defines the DAGs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from tributary.core.defaults import default_args
from tributary.core.errors import PermanentError
from tributary.ml import SYSTEM
from tributary.ml.pipeline.assets import parquet_asset, parquet_asset_uri, table_asset, table_asset_uri
from tributary.ml.pipeline.operators import (
    AnalyzeOperator,
    CollectOperator,
    ProcessOperator,
    StoreOperator,
    ValidateOperator,
)
from tributary.ml.pipeline.specs import PipelineSpec, PipelineSpecError, load_specs

log = logging.getLogger(__name__)


class BrokenPipelineSpecs(PermanentError):
    """One or more pipeline specs cannot become DAGs; the message lists each file and field."""


def _describe_source(spec: PipelineSpec) -> str:
    source = spec.source
    kind = source["kind"]
    if kind == "package_file":
        return f"`{source['resource']}` from the installed package `{source['package']}` ({source['format']})"
    if kind == "files":
        return f"landing files `{source['path']}` ({source['format']})"
    if kind == "http":
        paging = source.get("pagination", {}).get("type", "none")
        return f"HTTP JSON API `{source.get('url') or source.get('conn_id')}` ({paging} pagination)"
    return f"SQL on `{source.get('conn_id', 'tributary_warehouse')}`"


def _doc(spec: PipelineSpec) -> str:
    stores = []
    if spec.storage["parquet"]:
        stores.append(f"Parquet `$TRIBUTARY_DATA_DIR/datasets/{spec.name}/ds=YYYY-MM-DD/` "
                      f"(Asset `{parquet_asset_uri(spec.name)}`)")
    if spec.storage["postgres"]:
        stores.append(f"warehouse table `{spec.table}` (Asset `{table_asset_uri(spec.table)}`)")
    return f"""
### ML pipeline `{spec.name}`

{spec.description}

Generated from the spec `{Path(spec.path).name}`. Steps: **collect** {_describe_source(spec)} ->
**validate** with the Great Expectations suite `{spec.suite.get('name')}` (failing rows to the `quarantine`
table, the task fails as a data error when more than {spec.validation['max_failure_rate']:.1%} of a batch fails)
-> **process** (dedupe on the record key, missing values, {len(spec.processing['features'])} feature(s), batches
of {spec.processing['batch_rows']:,} rows) -> **store** ({' and '.join(stores)}; re-running a date replaces it).

* **Reports**: `<TRIBUTARY_REPORTS_DIR>/ml_pipelines/{spec.name}/<partition>/<run>/validation.html`
* **Quarantine**: `SELECT * FROM quarantine WHERE source = '{spec.dag_id}'`
* **Metrics**: `SELECT * FROM ml_metrics WHERE dag_id = '{spec.dag_id}'`
* **Params**: `partition_date` (YYYY-MM-DD, default: the logical date), `max_failure_rate` (0..1).
"""


def build_pipeline_dag(spec: PipelineSpec, *, register: bool = True) -> DAG:
    """``ml_pipeline_<name>``: collect >> validate >> process >> store (``register``: Airflow's auto-register)."""
    outlets = []
    if spec.storage["parquet"]:
        outlets.append(parquet_asset(spec.name))
    if spec.storage["postgres"]:
        outlets.append(table_asset(spec.table))
    args = default_args(SYSTEM, owner=spec.owner, execution_timeout=timedelta(hours=2))
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description.splitlines()[0][:200],
        schedule=spec.schedule,
        start_date=datetime.combine(spec.start_date, datetime.min.time()),
        catchup=spec.catchup,
        max_active_runs=1,
        auto_register=register,
        tags=["ml", "pipeline", spec.name, *[t for t in spec.tags if t not in ("ml", "pipeline", spec.name)]],
        doc_md=_doc(spec),
        default_args=args,
        params={
            "partition_date": Param(None, type=["null", "string"], format="date",
                                    description="Partition to (re)build, YYYY-MM-DD; empty: the logical date."),
            "max_failure_rate": Param(float(spec.validation["max_failure_rate"]), type="number", minimum=0,
                                      maximum=1, description="Largest share of a batch that may fail validation."),
        },
    ) as dag:
        common = {"spec": spec.as_dict()}
        collect = CollectOperator(task_id="collect", partition_date="{{ params.partition_date or '' }}", **common)
        validate = ValidateOperator(task_id="validate", manifest=collect.output,
                                    max_failure_rate="{{ params.max_failure_rate }}", **common)
        process = ProcessOperator(task_id="process", manifest=validate.output, **common)
        store = StoreOperator(task_id="store", manifest=process.output, outlets=outlets, **common)
        collect >> validate >> process >> store
    return dag


def build_analysis_dag(spec: PipelineSpec, *, register: bool = True) -> DAG:
    """``ml_pipeline_<name>_analysis``: analyze, scheduled on the stored Parquet dataset."""
    with DAG(
        dag_id=spec.analysis_dag_id,
        description=f"Statistics and drift of the {spec.name} dataset",
        schedule=[parquet_asset(spec.name)],
        start_date=datetime.combine(spec.start_date, datetime.min.time()),
        catchup=False,
        max_active_runs=1,
        auto_register=register,
        tags=["ml", "pipeline", "analysis", spec.name],
        doc_md=f"""
### ML pipeline `{spec.name}`: analysis

Runs whenever `{spec.dag_id}` stores a partition of the Parquet dataset (Asset
`{parquet_asset_uri(spec.name)}`), or on demand. For each new partition: summary statistics of
the numeric columns and drift against the previous partition (PSI on {spec.analysis['bins']} quantile
bins, KS), with charts.

* **Report**: `<TRIBUTARY_REPORTS_DIR>/ml_pipelines/{spec.name}/<partition>/<run>/analysis.html`
  (+ `analysis.json`, `psi.png`, `distributions.png`); the path is in the task log.
* **Drift**: a warning in the log for each column with PSI above {spec.analysis['psi_alert']};
  metrics `max_psi` and `drifted_features` in `ml_metrics`.
* **Params**: `partition_date` (YYYY-MM-DD); empty: the partitions of the triggering Asset events,
  or the latest stored partition.
""",
        default_args=default_args(SYSTEM, owner=spec.owner, execution_timeout=timedelta(hours=1)),
        params={
            "partition_date": Param(None, type=["null", "string"], format="date",
                                    description="Partition to analyze, YYYY-MM-DD; empty: the newest stored."),
        },
    ) as dag:
        AnalyzeOperator(task_id="analyze", spec=spec.as_dict(), partition_date="{{ params.partition_date or '' }}")
    return dag


def _build_all(directory: Path | None, *, register: bool) -> tuple[dict[str, DAG], list[PipelineSpecError]]:
    specs, errors = load_specs(directory)
    dags: dict[str, DAG] = {}
    for spec in specs:
        try:
            built = [build_pipeline_dag(spec, register=register)]
            if spec.analysis["enabled"] and spec.storage["parquet"]:
                built.append(build_analysis_dag(spec, register=register))
        except Exception as exc:  # a spec the checks let through but Airflow refuses: isolate it too
            errors.append(PipelineSpecError(spec.path, [f"its DAG cannot be built: {type(exc).__name__}: {exc}"]))
            continue
        dags.update((dag.dag_id, dag) for dag in built)
    return dags, errors


def build_dags(directory: Path | None = None) -> dict[str, DAG]:
    """The DAGs of every valid spec, by dag id. Broken specs are skipped (see :func:`raise_for_broken_specs`)."""
    dags, errors = _build_all(directory, register=True)
    for error in errors:
        log.warning("skipping broken pipeline spec: %s", error)
    return dags


def raise_for_broken_specs(directory: Path | None = None) -> None:
    """Raise :class:`BrokenPipelineSpecs` naming every broken spec file and field; do nothing when all are valid.

    The DAGs are built here too (without registering them), so a spec whose DAG fails to build is
    reported like a spec that fails its checks.
    """
    _, errors = _build_all(directory, register=False)
    if errors:
        lines = "\n".join(f"- {error}" for error in errors)
        raise BrokenPipelineSpecs(f"{len(errors)} broken pipeline spec(s); their DAGs are not generated, the other "
                                  f"pipelines are unaffected:\n{lines}", system=SYSTEM, reason="pipeline_spec")
