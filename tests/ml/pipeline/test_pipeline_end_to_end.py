"""The generated iris DAGs run end to end through Airflow (``dag.test()``): real data, GX, PostgreSQL, Parquet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.postgres


def _bag(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder), bundle_path=folder)
    assert bag.import_errors == {}
    return bag


def _rows(pg: Any, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with pg.cursor() as cur:
        cur.execute(query, args)
        rows = cur.fetchall()
    pg.commit()
    return rows


def test_iris_pipeline_and_its_asset_scheduled_analysis_run_end_to_end(
        airflow_dags: Path, pg: Any, reports: Path, data_dir: Path) -> None:
    bag = _bag(airflow_dags)
    dag = bag.dags["ml_pipeline_iris"]
    first_day, second_day = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)

    run = dag.test(logical_date=first_day)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    # scikit-learn's iris has 150 rows, one of them an exact duplicate: 149 stored, none quarantined.
    assert _rows(pg, "SELECT count(*), count(DISTINCT record_key) FROM ml_dataset_iris WHERE ds = '2026-03-01'") == [
        (149, 149)]
    assert _rows(pg, "SELECT count(*) FROM quarantine WHERE source = 'ml_pipeline_iris'") == [(0,)]
    species = _rows(pg, "SELECT species, count(*) FROM ml_dataset_iris WHERE ds = '2026-03-01' GROUP BY 1 ORDER BY 1")
    assert species == [("setosa", 50), ("versicolor", 50), ("virginica", 49)]
    partition = data_dir / "datasets" / "iris" / "ds=2026-03-01" / "part-0.parquet"
    assert pq.read_table(partition).num_rows == 149

    metrics = dict(_rows(pg, "SELECT task_id || '.' || metric, value FROM ml_metrics WHERE dag_id = 'ml_pipeline_iris'"
                             " AND run_id = %s", run.run_id))
    assert metrics["collect.rows_in"] == 150 and metrics["validate.dq_score"] == 1.0
    assert metrics["validate.rows_quarantined"] == 0 and metrics["process.duplicates"] == 1
    assert metrics["store.rows_out"] == 149 and all(metrics[f"{t}.duration_s"] > 0 for t in ("collect", "store"))
    report = next((reports / "ml_pipelines" / "iris" / "2026-03-01").glob("*/validation.html"))
    assert "expect_column_mean_to_be_between(sepal_length)" in report.read_text()

    # Re-running the date (Airflow clears and re-runs it) replaces, never duplicates.
    again = dag.test(logical_date=first_day)
    assert again.state == "success"
    assert _rows(pg, "SELECT count(*) FROM ml_dataset_iris WHERE ds = '2026-03-01'") == [(149,)]
    assert [p.name for p in partition.parent.iterdir()] == ["part-0.parquet"]

    assert dag.test(logical_date=second_day).state == "success"
    assert _rows(pg, "SELECT ds::text, count(*) FROM ml_dataset_iris GROUP BY 1 ORDER BY 1") == [
        ("2026-03-01", 149), ("2026-03-02", 149)]

    # The analysis DAG is scheduled on the stored Parquet Asset; run it for the second partition.
    analysis = bag.dags["ml_pipeline_iris_analysis"]
    assert [a.uri for a in analysis.timetable.asset_condition.objects] == ["tributary://datasets/iris"]
    analyzed = analysis.test(logical_date=None, run_conf={"partition_date": "2026-03-02"})
    assert analyzed.state == "success"
    [folder] = list((reports / "ml_pipelines" / "iris" / "2026-03-02").glob("*/analysis.json"))
    summary = json.loads(folder.read_text())
    assert summary["previous_partition"] == "2026-03-01" and summary["rows"] == 149
    assert summary["max_psi"] == 0.0 and summary["drifted"] == []  # the same flowers on both days
    assert {"psi.png", "distributions.png", "analysis.html"} <= {p.name for p in folder.parent.iterdir()}


def test_a_bad_batch_fails_the_run_as_a_data_error_quarantined_and_alerted(
        airflow_dags: Path, pg: Any, data_dir: Path, write_spec: Any, sensor_spec: Any, webhook_conn: str,
        http_sink: Any, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIBUTARY_PIPELINES_DIR", str(tmp_path / "pipelines"))
    monkeypatch.setenv("TRIBUTARY_ALERTING", json.dumps({"min_severity": "warning", "alert_on": ["failure"],
                                                         "notifiers": [{"type": "webhook", "conn_id": webhook_conn}]}))
    write_spec(sensor_spec("sensors_e2e", validation={"max_failure_rate": 0.2},
                           source={"kind": "files", "path": "sensors_e2e/{{ partition }}/*.csv", "format": "csv"}))
    landing = data_dir / "landing" / "sensors_e2e" / "2026-03-01"
    landing.mkdir(parents=True)
    good = [f"{i},a,{i},2026-03-01,true" for i in range(1, 7)]
    bad = [f"{i},a,{i * 100},2026-03-01,true" for i in range(7, 11)]  # 40% above the reading limit
    (landing / "r.csv").write_text("id,sensor,reading,day,ok\n" + "\n".join(good + bad) + "\n")

    dag = _bag(airflow_dags).dags["ml_pipeline_sensors_e2e"]
    run = dag.test(logical_date=datetime(2026, 3, 1, tzinfo=UTC))

    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["collect"][0] == "success"
    assert states["validate"] == ("failed", 1)  # a data error is not retried
    assert states["process"][0] == states["store"][0] == "upstream_failed"
    reasons = _rows(pg, "SELECT record_key, reason FROM quarantine WHERE source = 'ml_pipeline_sensors_e2e'"
                        " ORDER BY record_key")
    assert [key for key, _ in reasons] == ["r.csv:10", "r.csv:7", "r.csv:8", "r.csv:9"]
    assert all(reason.startswith("expect_column_values_to_be_between(reading)") for _, reason in reasons)
    [event] = _rows(pg, "SELECT error_class, severity, system, message FROM error_events WHERE run_id = %s"
                        " AND task_id = 'validate' AND kind = 'failure'", run.run_id)
    assert event[:3] == ("data", "error", "ml") and "4 of 10 records rejected (40.0% > 20.0%)" in event[3]
    [alert] = http_sink.posted_json()
    assert alert["event"]["error_class"] == "data" and alert["event"]["task_id"] == "validate"
