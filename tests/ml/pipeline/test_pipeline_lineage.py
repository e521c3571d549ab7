"""The step operators chained by hand: lineage datasets of every step, Asset events, idempotent re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest


def _run_chain(spec: Any, make_context: Any, source: dict[str, Any] | None = None) -> dict[str, Any]:
    from tributary.ml.pipeline.assets import parquet_asset, table_asset
    from tributary.ml.pipeline.operators import CollectOperator, ProcessOperator, StoreOperator, ValidateOperator

    data = spec.as_dict()
    dag_id = f"ml_pipeline_{spec.name}"
    collect = CollectOperator(task_id="collect", spec=data, source=source)
    validate = ValidateOperator(task_id="validate", spec=data, manifest=None)
    process = ProcessOperator(task_id="process", spec=data, manifest=None)
    store = StoreOperator(task_id="store", spec=data, manifest=None,
                          outlets=[parquet_asset(spec.name), table_asset(spec.table)])

    def run(operator: Any) -> tuple[Any, dict[str, Any]]:
        context = make_context(operator.task_id, dag_id=dag_id)
        operator.render_template_fields(context)  # what the task runner does before execute()
        return operator.execute(context), context

    validate.manifest = run(collect)[0]
    process.manifest = run(validate)[0]
    store.manifest = run(process)[0]
    outcome, store_context = run(store)
    return {"operators": [collect, validate, process, store], "outcome": outcome, "store_context": store_context}


def _names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


@pytest.mark.postgres
def test_lineage_lists_source_staging_quarantine_and_stored_datasets(
        json_api: Any, load: Any, sensor_spec: Any, make_context: Any, dataset_table: Any, data_dir: Path,
        pg: Any, warehouse: Any) -> None:
    spec = load(sensor_spec(source={"kind": "http", "url": json_api.url + "/items/page", "records_path": "data",
                                    "pagination": {"type": "page", "size_param": "per_page", "page_size": 10}}))
    table = dataset_table(spec)
    chain = _run_chain(spec, make_context)
    store = chain["operators"][-1]
    lineage = [op.get_openlineage_facets_on_complete(None) for op in chain["operators"]]

    work = str((data_dir / "_work" / "sensors").resolve())
    postgres = f"postgres://{warehouse.host if not warehouse.host.startswith('/') else 'localhost'}:{warehouse.port}"
    database = warehouse.database
    assert _names(lineage[0].inputs) == [(json_api.url, "/items/page")]
    assert _names(lineage[0].outputs) == [("file", f"{work}/raw")]
    assert _names(lineage[1].inputs) == [("file", f"{work}/raw")]
    assert _names(lineage[1].outputs) == [("file", f"{work}/validated"), (postgres, f"{database}.public.quarantine")]
    assert _names(lineage[2].inputs) == [("file", f"{work}/validated")]
    assert _names(lineage[2].outputs) == [("file", f"{work}/processed")]
    assert _names(lineage[3].inputs) == [("file", f"{work}/processed")]
    assert _names(lineage[3].outputs) == [(postgres, f"{database}.public.{table}"),
                                          ("file", str((data_dir / "datasets" / "sensors").resolve()))]

    # The OpenLineage provider finds these facets by itself (DefaultExtractor on our method).
    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    extracted = ExtractorManager().extract_metadata(SimpleNamespace(run_id="manual__x"), store,
                                                    TaskInstanceState.SUCCESS, SimpleNamespace())
    assert _names(extracted.outputs) == _names(lineage[3].outputs)

    # The store step emitted both Assets with the partition in their extra, and cleaned its staging.
    events = chain["store_context"]["outlet_events"]
    from tributary.ml.pipeline.assets import parquet_asset, table_asset

    assert events[parquet_asset("sensors")].extra["partition"] == "2026-03-01"
    assert events[parquet_asset("sensors")].extra["rows"] == 30
    assert events[table_asset(table)].extra == {"partition": "2026-03-01", "rows": 30, "table": table}
    assert not Path(chain["outcome"]["parquet"]).with_name("_work").exists()
    assert not any((data_dir / "_work" / "sensors" / "2026-03-01").iterdir())


@pytest.mark.postgres
def test_rerunning_a_logical_date_never_duplicates_rows(
        data_dir: Path, load: Any, sensor_spec: Any, make_context: Any, dataset_table: Any, pg: Any) -> None:
    landing = data_dir / "landing" / "sensors" / "2026-03-01"
    landing.mkdir(parents=True)
    lines = [f"{i},{'abc'[i % 3]},{i},2026-03-01,true" for i in range(1, 41)]
    bad = ["41,zz,1,2026-03-01,true", "42,a,-1,2026-03-01,true"]
    (landing / "a.csv").write_text("id,sensor,reading,day,ok\n" + "\n".join(lines + lines[:5] + bad) + "\n")
    spec = load(sensor_spec())
    table = dataset_table(spec)

    def state() -> tuple[int, int, list[str]]:
        with pg.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT record_key) FROM {table} WHERE ds = '2026-03-01'")
            count, distinct = cur.fetchone()
        pg.commit()
        folder = data_dir / "datasets" / "sensors" / "ds=2026-03-01"
        files = sorted(p.name for p in folder.iterdir())
        assert pq.read_table(folder / "part-0.parquet").num_rows == count
        return count, distinct, files

    first = _run_chain(spec, make_context)["outcome"]
    assert first["table"]["inserted"] == 40 and state() == (40, 40, ["part-0.parquet"])  # 5 duplicates dropped
    with pg.cursor() as cur:  # the bad rows are set aside while the good ones are stored
        cur.execute("SELECT record_key, reason FROM quarantine WHERE source = 'ml_pipeline_sensors' ORDER BY 1")
        quarantined = cur.fetchall()
    pg.commit()
    assert [key for key, _ in quarantined] == ["a.csv:46", "a.csv:47"]
    assert "sensor='zz'" in quarantined[0][1] and "reading=-1.0" in quarantined[1][1]
    again = _run_chain(spec, make_context)["outcome"]
    assert (again["table"]["inserted"], again["table"]["updated"]) == (0, 40)
    assert state() == (40, 40, ["part-0.parquet"])

    # The corrected file of that date has fewer rows: the partition and the table shrink with it.
    (landing / "a.csv").write_text("id,sensor,reading,day,ok\n" + "\n".join(lines[:30]) + "\n")
    shrunk = _run_chain(spec, make_context)["outcome"]
    assert shrunk["table"]["deleted"] == 10 and state() == (30, 30, ["part-0.parquet"])
    with pg.cursor() as cur:
        cur.execute("SELECT value FROM ml_metrics WHERE dag_id = 'ml_pipeline_sensors' AND task_id = 'process'"
                    " AND metric = 'rows_out'")
        assert cur.fetchone()[0] == 30
    pg.commit()


@pytest.mark.unit
def test_staging_gone_is_a_clear_permanent_error(load: Any, sensor_spec: Any, make_context: Any,
                                                 tmp_path: Path) -> None:
    from tributary.core.failfast import ClassifiedFailure
    from tributary.ml.pipeline.operators import ProcessOperator

    spec = load(sensor_spec())
    manifest = {"partition": "2026-03-01", "work_dir": str(tmp_path), "validated": str(tmp_path / "gone.parquet")}
    with pytest.raises(ClassifiedFailure, match="clear the whole run from 'collect'"):
        ProcessOperator(task_id="process", spec=spec.as_dict(), manifest=manifest).execute(make_context("process"))
    assert json.dumps(manifest)  # manifests are plain JSON (XCom)
