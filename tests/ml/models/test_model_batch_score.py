"""ml_batch_score's operator: champion predictions into ml_predictions, replaced per date, never duplicated."""

from __future__ import annotations

from datetime import date

import pytest

from tributary.core.errors import PermanentError

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def champion(lifecycle) -> str:
    name = lifecycle.unique_name("score")
    assert lifecycle.train_and_gate(name, "train", lifecycle.good_grid).result["decision"]["outcome"] == "champion"
    return name


def _partition(pg, name: str, day: str) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute("SELECT row_key, model_version, prediction, run_id FROM ml_predictions"
                    " WHERE model_name = %s AND score_date = %s ORDER BY row_key::int", (name, day))
        return cur.fetchall()


def test_scoring_a_date_twice_replaces_its_predictions_without_duplicates(lifecycle, champion, pg,
                                                                         warehouse) -> None:
    from tributary.ml.models.operators import BatchScoreOperator

    def score(run_id: str, day: str | None) -> dict:
        op = BatchScoreOperator(task_id="score", model_name=champion, source={"kind": "sklearn",
                                                                              "dataset": "breast_cancer"},
                                score_date=day, batch_size=200)
        return op.execute(lifecycle.context("score", run_id, dag_id="ml_batch_score")), op

    first, _ = score("score-1", None)  # the logical date of the context: 2026-03-01
    second, op = score("score-2", "2026-03-01")

    assert first["score_date"] == second["score_date"] == "2026-03-01"
    assert (first["rows"], first["replaced"]) == (569, 0)
    assert (second["rows"], second["replaced"]) == (569, 569)
    rows = _partition(pg, champion, "2026-03-01")
    assert len(rows) == 569 == len({r[0] for r in rows})
    assert {r[1] for r in rows} == {1}
    assert {r[2] for r in rows} == {"0", "1"}
    assert {r[3] for r in rows} == {"score-2"}  # the second run replaced the first
    # predictions agree with the registered model
    from sklearn.datasets import load_breast_cancer

    from tributary.ml.models.registry import load_version

    data = load_breast_cancer(as_frame=True).data
    expected = [str(p) for p in load_version(champion, "1").predict(data)]
    assert [r[2] for r in rows] == expected

    score("score-3", "2026-03-02")  # another date is another partition
    assert len(_partition(pg, champion, "2026-03-02")) == 569
    assert len(_partition(pg, champion, "2026-03-01")) == 569

    # what the OpenLineage provider's listener extracts from the operator after it ran
    from types import SimpleNamespace

    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    lineage = ExtractorManager().extract_metadata(SimpleNamespace(run_id="score-2"), op, TaskInstanceState.SUCCESS,
                                                  task_instance=None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("sklearn", "datasets/breast_cancer"), (lifecycle.store["uri"], f"models/{champion}/1")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (f"postgres://{warehouse.host}:{warehouse.port}", f"{warehouse.database}.public.ml_predictions")]
    with pg.cursor() as cur:
        cur.execute("SELECT value FROM ml_metrics WHERE run_id = 'score-2' AND metric = 'rows_scored'")
        assert cur.fetchall() == [(569.0,)]


def test_a_partitioned_parquet_source_is_scored_one_day_at_a_time(lifecycle, champion, pg, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    from tributary.ml.models.operators import BatchScoreOperator

    frame = load_breast_cancer(as_frame=True).data.head(30)
    frame.insert(0, "patient", [f"p{i:03d}" for i in range(30)])
    frame["day"] = ["2026-04-01"] * 10 + ["2026-04-02"] * 20
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "landing",
                        partition_cols=["day"])
    source = {"kind": "parquet", "path": str(tmp_path / "landing"), "key": "patient", "target": None,
              "partition_column": "day"}

    op = BatchScoreOperator(task_id="score", model_name=champion, source=source, score_date="2026-04-02")
    result = op.execute(lifecycle.context("score", "score-parquet", dag_id="ml_batch_score"))

    assert result["rows"] == 20
    assert result["dataset"] == f"parquet:{tmp_path / 'landing'}"
    with pg.cursor() as cur:
        cur.execute("SELECT min(row_key), max(row_key), count(*) FROM ml_predictions"
                    " WHERE model_name = %s AND dataset = %s", (champion, result["dataset"]))
        assert cur.fetchone() == ("p010", "p029", 20)
    assert op.get_openlineage_facets_on_complete(None).inputs[0].namespace == "file"


def test_scoring_without_a_champion_fails_fast(lifecycle) -> None:
    from tributary.core.failfast import ClassifiedFailure
    from tributary.ml.models.operators import BatchScoreOperator

    op = BatchScoreOperator(task_id="score", model_name=lifecycle.unique_name("none"), source=None)
    with pytest.raises(ClassifiedFailure, match="no 'champion' alias"):
        op.execute(lifecycle.context("score", "score-none", dag_id="ml_batch_score"))


def test_score_date_comes_from_the_param_then_the_logical_date_then_the_run(lifecycle) -> None:
    from types import SimpleNamespace

    from tributary.ml.models.operators import resolve_score_date

    context = lifecycle.context("score", "r")
    assert resolve_score_date("2026-05-06", context) == date(2026, 5, 6)
    assert resolve_score_date(None, context) == date(2026, 3, 1)
    manual = {"logical_date": None, "dag_run": SimpleNamespace(run_after=context["dag_run"].run_after)}
    assert resolve_score_date("", manual) == date(2026, 3, 1)
    # Asset-triggered: the stored partition of the triggering event wins over the logical date ...
    assert resolve_score_date(None, context, partition="2026-02-27") == date(2026, 2, 27)
    assert resolve_score_date("2026-05-06", context, partition="2026-02-27") == date(2026, 5, 6)
    # ... and a run without one (a new champion) scores the newest stored partition.
    assert resolve_score_date(None, manual, newest=lambda: ["2026-02-28"]) == date(2026, 2, 28)
    assert resolve_score_date(None, manual, newest=lambda: [None]) == date(2026, 3, 1)
    with pytest.raises(PermanentError, match="not YYYY-MM-DD"):
        resolve_score_date("yesterday", context)
