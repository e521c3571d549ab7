"""Storage of processed rows: a hive-partitioned Parquet dataset and a PostgreSQL table.

Both are keyed by the logical date (``ds``), and re-running a date replaces what it stored before:

* Parquet: ``datasets/<name>/ds=YYYY-MM-DD/part-0.parquet``, written into a hidden sibling folder
  and swapped in with renames, so readers see the old or the new partition, never half of one;
* PostgreSQL: the rows are streamed with ``COPY`` into a temporary staging table, then upserted on
  ``(ds, record_key)``, and rows of that ``ds`` the new load no longer has are deleted, all in one
  transaction. The table comes from a migration (``include/sql/ml/NNN_*.sql``); a missing or
  incomplete table is a permanent error whose message carries the DDL to add.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tributary.core.errors import PermanentError
from tributary.ml.pipeline.assets import dataset_dir, partition_dir
from tributary.ml.pipeline.processing import RECORD_KEY
from tributary.ml.pipeline.specs import output_columns, render_ddl
from tributary.ml.pipeline.staging import iter_batches

log = logging.getLogger(__name__)
PART_FILE = "part-0.parquet"


# --------------------------------------------------------------------------- Parquet
def replace_partition(processed: Path, name: str, partition: str) -> Path:
    """Make ``processed`` the only file of partition ``ds=<partition>``; returns the partition folder.

    ``processed`` is hard-linked (copied across file systems), so a retry after a failure later in
    the task finds it still in place.
    """
    final = partition_dir(name, partition)
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    fresh = final.parent / f".ds={partition}.{token}.new"
    old = final.parent / f".ds={partition}.{token}.old"
    fresh.mkdir()
    try:
        os.link(processed, fresh / PART_FILE)
    except OSError:
        shutil.copyfile(processed, fresh / PART_FILE)
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def partitions(name: str) -> list[str]:
    """The stored partitions (dates) of a dataset, oldest first."""
    folder = dataset_dir(name)
    if not folder.is_dir():
        return []
    return sorted(p.name.removeprefix("ds=") for p in folder.glob("ds=*") if (p / PART_FILE).is_file())


def previous_partition(name: str, partition: str) -> str | None:
    earlier = [p for p in partitions(name) if p < partition]
    return earlier[-1] if earlier else None


def partition_file(name: str, partition: str) -> Path:
    path = partition_dir(name, partition) / PART_FILE
    if not path.is_file():
        raise PermanentError(f"dataset {name} has no partition ds={partition} ({path})", system="ml",
                             reason="partition_missing")
    return path


def read_partition(name: str, partition: str | None = None, columns: list[str] | None = None) -> Any:
    """One partition as a pandas DataFrame (the latest when ``partition`` is None), e.g. to train on."""
    import pyarrow.parquet as pq

    from tributary.ml.pipeline.processing import to_frame

    if partition is None:
        stored = partitions(name)
        if not stored:
            raise PermanentError(f"dataset {name} has no partitions under {dataset_dir(name)}", system="ml",
                                 reason="partition_missing")
        partition = stored[-1]
    return to_frame(pq.read_table(str(partition_file(name, partition)), columns=columns))


# --------------------------------------------------------------------------- PostgreSQL
@dataclass
class TableLoad:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_table(conn: Any, spec: Mapping[str, Any]) -> None:
    """The table exists and has every column the spec writes (types are the migration's business)."""
    table = spec["storage"]["table"]
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                    " AND table_name = %s", (table,))
        present = {row[0] for row in cur.fetchall()}
    conn.rollback()
    needed = ["ds", RECORD_KEY, "run_id"] + [name for name, _ in output_columns(spec)]
    missing = [c for c in needed if c not in present]
    if missing:
        what = f"table {table} does not exist" if not present else f"table {table} lacks column(s) {missing}"
        raise PermanentError(f"{what}; add a migration include/sql/ml/NNN_{table}.sql (print it with "
                             f"python -m tributary.ml.pipeline.specs ddl {spec['name']}):\n{render_ddl(spec)}",
                             system="ml", reason="table_missing")


def _quote(name: str) -> str:
    # Spec names match ^[a-z][a-z0-9_]*$ (checked by the schema), so quoting cannot be escaped.
    return '"' + name.replace('"', '""') + '"'


def _copy(cur: Any, statement: str, data: bytes) -> None:
    """COPY ... FROM STDIN with psycopg 3 or psycopg2 (PostgresHook returns either)."""
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(statement, io.BytesIO(data))
    else:
        with cur.copy(statement) as copy:
            copy.write(data)


def load_table(conn: Any, spec: Mapping[str, Any], processed: Path, partition: str, run_id: str,
               progress: Callable[[str], None] | None = None) -> TableLoad:
    """COPY ``processed`` into a staging table, upsert into the spec's table, drop rows gone from ``ds``."""
    import pyarrow.csv as pacsv

    progress = progress or log.info
    table = _quote(spec["storage"]["table"])
    names = [name for name, _ in output_columns(spec)] + [RECORD_KEY]
    columns = ["ds", "run_id", *names]
    column_list = ", ".join(map(_quote, columns))
    updates = ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in columns if c not in ("ds", RECORD_KEY))
    load = TableLoad()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE tributary_stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            copy = f"COPY tributary_stage ({column_list}) FROM STDIN WITH (FORMAT csv)"
            for batch in iter_batches(processed, int(spec["processing"]["batch_rows"]), columns=names):
                rows = batch.num_rows
                constants = [pa.array([partition] * rows, pa.string()), pa.array([run_id] * rows, pa.string())]
                framed = pa.RecordBatch.from_arrays(constants + list(batch.columns), names=columns)
                buffer = io.BytesIO()
                pacsv.write_csv(framed, buffer, options)
                _copy(cur, copy, buffer.getvalue())
                load.rows += rows
            progress(f"store: {load.rows:,} rows copied to the staging table")
            cur.execute(
                f"WITH up AS (INSERT INTO {table} ({column_list}) SELECT {column_list} FROM tributary_stage"
                f" ON CONFLICT (ds, record_key) DO UPDATE SET {updates}, loaded_at = now()"
                " RETURNING (xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up")
            load.inserted, load.updated = (int(v) for v in cur.fetchone())
            cur.execute(f"DELETE FROM {table} t WHERE t.ds = %s AND NOT EXISTS"
                        " (SELECT 1 FROM tributary_stage s WHERE s.record_key = t.record_key)", (partition,))
            load.deleted = cur.rowcount
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return load
