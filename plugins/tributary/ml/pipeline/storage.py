"""Storage of processed rows: a hive-partitioned Parquet dataset and a PostgreSQL table.

Both are keyed by the logical date (``ds``), and re-running a date replaces what it stored before:

* Parquet: ``datasets/<name>/ds=YYYY-MM-DD/part-0.parquet``, written into a hidden sibling folder
  and swapped in with renames, so readers see the old or the new partition, never half of one;
* PostgreSQL: tables are ``PARTITION BY LIST (ds)``; the rows are streamed with ``COPY`` into a
  fresh table, indexed, and swapped in for the date's old partition in one transaction. A plain
  (unpartitioned) table still works: ``COPY`` into a temporary staging table, upsert on
  ``(ds, record_key)``, delete the rows of that ``ds`` the new load no longer has.

The table comes from a migration (``include/sql/ml/NNN_*.sql``); a missing or incomplete table is a
permanent error whose message carries the DDL to add.
"""

from __future__ import annotations

import hashlib
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
from tributary.ml import SYSTEM
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
        raise PermanentError(f"dataset {name} has no partition ds={partition} ({path})", system=SYSTEM,
                             reason="partition_missing")
    return path


def read_partition(name: str, partition: str | None = None, columns: list[str] | None = None) -> Any:
    """One partition as a pandas DataFrame (the latest when ``partition`` is None), e.g. to train on."""
    import pyarrow.parquet as pq

    from tributary.ml.pipeline.processing import to_frame

    if partition is None:
        stored = partitions(name)
        if not stored:
            raise PermanentError(f"dataset {name} has no partitions under {dataset_dir(name)}", system=SYSTEM,
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
                             system=SYSTEM, reason="table_missing")


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


def partition_table_name(table: str, partition: str) -> str:
    """The child table holding one date of a partitioned table: ``<table>_p20260301`` (≤ 63 bytes)."""
    name = f"{table}_p{partition.replace('-', '')}"
    if len(name) <= 63:
        return name
    digest = hashlib.blake2b(table.encode(), digest_size=4).hexdigest()
    return f"{table[:44]}_{digest}_p{partition.replace('-', '')}"


def is_partitioned(conn: Any, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,))
        row = cur.fetchone()
    return bool(row) and row[0] in ("p", b"p")


def load_table(conn: Any, spec: Mapping[str, Any], processed: Path, partition: str, run_id: str,
               progress: Callable[[str], None] | None = None) -> TableLoad:
    """Store ``processed`` as the rows of ``ds = partition``, replacing what an earlier run stored.

    A table ``PARTITION BY LIST (ds)`` (what ``render_ddl`` creates) gets a partition swap; a plain
    table an upsert. Either way it is one transaction: readers see the old rows or the new ones.
    """
    progress = progress or log.info
    table = spec["storage"]["table"]
    try:
        with conn.cursor() as cur:
            # Two runs of one date (a retry racing a manual re-run) take turns instead of colliding.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tributary_store:{table}:{partition}",))
        if is_partitioned(conn, table):
            load = _swap_partition(conn, spec, processed, partition, run_id, progress)
        else:
            load = _upsert(conn, spec, processed, partition, run_id, progress)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return load


def _copy_rows(cur: Any, target: str, spec: Mapping[str, Any], processed: Path, partition: str, run_id: str,
               progress: Callable[[str], None]) -> int:
    """Stream ``processed`` (+ ds, run_id) into ``target`` with ``COPY FROM STDIN``, one CSV chunk per batch."""
    import pyarrow.csv as pacsv

    names = [name for name, _ in output_columns(spec)] + [RECORD_KEY]
    columns = ["ds", "run_id", *names]
    statement = f"COPY {target} ({', '.join(map(_quote, columns))}) FROM STDIN WITH (FORMAT csv)"
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    total = 0
    for batch in iter_batches(processed, int(spec["processing"]["batch_rows"]), columns=names):
        rows = batch.num_rows
        constants = [pa.array([partition] * rows, pa.string()), pa.array([run_id] * rows, pa.string())]
        framed = pa.RecordBatch.from_arrays(constants + list(batch.columns), names=columns)
        buffer = io.BytesIO()
        pacsv.write_csv(framed, buffer, options)
        _copy(cur, statement, buffer.getvalue())
        total += rows
    progress(f"store: {total:,} rows copied into {target}")
    return total


def _swap_partition(conn: Any, spec: Mapping[str, Any], processed: Path, partition: str, run_id: str,
                    progress: Callable[[str], None]) -> TableLoad:
    """Load the date into a fresh table, index it once, and swap it in for the old partition.

    Rows are copied straight into their final table and its primary key is built afterwards in one
    sort: an upsert would insert every key into an index in random order, which at 10M rows cost
    more than twice the COPY itself (bench/README.md). The ``CHECK (ds = ...)`` lets ATTACH skip
    its validation scan; the primary key matches the parent's, so ATTACH adopts it.
    """
    table = spec["storage"]["table"]
    final = partition_table_name(table, partition)
    loading = f"{final}_loading"
    load = TableLoad()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {_quote(loading)} (LIKE {_quote(table)} INCLUDING DEFAULTS)")
        cur.execute(f"ALTER TABLE {_quote(loading)} ADD CONSTRAINT {_quote(loading + '_ds')}"
                    f" CHECK (ds IS NOT NULL AND ds = {_literal(partition)}::date)")
        load.rows = _copy_rows(cur, _quote(loading), spec, processed, partition, run_id, progress)
        cur.execute(f"ALTER TABLE {_quote(loading)} ADD PRIMARY KEY (ds, record_key)")
        cur.execute(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s) AND pg_get_expr(c.relpartbound, c.oid) = %s",
            (table, f"FOR VALUES IN ('{partition}')"))
        old = cur.fetchone()
        if old:
            cur.execute(f"SELECT (SELECT count(*) FROM {old[0]}),"
                        f" (SELECT count(*) FROM {old[0]} o JOIN {_quote(loading)} n USING (record_key))")
            before, kept = (int(v) for v in cur.fetchone())
            load.updated, load.deleted = kept, before - kept
            cur.execute(f"ALTER TABLE {_quote(table)} DETACH PARTITION {old[0]}")
            cur.execute(f"DROP TABLE {old[0]}")
        load.inserted = load.rows - load.updated
        cur.execute(f"ALTER TABLE {_quote(loading)} RENAME TO {_quote(final)}")
        cur.execute(f"ALTER TABLE {_quote(table)} ATTACH PARTITION {_quote(final)}"
                    f" FOR VALUES IN ({_literal(partition)})")
    progress(f"store: partition {final} swapped in ({load.inserted:,} new, {load.updated:,} replaced, "
             f"{load.deleted:,} gone)")
    return load


def _literal(partition: str) -> str:
    """A date literal for DDL (which takes no bind parameters); ``partition`` is checked to be a date."""
    from datetime import date

    return f"'{date.fromisoformat(partition).isoformat()}'"


def _upsert(conn: Any, spec: Mapping[str, Any], processed: Path, partition: str, run_id: str,
            progress: Callable[[str], None]) -> TableLoad:
    """A plain table: COPY into a temporary staging table, upsert on (ds, record_key), drop vanished rows."""
    table = _quote(spec["storage"]["table"])
    names = [name for name, _ in output_columns(spec)] + [RECORD_KEY]
    columns = ["ds", "run_id", *names]
    column_list = ", ".join(map(_quote, columns))
    updates = ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in columns if c not in ("ds", RECORD_KEY))
    load = TableLoad()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE tributary_stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
        load.rows = _copy_rows(cur, "tributary_stage", spec, processed, partition, run_id, progress)
        cur.execute(
            f"WITH up AS (INSERT INTO {table} ({column_list}) SELECT {column_list} FROM tributary_stage"
            f" ON CONFLICT (ds, record_key) DO UPDATE SET {updates}, loaded_at = now()"
            " RETURNING (xmax = 0) AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up")
        load.inserted, load.updated = (int(v) for v in cur.fetchone())
        cur.execute(f"DELETE FROM {table} t WHERE t.ds = %s AND NOT EXISTS"
                    " (SELECT 1 FROM tributary_stage s WHERE s.record_key = t.record_key)", (partition,))
        load.deleted = cur.rowcount
    return load
