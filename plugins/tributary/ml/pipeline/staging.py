"""Run-scoped Parquet files that carry a pipeline's rows from one task to the next.

Each step reads the previous step's file batch by batch (``iter_batches``) and writes its own with
a :class:`StageWriter` (one row group per batch), so no step ever holds more than one batch. Only
the small manifest (paths and counts) goes through XCom.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tributary.core.errors import PermanentError
from tributary.ml import SYSTEM


class StageWriter:
    """Append record batches of one fixed schema to a Parquet file; counts rows and batches."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self.batches = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(path), schema, compression="zstd")

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if data.num_rows == 0:
            return
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if not table.schema.equals(self.schema):
            table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows
        self.batches += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_batches(path: Path | str, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches of at most ``batch_rows``.

    ``pre_buffer=False``: with Arrow's default read pre-buffering the reader keeps what it has read
    until the file is finished, so memory grew with the file (about 3 MB per 100k-row batch);
    without it a loop over a file of any size stays within a few batches.
    """
    file = pq.ParquetFile(str(path), pre_buffer=False)
    try:
        yield from file.iter_batches(batch_size=batch_rows, columns=columns)
    finally:
        file.close()


def rebatch(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches of any size into batches of exactly ``batch_rows`` (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, batch_rows - pending_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == batch_rows:
                yield _concat(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def require(path: Path | str, step: str) -> Path:
    """The staged file of an upstream step, or a clear error when it is gone."""
    staged = Path(path)
    if not staged.is_file():
        raise PermanentError(f"staged data {staged} is missing (removed after a finished run?); "
                             f"clear the whole run from 'collect' to redo {step}", system=SYSTEM,
                             reason="staging_missing")
    return staged


def clean_old_runs(root: Path, keep_days: float = 7.0) -> int:
    """Remove run folders under ``root/<partition>/`` older than ``keep_days`` (failed runs leave them)."""
    if not root.is_dir():
        return 0
    limit = time.time() - keep_days * 86400
    removed = 0
    for run_folder in root.glob("*/*"):
        try:
            if run_folder.is_dir() and run_folder.stat().st_mtime < limit:
                shutil.rmtree(run_folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    for partition in root.glob("*"):
        if partition.is_dir() and not any(partition.iterdir()):
            partition.rmdir()
    return removed
