"""Operators of the pipeline steps: collect, validate, process, store, analyze.

Each operator is thin: the work is in the step's module (``sources``, ``validation``,
``processing``, ``storage``, ``analysis``). What the operators add is the Airflow side:

* **errors** are classified once with ``tributary.core.failfast.raise_classified`` (system ``ml``):
  transient ones retry with backoff, data/permanent ones fail at once and alert;
* **metrics** per task in the warehouse table ``ml_metrics``: ``rows_in``, ``rows_out``,
  ``duration_s`` always, ``rows_quarantined`` and ``dq_score`` from validate, and step-specific
  extras (duplicates, inserted/updated/deleted, max PSI);
* **lineage**: ``get_openlineage_facets_on_complete`` returns the step's input and output datasets,
  so OpenLineage shows source -> staging -> quarantine/dataset/table;
* **manifests**: each step returns a small dict (paths, counts) that the next step takes as
  ``manifest=<upstream>.output``; rows never go through XCom.

``{{ partition }}`` (YYYY-MM-DD: the ``partition_date`` param, else the logical date, else the day
the run was created) is available in every templated field, also for runs without a logical date.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from tributary.ml import SYSTEM
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)


def resolve_partition(context: Mapping[str, Any], override: str | None = None) -> str:
    """The partition (YYYY-MM-DD) a run works on: ``override``, the ``partition_date`` param, the logical
    date, or the day the run was created (runs triggered without a logical date)."""
    from tributary.core.errors import DataError

    chosen = override or (context.get("params") or {}).get("partition_date")
    if chosen:
        try:
            return date.fromisoformat(str(chosen)[:10]).isoformat()
        except ValueError as exc:
            raise DataError(f"partition_date {chosen!r} is not a YYYY-MM-DD date", system=SYSTEM,
                            reason="bad_param") from exc
    moment = context.get("logical_date")
    if moment is None and context.get("dag_run") is not None:
        moment = getattr(context["dag_run"], "run_after", None)
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%d")


class PipelineStepOperator(BaseOperator):
    """Base of the step operators: classification, metrics and lineage around ``run()``.

    :param spec: the pipeline spec (``PipelineSpec.as_dict()``)
    :param warehouse_conn_id: Postgres Connection of the warehouse (quarantine, metrics, tables)
    """

    step: ClassVar[str] = ""
    ui_color = "#e8f1fb"

    def __init__(self, *, spec: Mapping[str, Any], warehouse_conn_id: str = WAREHOUSE_CONN_ID,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = dict(spec)
        self.warehouse_conn_id = warehouse_conn_id
        self.lineage_inputs: list[dict[str, str]] = []
        self.lineage_outputs: list[dict[str, str]] = []
        self.metrics: dict[str, float] = {}
        self.metrics_partition = ""

    @property
    def pipeline(self) -> str:
        return str(self.spec["name"])

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        try:
            context["partition"] = resolve_partition(context, None)
        except Exception:  # a bad partition_date: execute() raises it, classified, with the step's context
            context["partition"] = ""
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Any) -> Any:
        from tributary.core.failfast import raise_classified

        started = time.monotonic()
        self.lineage_inputs, self.lineage_outputs, self.metrics = [], [], {}
        try:
            return self.run(context)
        except Exception as exc:
            raise_classified(exc, SYSTEM)
        finally:
            self.metrics["duration_s"] = round(time.monotonic() - started, 3)
            self._record_metrics(context)

    def run(self, context: Any) -> Any:
        raise NotImplementedError

    def _record_metrics(self, context: Any) -> None:
        if len(self.metrics) <= 1:  # nothing but the duration: the step failed before doing anything
            return
        from tributary.ml.metrics import mirror_to_mlflow, record_task_metrics

        tags = {"pipeline": self.pipeline, "step": self.step, "partition": self.metrics_partition}
        try:
            record_task_metrics(context, self.metrics, tags=tags, warehouse_conn_id=self.warehouse_conn_id)
        except Exception as exc:  # metrics must not hide the step's own outcome
            log.warning("could not record metrics %s: %s", self.metrics, exc)
        try:
            mirror_to_mlflow(context, self.metrics, experiment=f"pipeline_{self.pipeline}", tags=tags)
        except Exception as exc:  # the warehouse copy above is the record; MLflow is a view on it
            log.warning("could not mirror metrics to MLflow: %s", exc)

    def progress(self, message: str) -> None:
        self.log.info("%s: %s", self.pipeline, message)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input and output datasets of this step (OpenLineage provider)."""
        from tributary.ml.pipeline.lineage import to_operator_lineage

        return to_operator_lineage(self.lineage_inputs, self.lineage_outputs)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)

    def stage_ref(self, stage: str) -> dict[str, str]:
        """Lineage name of a staging step; stable across runs (the run folders live under it)."""
        from tributary.ml.pipeline.assets import work_root
        from tributary.ml.pipeline.lineage import file_ref

        return file_ref(work_root(self.pipeline) / stage)


class CollectOperator(PipelineStepOperator):
    """Read the pipeline's source into the run's staging file ``raw.parquet``, in bounded batches.

    :param source: the spec's ``source`` block (templated: ``{{ partition }}``, ``{{ ds }}``, params)
    :param partition_date: optional YYYY-MM-DD overriding the logical date (templated)
    :param batch_rows: rows per batch (default: the spec's ``processing.batch_rows``)
    """

    step = "collect"
    template_fields: Sequence[str] = ("source", "partition_date")
    template_fields_renderers = {"source": "json"}

    def __init__(self, *, source: Mapping[str, Any] | None = None, partition_date: str | None = None,
                 batch_rows: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = dict(source if source is not None else self.spec["source"])
        self.partition_date = partition_date
        self.batch_rows = batch_rows

    def run(self, context: Any) -> dict[str, Any]:
        import pyarrow.compute as pc

        from tributary.ml.pipeline.assets import work_dir, work_root
        from tributary.ml.pipeline.sources import ERROR, open_source
        from tributary.ml.pipeline.staging import StageWriter, clean_old_runs

        partition = resolve_partition(context, self.partition_date or None)
        self.metrics_partition = partition
        run_id = context["run_id"]
        folder = work_dir(self.pipeline, partition, run_id)
        shutil.rmtree(folder, ignore_errors=True)  # a retry starts from scratch
        folder.mkdir(parents=True)
        removed = clean_old_runs(work_root(self.pipeline))
        if removed:
            self.progress(f"removed {removed} staging folder(s) of old runs")
        batch_rows = int(self.batch_rows or self.spec["processing"]["batch_rows"])
        interval_start, interval_end = context.get("data_interval_start"), context.get("data_interval_end")
        bind = {"partition": partition, "ds": context.get("ds") or partition, "run_id": run_id,
                "data_interval_start": interval_start, "data_interval_end": interval_end}
        source = open_source(self.source, self.spec["columns"], batch_rows, bind)
        self.progress(f"collecting {source.describe()} for partition {partition}")
        parse_errors = 0
        raw_path = folder / "raw.parquet"
        with StageWriter(raw_path, source.schema) as writer:
            for batch in source.batches():
                writer.write(batch)
                parse_errors += batch.num_rows - pc.sum(pc.is_null(batch.column(ERROR))).as_py()
                if writer.batches % 10 == 0:
                    self.progress(f"collect: {writer.batches} batches, {writer.rows:,} rows")
        self.lineage_inputs = source.inputs()
        self.lineage_outputs = [self.stage_ref("raw")]
        self.metrics.update(rows_in=writer.rows, rows_out=writer.rows, batches=writer.batches,
                            parse_errors=parse_errors)
        self.progress(f"collected {writer.rows:,} rows in {writer.batches} batches ({parse_errors} unparsable)")
        return {"pipeline": self.pipeline, "partition": partition, "run_id": run_id, "work_dir": str(folder),
                "raw": str(raw_path), "rows": writer.rows, "batches": writer.batches, "source": source.describe(),
                "inputs": self.lineage_inputs}


class ValidateOperator(PipelineStepOperator):
    """Type and validate every batch with the spec's Great Expectations suite; quarantine failing rows.

    Good rows go to ``validated.parquet``; rejected rows to the ``quarantine`` table (source
    ``ml_pipeline_<name>``, partition = the run's partition, key = the record's source position)
    with every reason. A batch whose rejected share passes ``max_failure_rate`` fails the task as
    a data error (no retry, alert). The HTML/JSON report path is logged either way.

    :param manifest: the collect step's result (``collect.output``)
    :param max_failure_rate: per-batch threshold, 0..1 (templated, e.g. ``{{ params.max_failure_rate }}``)
    """

    step = "validate"
    template_fields: Sequence[str] = ("manifest", "max_failure_rate")

    def __init__(self, *, manifest: Any, max_failure_rate: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.max_failure_rate = max_failure_rate

    def run(self, context: Any) -> dict[str, Any]:
        from tributary.ml.pipeline.lineage import postgres_ref
        from tributary.ml.pipeline.reporting import report_dir
        from tributary.ml.pipeline.staging import require
        from tributary.ml.pipeline.validation import ValidationResult, validate_stage, write_report
        from tributary.storage.quarantine import quarantine
        from tributary.storage.warehouse import WarehouseHook

        manifest = dict(self.manifest)
        partition = self.metrics_partition = manifest["partition"]
        raw = require(manifest["raw"], self.step)
        rate = self.max_failure_rate
        rate = float(rate) if rate not in (None, "", "None") else float(self.spec["validation"]["max_failure_rate"])
        source = f"ml_pipeline_{self.pipeline}"
        ti = context["ti"]
        validated = Path(manifest["work_dir"]) / "validated.parquet"
        self.lineage_inputs = [self.stage_ref("raw")]
        self.lineage_outputs = [self.stage_ref("validated"), postgres_ref(self.warehouse_conn_id, "quarantine")]

        result = ValidationResult()
        with WarehouseHook(self.warehouse_conn_id).session() as conn:
            with conn.cursor() as cur:  # a re-run replaces what earlier runs of this partition set aside
                cur.execute("DELETE FROM quarantine WHERE source = %s AND partition_key = %s", (source, partition))
            conn.commit()

            def sink(rejected: list[Any]) -> int:
                return quarantine(conn, source, rejected, partition=partition, dag_id=ti.dag_id, run_id=ti.run_id,
                                  task_id=ti.task_id)

            try:
                validate_stage(raw, validated, self.spec, max_failure_rate=rate, quarantine=sink,
                               source_label=f"{source} partition {partition}", result=result, progress=self.progress)
            finally:
                meta = {"pipeline": self.pipeline, "partition": partition, "run_id": context["run_id"],
                        "suite": self.spec["suite"].get("path"), "max_failure_rate": rate, "source": source}
                write_report(result, report_dir(self.pipeline, partition, context["run_id"]), meta)
                self.log.info("validation report: file://%s (rows %d, passed %d, quarantined %d, dq_score %.4f)",
                              result.report_html, result.rows_in, result.rows_out, result.rows_quarantined,
                              result.dq_score)
                self.metrics.update(rows_in=result.rows_in, rows_out=result.rows_out,
                                    rows_quarantined=result.rows_quarantined, dq_score=round(result.dq_score, 6),
                                    batches=result.batches)
        return {**manifest, "validated": str(validated), "rows": result.rows_out,
                "rows_quarantined": result.rows_quarantined, "dq_score": result.dq_score,
                "validation_report": result.report_html}


class ProcessOperator(PipelineStepOperator):
    """Dedupe on the record key, fill missing values and add features, within ``batch_rows`` rows of memory.

    :param manifest: the validate step's result (``validate.output``)
    """

    step = "process"
    template_fields: Sequence[str] = ("manifest",)

    def __init__(self, *, manifest: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest

    def run(self, context: Any) -> dict[str, Any]:
        from tributary.ml.pipeline.processing import process_stage
        from tributary.ml.pipeline.staging import require

        manifest = dict(self.manifest)
        self.metrics_partition = manifest["partition"]
        validated = require(manifest["validated"], self.step)
        processed = Path(manifest["work_dir"]) / "processed.parquet"
        self.lineage_inputs = [self.stage_ref("validated")]
        self.lineage_outputs = [self.stage_ref("processed")]
        result = process_stage(validated, processed, self.spec, progress=self.progress)
        self.metrics.update(rows_in=result.rows_in, rows_out=result.rows_out, duplicates=result.duplicates,
                            dropped_missing=result.dropped_missing, buckets=result.buckets)
        self.progress(f"processed {result.rows_in:,} -> {result.rows_out:,} rows ({result.duplicates} duplicates, "
                      f"{result.dropped_missing} dropped for missing values, {result.buckets} bucket(s))")
        return {**manifest, "processed": str(processed), "rows": result.rows_out, "process": result.as_dict()}


class StoreOperator(PipelineStepOperator):
    """Store the processed rows: replace the Parquet partition and upsert the warehouse table.

    Emits the dataset Assets given as ``outlets`` with ``extra = {"partition", "rows", ...}``, then
    removes the run's staging folder.

    :param manifest: the process step's result (``process.output``)
    """

    step = "store"
    template_fields: Sequence[str] = ("manifest",)

    def __init__(self, *, manifest: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest

    def run(self, context: Any) -> dict[str, Any]:
        from tributary.ml.pipeline.assets import dataset_dir, parquet_asset, table_asset
        from tributary.ml.pipeline.lineage import file_ref, postgres_ref
        from tributary.ml.pipeline.staging import require
        from tributary.ml.pipeline.storage import check_table, load_table, replace_partition
        from tributary.storage.warehouse import WarehouseHook

        manifest = dict(self.manifest)
        partition = self.metrics_partition = manifest["partition"]
        processed = require(manifest["processed"], self.step)
        storage = self.spec["storage"]
        self.lineage_inputs = [self.stage_ref("processed")]
        outcome: dict[str, Any] = {"pipeline": self.pipeline, "partition": partition}
        rows = manifest["rows"]
        if storage["postgres"]:
            with WarehouseHook(self.warehouse_conn_id).session() as conn:
                check_table(conn, self.spec)
                load = load_table(conn, self.spec, processed, partition, context["run_id"], progress=self.progress)
            self.lineage_outputs.append(postgres_ref(self.warehouse_conn_id, storage["table"]))
            self.metrics.update(inserted=load.inserted, updated=load.updated, deleted=load.deleted)
            outcome["table"] = {"name": storage["table"], **load.as_dict()}
            self.progress(f"table {storage['table']}: {load.inserted} inserted, {load.updated} updated, "
                          f"{load.deleted} deleted for ds={partition}")
            self._emit(context, table_asset(storage["table"]), {"partition": partition, "rows": load.rows,
                                                                 "table": storage["table"]})
        if storage["parquet"]:
            folder = replace_partition(processed, self.pipeline, partition)
            self.lineage_outputs.append(file_ref(dataset_dir(self.pipeline)))
            outcome["parquet"] = str(folder)
            self.progress(f"parquet partition {folder} replaced ({rows:,} rows)")
            self._emit(context, parquet_asset(self.pipeline), {"partition": partition, "rows": rows,
                                                                "path": str(folder)})
        self.metrics.update(rows_in=rows, rows_out=rows)
        shutil.rmtree(manifest["work_dir"], ignore_errors=True)
        return outcome

    def _emit(self, context: Any, asset: Any, extra: dict[str, Any]) -> None:
        if any(getattr(o, "uri", None) == asset.uri for o in self.outlets):
            context["outlet_events"][asset].extra = extra


class AnalyzeOperator(PipelineStepOperator):
    """Summary statistics and drift (PSI, KS) of a stored partition against the previous one.

    Which partition: ``partition_date`` when given; else those named by the triggering Asset events
    (an Asset-scheduled run); else the latest stored partition. Writes ``analysis.html`` with PNG
    charts and ``analysis.json`` to the run's report folder; logs a warning for each drifted column.

    :param partition_date: optional YYYY-MM-DD (templated)
    """

    step = "analyze"
    template_fields: Sequence[str] = ("partition_date",)

    def __init__(self, *, partition_date: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition_date = partition_date

    def partitions_to_analyze(self, context: Any) -> list[str]:
        from tributary.ml.pipeline.storage import partitions

        if self.partition_date:
            return [resolve_partition(context, self.partition_date)]
        events = context.get("triggering_asset_events") or {}
        named = sorted({str(e.extra["partition"]) for queue in events.values() for e in queue
                        if isinstance(getattr(e, "extra", None), Mapping) and e.extra.get("partition")})
        if named:
            return named
        stored = partitions(self.pipeline)
        if not stored:
            from tributary.core.errors import PermanentError

            raise PermanentError(f"dataset {self.pipeline} has no stored partition to analyze", system=SYSTEM,
                                 reason="partition_missing")
        return stored[-1:]

    def run(self, context: Any) -> list[dict[str, Any]]:
        from tributary.ml.pipeline.analysis import analyze
        from tributary.ml.pipeline.assets import dataset_dir
        from tributary.ml.pipeline.lineage import file_ref
        from tributary.ml.pipeline.reporting import report_dir
        from tributary.ml.pipeline.storage import partition_file, previous_partition
        from tributary.platform.reports import reports_dir

        summaries = []
        for partition in self.partitions_to_analyze(context):
            self.metrics_partition = partition
            previous = previous_partition(self.pipeline, partition)
            folder = report_dir(self.pipeline, partition, context["run_id"])
            summary = analyze(self.spec, partition_file(self.pipeline, partition), partition,
                              partition_file(self.pipeline, previous) if previous else None, previous, folder)
            self.log.info("analysis report: file://%s (%d rows, previous partition %s, max PSI %s)",
                          summary["report_html"], summary["rows"], previous or "none", summary["max_psi"])
            for name in summary["drifted"]:
                self.log.warning("%s: drift in %s, PSI %.3f > %s", self.pipeline, name,
                                 summary["drift"][name]["psi"], summary["psi_alert"])
            summaries.append({k: summary[k] for k in ("partition", "previous_partition", "rows", "max_psi",
                                                      "drifted", "report_html", "report_json")})
        self.lineage_inputs = [file_ref(dataset_dir(self.pipeline))]
        self.lineage_outputs = [file_ref(reports_dir() / "ml_pipelines" / self.pipeline)]
        psi_values = [s["max_psi"] for s in summaries if s["max_psi"] is not None]
        self.metrics.update(rows_in=sum(s["rows"] for s in summaries), rows_out=sum(s["rows"] for s in summaries),
                            partitions=len(summaries), drifted_features=sum(len(s["drifted"]) for s in summaries))
        if psi_values:
            self.metrics["max_psi"] = round(max(psi_values), 6)
        return summaries
