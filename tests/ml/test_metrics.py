"""ml_metrics: upserted per task try, finite numbers only."""

from __future__ import annotations

import pytest

from tributary.ml.metrics import record_metrics


def test_metrics_are_upserted_per_task(pg) -> None:
    ids = {"dag_id": "ml_pipeline_iris", "run_id": "r1", "task_id": "store"}
    assert record_metrics(pg, **ids, metrics={"rows_in": 150, "rows_out": 147}) == 2
    record_metrics(pg, **ids, metrics={"rows_out": 148})  # a retry overwrites
    with pg.cursor() as cur:
        cur.execute("SELECT metric, value FROM ml_metrics WHERE run_id = 'r1' ORDER BY metric")
        assert cur.fetchall() == [("rows_in", 150.0), ("rows_out", 148.0)]


def test_non_finite_metrics_are_refused(pg) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        record_metrics(pg, dag_id="d", run_id="r", task_id="t", metrics={"auc": float("nan")})
