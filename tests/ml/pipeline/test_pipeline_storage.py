"""Storage: re-running a date replaces its Parquet partition and upserts its table rows, never duplicating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tributary.core.errors import PermanentError
from tributary.ml.pipeline.processing import RECORD_KEY, to_arrow, typed_schema
from tributary.ml.pipeline.specs import load_specs, output_columns
from tributary.ml.pipeline.storage import (
    check_table,
    load_table,
    partitions,
    previous_partition,
    read_partition,
    replace_partition,
)
from tributary.storage.warehouse import WarehouseHook


def _processed(path: Path, spec: Any, ids: list[int], reading: float = 1.0) -> Path:
    frame = pd.DataFrame({
        "id": pd.array(ids, dtype="Int64"), "sensor": pd.array(["a"] * len(ids), dtype="string"),
        "reading": [reading + i for i in ids], "day": pd.to_datetime(["2026-03-01"] * len(ids)),
        "ok": pd.array([True] * len(ids), dtype="boolean"), "reading_log": [0.5] * len(ids),
        "reading_z": [0.0] * len(ids), "sensor_name": pd.array(["alpha"] * len(ids), dtype="string"),
        RECORD_KEY: [str(i) for i in ids],
    })
    pq.write_table(to_arrow(frame, typed_schema(output_columns(spec.as_dict()), with_key=True)), path)
    return path


def _count(pg: Any, table: str, partition: str | None = None) -> int:
    with pg.cursor() as cur:
        if partition:
            cur.execute(f"SELECT count(*) FROM {table} WHERE ds = %s", (partition,))
        else:
            cur.execute(f"SELECT count(*) FROM {table}")
        value = cur.fetchone()[0]
    pg.commit()
    return value


@pytest.mark.unit
def test_rerunning_a_date_replaces_the_parquet_partition(tmp_path: Path, load: Any, sensor_spec: Any) -> None:
    spec = load(sensor_spec())
    first = replace_partition(_processed(tmp_path / "a.parquet", spec, [1, 2, 3]), "sensors", "2026-03-01")
    replace_partition(_processed(tmp_path / "b.parquet", spec, [9]), "sensors", "2026-02-28")
    again = replace_partition(_processed(tmp_path / "c.parquet", spec, [1, 2]), "sensors", "2026-03-01")
    assert first == again and [p.name for p in again.iterdir()] == ["part-0.parquet"]
    assert sorted(p.name for p in again.parent.iterdir()) == ["ds=2026-02-28", "ds=2026-03-01"]  # no leftovers
    assert read_partition("sensors", "2026-03-01")["id"].tolist() == [1, 2]
    assert partitions("sensors") == ["2026-02-28", "2026-03-01"]
    assert previous_partition("sensors", "2026-03-01") == "2026-02-28"
    assert previous_partition("sensors", "2026-02-28") is None
    import pyarrow.dataset as ds

    whole = ds.dataset(str(again.parent), format="parquet", partitioning="hive").to_table()
    assert whole.num_rows == 3 and set(whole.column("ds").to_pylist()) == {"2026-02-28", "2026-03-01"}


def _make_plain(pg: Any, table: str) -> None:
    """Re-create ``table`` unpartitioned (a user's own table, or one from before migration 003)."""
    with pg.cursor() as cur:
        cur.execute(f"CREATE TABLE {table}_plain (LIKE {table} INCLUDING DEFAULTS, PRIMARY KEY (ds, record_key))")
        cur.execute(f"DROP TABLE {table}")
        cur.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")
    pg.commit()


def _tables_like(pg: Any, prefix: str) -> list[str]:
    with pg.cursor() as cur:
        cur.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname LIKE %s ORDER BY relname",
                    (prefix + "%",))
        names = [row[0] for row in cur.fetchall()]
    pg.commit()
    return names


@pytest.mark.postgres
@pytest.mark.parametrize("layout", ["partitioned", "plain"])
def test_rerunning_a_date_replaces_table_rows_and_removes_vanished_ones(
        tmp_path: Path, load: Any, sensor_spec: Any, dataset_table: Any, pg: Any, layout: str) -> None:
    spec = load(sensor_spec())
    table = dataset_table(spec)
    if layout == "plain":
        _make_plain(pg, table)
    conn = WarehouseHook().get_conn()
    try:
        check_table(conn, spec.as_dict())
        first = load_table(conn, spec.as_dict(), _processed(tmp_path / "a.parquet", spec, [1, 2, 3]), "2026-03-01",
                           "run-1")
        assert (first.inserted, first.updated, first.deleted) == (3, 0, 0)
        other = load_table(conn, spec.as_dict(), _processed(tmp_path / "b.parquet", spec, [1, 2]), "2026-03-02",
                           "run-2")
        assert other.inserted == 2
        again = load_table(conn, spec.as_dict(), _processed(tmp_path / "c.parquet", spec, [2, 3, 4], reading=10.0),
                           "2026-03-01", "run-3")
    finally:
        conn.close()
    assert (again.inserted, again.updated, again.deleted) == (1, 2, 1)
    assert _count(pg, table, "2026-03-01") == 3 and _count(pg, table) == 5
    with pg.cursor() as cur:
        cur.execute(f"SELECT id, reading, run_id, day, ok, sensor_name FROM {table} WHERE ds = '2026-03-01'"
                    " ORDER BY id")
        rows = cur.fetchall()
    pg.commit()
    assert [(r[0], r[1], r[2]) for r in rows] == [(2, 12.0, "run-3"), (3, 13.0, "run-3"), (4, 14.0, "run-3")]
    assert str(rows[0][3]) == "2026-03-01" and rows[0][4] is True and rows[0][5] == "alpha"
    if layout == "partitioned":  # one child table per date, nothing left over from the swaps
        assert _tables_like(pg, table) == [table, f"{table}_p20260301", f"{table}_p20260302"]


@pytest.mark.postgres
def test_a_failed_load_keeps_the_stored_partition(
        tmp_path: Path, load: Any, sensor_spec: Any, dataset_table: Any, pg: Any) -> None:
    spec = load(sensor_spec())
    table = dataset_table(spec)
    conn = WarehouseHook().get_conn()
    try:
        load_table(conn, spec.as_dict(), _processed(tmp_path / "a.parquet", spec, [1, 2, 3]), "2026-03-01", "run-1")
        with pytest.raises(Exception, match=r"duplicate key|unique"):  # two rows with one key: the PK build fails
            load_table(conn, spec.as_dict(), _processed(tmp_path / "b.parquet", spec, [5, 5]), "2026-03-01", "run-2")
    finally:
        conn.close()
    assert _count(pg, table, "2026-03-01") == 3
    assert _tables_like(pg, table) == [table, f"{table}_p20260301"]


@pytest.mark.postgres
def test_the_migration_partitions_a_plain_table_and_keeps_its_rows(
        tmp_path: Path, load: Any, sensor_spec: Any, dataset_table: Any, pg: Any) -> None:
    spec = load(sensor_spec())
    table = dataset_table(spec)
    _make_plain(pg, table)
    conn = WarehouseHook().get_conn()
    try:
        for day, ids in (("2026-03-01", [1, 2, 3]), ("2026-03-02", [4])):
            load_table(conn, spec.as_dict(), _processed(tmp_path / f"{day}.parquet", spec, ids), day, "run-1")
    finally:
        conn.close()
    with pg.cursor() as cur:
        cur.execute("SELECT tributary_partition_by_ds(%s)", (table,))
        cur.execute("SELECT tributary_partition_by_ds(%s)", (table,))  # a second call changes nothing
    pg.commit()
    assert _tables_like(pg, table) == [table, f"{table}_p20260301", f"{table}_p20260302"]
    assert _count(pg, table, "2026-03-01") == 3 and _count(pg, table) == 4


@pytest.mark.postgres
def test_a_missing_table_is_a_permanent_error_with_the_ddl(load: Any, sensor_spec: Any, pg: Any) -> None:
    spec = load(sensor_spec("unmigrated"))
    conn = WarehouseHook().get_conn()
    try:
        with pytest.raises(PermanentError) as caught:
            check_table(conn, spec.as_dict())
    finally:
        conn.close()
    message = str(caught.value)
    assert "table ml_dataset_unmigrated does not exist" in message
    assert "CREATE TABLE IF NOT EXISTS ml_dataset_unmigrated" in message and "PRIMARY KEY (ds, record_key)" in message


@pytest.mark.postgres
def test_default_pipeline_tables_come_from_the_migration(pg: Any) -> None:
    specs, _ = load_specs()
    for spec in specs:
        with pg.cursor() as cur:
            cur.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s"
                        " ORDER BY ordinal_position", (spec.table,))
            columns = cur.fetchall()
        pg.commit()
        pg_types = {"float": "double precision", "int": "bigint", "string": "text"}
        expected = ([("ds", "date"), ("record_key", "text")]
                    + [(n, pg_types[t]) for n, t in output_columns(spec.as_dict())]
                    + [("run_id", "text"), ("loaded_at", "timestamp with time zone")])
        assert columns == expected, spec.table
        with pg.cursor() as cur:
            cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (spec.table,))
            assert cur.fetchone()[0] == "p", f"{spec.table} is not partitioned by ds"
        pg.commit()
