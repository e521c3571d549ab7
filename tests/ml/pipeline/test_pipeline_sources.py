"""Sources: landing files, package files, a paginated JSON API and PostgreSQL, all read in bounded batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tributary.core.errors import ErrorClass, TransientError, classify
from tributary.ml.pipeline.sources import open_source, package_file

COLUMNS = [{"name": n, "type": t} for n, t in
           [("id", "int"), ("sensor", "string"), ("reading", "float"), ("day", "date"), ("ok", "bool")]]


def _rows(source: Any) -> list[dict[str, Any]]:
    return [row for batch in source.batches() for row in batch.to_pylist()]


@pytest.mark.unit
def test_landing_csv_keeps_bad_rows_for_quarantine(data_dir: Path) -> None:
    folder = data_dir / "landing" / "sensors" / "2026-03-01"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("id,ok,reading,sensor,day,extra\n1,true,1.5,a,2026-03-01,x\n"
                                  "2,false,oops,b,2026-03-01,y\n3,1,2.5\n4,0,,c,2026-03-01,z\n")
    source = open_source({"kind": "files", "path": "sensors/2026-03-01/*.csv", "format": "csv"}, COLUMNS, 100)
    rows = _rows(source)
    assert [r["id"] for r in rows] == ["1", "2", "4", None]
    assert rows[0] == {"id": "1", "sensor": "a", "reading": "1.5", "day": "2026-03-01", "ok": "true",
                       "_pos": "a.csv:1", "_error": None}
    assert rows[1]["reading"] == "oops"  # typing happens in validation, one bad value costs one row
    assert rows[2]["reading"] is None  # empty -> missing
    assert rows[3]["_error"].startswith("malformed_csv_row: expected 6 fields, got 3")
    assert source.inputs() == [{"namespace": "file", "name": str(folder.resolve())}]


@pytest.mark.unit
def test_landing_jsonl_and_parquet(data_dir: Path) -> None:
    folder = data_dir / "landing" / "mixed"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text(json.dumps({"id": 1, "sensor": "a", "reading": 2.5, "ok": True}) + "\n"
                                    + "{not json\n\n" + json.dumps([1, 2]) + "\n")
    rows = _rows(open_source({"kind": "files", "path": "mixed/*.jsonl", "format": "jsonl"}, COLUMNS, 100))
    assert rows[0] == {"id": "1", "sensor": "a", "reading": "2.5", "day": None, "ok": "true", "_pos": "a.jsonl:1",
                       "_error": None}
    assert rows[1]["_error"].startswith("malformed_json:") and rows[1]["_pos"] == "a.jsonl:2"
    assert rows[2]["_error"].startswith("not_an_object:") and rows[2]["_pos"] == "a.jsonl:4"

    pq.write_table(pa.table({"id": [7, 8], "sensor": ["b", None], "reading": [0.25, 1e20],
                             "day": pa.array([None, None], pa.date32()), "ok": [False, True], "more": [1, 2]}),
                   folder / "b.parquet")
    rows = _rows(open_source({"kind": "files", "path": "mixed/*.parquet", "format": "parquet"}, COLUMNS, 100))
    assert [(r["id"], r["sensor"], r["reading"], r["ok"], r["_pos"]) for r in rows] == [
        ("7", "b", "0.25", "false", "b.parquet:1"), ("8", None, "1e+20", "true", "b.parquet:2")]


@pytest.mark.unit
def test_missing_landing_files_are_transient_unless_allowed() -> None:
    config = {"kind": "files", "path": "nowhere/*.csv", "format": "csv"}
    with pytest.raises(TransientError, match="no files match"):
        _rows(open_source(config, COLUMNS, 10))
    assert _rows(open_source({**config, "allow_empty": True}, COLUMNS, 10)) == []


@pytest.mark.unit
def test_package_file_reads_scikit_learns_iris_without_network() -> None:
    columns = [{"name": n, "type": "float"} for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
    columns.append({"name": "target", "type": "int"})
    config = {"kind": "package_file", "package": "sklearn", "resource": "datasets/data/iris.csv", "format": "csv",
              "csv": {"header": False, "skip_rows": 1}}
    source = open_source(config, columns, 64)
    batches = list(source.batches())
    assert [b.num_rows for b in batches] == [64, 64, 22]  # re-cut to exactly batch_rows
    first = batches[0].to_pylist()[0]
    assert first == {"sepal_length": "5.1", "sepal_width": "3.5", "petal_length": "1.4", "petal_width": "0.2",
                     "target": "0", "_pos": "iris.csv:1", "_error": None}
    assert source.inputs() == [{"namespace": "file", "name": str(package_file("sklearn", "datasets/data/iris.csv"))}]


@pytest.mark.unit
@pytest.mark.parametrize(("endpoint", "options"), [
    ("/items/page", {"records_path": "data", "pagination": {"type": "page", "size_param": "per_page",
                                                             "page_size": 8}}),
    ("/items/offset", {"records_path": "results.items", "pagination": {"type": "offset", "page_size": 12}}),
    ("/items/cursor", {"records_path": "items", "pagination": {"type": "cursor", "cursor_path": "meta.next"}}),
    ("/items/link", {"pagination": {"type": "next_url"}}),
])
def test_http_source_follows_every_pagination_style(json_api: Any, endpoint: str, options: dict[str, Any]) -> None:
    source = open_source({"kind": "http", "url": json_api.url + endpoint, **options}, COLUMNS, 10)
    rows = _rows(source)
    assert [int(r["id"]) for r in rows] == list(range(1, 31))
    assert rows[0]["_pos"] == "page1:1" and rows[1]["reading"] == "3.0"
    assert len(json_api.requests) >= 3  # really paginated
    assert source.inputs() == [{"namespace": json_api.url, "name": endpoint}]


@pytest.mark.unit
def test_http_source_retries_transient_errors_and_uses_the_connection_token(
        json_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host = json_api.url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_API", json.dumps({"conn_type": "http", "host": host, "schema": "http",
                                                              "password": "s3cret-token"}))
    json_api.fail_next = [503]
    source = open_source({"kind": "http", "conn_id": "sensor_api", "endpoint": "/items/secret", "records_path": "data"},
                         COLUMNS, 100)
    assert len(_rows(source)) == 30
    assert len(json_api.requests) == 2  # the 503, then the retry

    json_api.fail_next = [401, 401, 401]
    unauthorized = open_source({"kind": "http", "url": json_api.url + "/items/secret", "records_path": "data"},
                               COLUMNS, 100)
    with pytest.raises(Exception) as caught:
        _rows(unauthorized)
    assert classify(caught.value).error_class is ErrorClass.PERMANENT  # no retry for bad credentials


@pytest.mark.postgres
def test_sql_source_streams_a_query_with_bind_parameters(pg: Any) -> None:
    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS sensor_readings")
        cur.execute("CREATE TABLE sensor_readings (id int, sensor text, reading numeric, day date, ok boolean)")
        cur.execute("INSERT INTO sensor_readings SELECT g, 'a', g / 4.0, DATE '2026-03-01' + (g % 2), g % 3 = 0"
                    " FROM generate_series(1, 25) g")
    pg.commit()
    query = "SELECT id, sensor, reading, day, ok FROM public.sensor_readings WHERE day = %(partition)s ORDER BY id"
    source = open_source({"kind": "sql", "query": query}, COLUMNS, 5, {"partition": "2026-03-01"})
    batches = list(source.batches())
    rows = [r for b in batches for r in b.to_pylist()]
    assert [int(r["id"]) for r in rows] == list(range(2, 26, 2))
    assert max(b.num_rows for b in batches) == 5
    assert rows[0] == {"id": "2", "sensor": "a", "reading": "0.50000000000000000000", "day": "2026-03-01",
                       "ok": "false", "_pos": "row1", "_error": None}
    [table] = source.inputs()
    assert table["namespace"].startswith("postgres://") and table["name"].endswith(".public.sensor_readings")
    with pg.cursor() as cur:
        cur.execute("DROP TABLE sensor_readings")
    pg.commit()


@pytest.mark.postgres
def test_collect_operator_stages_the_source_in_batches(data_dir: Path, load: Any, sensor_spec: Any,
                                                       make_context: Any, pg: Any) -> None:
    from tributary.ml.pipeline.operators import CollectOperator

    folder = data_dir / "landing" / "sensors" / "2026-03-01"
    folder.mkdir(parents=True)
    lines = ["id,sensor,reading,day,ok"] + [f"{i},a,{i / 10},2026-03-01,true" for i in range(2500)]
    (folder / "big.csv").write_text("\n".join(lines) + "\n")
    spec = load(sensor_spec(processing={"batch_rows": 1000}))
    operator = CollectOperator(task_id="collect", spec=spec.as_dict(),
                               source={**spec.source, "path": "sensors/2026-03-01/*.csv"})
    manifest = operator.execute(make_context("collect", dag_id="ml_pipeline_sensors"))
    raw = pq.ParquetFile(manifest["raw"])
    assert manifest["rows"] == 2500 and manifest["batches"] == 3
    assert [raw.metadata.row_group(i).num_rows for i in range(raw.num_row_groups)] == [1000, 1000, 500]
    assert manifest["partition"] == "2026-03-01"
    with pg.cursor() as cur:
        cur.execute("SELECT metric, value FROM ml_metrics WHERE dag_id = 'ml_pipeline_sensors' AND task_id = 'collect'"
                    " AND metric IN ('rows_in', 'rows_out', 'batches')")
        assert dict(cur.fetchall()) == {"rows_in": 2500.0, "rows_out": 2500.0, "batches": 3.0}
