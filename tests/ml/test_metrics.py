"""ml_metrics: upserted per task try, finite numbers only."""

from __future__ import annotations

import pytest

from tributary.ml.metrics import record_metrics


@pytest.mark.postgres
def test_metrics_are_upserted_per_task(pg) -> None:
    ids = {"dag_id": "ml_pipeline_iris", "run_id": "r1", "task_id": "store"}
    assert record_metrics(pg, **ids, metrics={"rows_in": 150, "rows_out": 147}) == 2
    record_metrics(pg, **ids, metrics={"rows_out": 148})  # a retry overwrites
    with pg.cursor() as cur:
        cur.execute("SELECT metric, value FROM ml_metrics WHERE run_id = 'r1' ORDER BY metric")
        assert cur.fetchall() == [("rows_in", 150.0), ("rows_out", 148.0)]


@pytest.mark.postgres
def test_non_finite_metrics_are_refused(pg) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        record_metrics(pg, dag_id="d", run_id="r", task_id="t", metrics={"auc": float("nan")})


@pytest.mark.unit
def test_metrics_are_mirrored_to_one_mlflow_run_per_dag_run(tmp_path, monkeypatch) -> None:
    import json
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from tributary.ml.metrics import mirror_to_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_MLFLOW", json.dumps(
        {"conn_type": "tributary_mlflow", "host": uri, "extra": {"artifact_location": str(tmp_path / "a")}}))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    def context(task_id: str) -> dict:
        return {"ti": SimpleNamespace(dag_id="ml_pipeline_iris", run_id="manual__1", task_id=task_id, map_index=-1)}

    first = mirror_to_mlflow(context("collect"), {"rows_in": 150}, experiment="pipeline_iris")
    second = mirror_to_mlflow(context("store"), {"rows_out": 147, "duration_s": 0.5}, experiment="pipeline_iris")
    again = mirror_to_mlflow(context("store"), {"rows_out": 148}, experiment="pipeline_iris")  # a retry
    assert first == second == again
    run = MlflowClient(tracking_uri=uri).get_run(first)
    assert run.data.metrics == {"collect.rows_in": 150.0, "store.rows_out": 148.0, "store.duration_s": 0.5}
    assert run.data.tags["airflow_run_id"] == "manual__1"
