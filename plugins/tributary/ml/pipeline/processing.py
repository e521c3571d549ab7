"""Processing: typing, dedupe, missing values and feature engineering, in bounded memory.

Typing (:func:`cast_frame`) runs in the validation step, so a value that is not of its column's
type is quarantined like any other failed expectation. The process step (:func:`process_stage`)
then dedupes on the record key, fills missing values and adds features.

Dedupe across a file larger than memory is a two-pass, hash-partitioned job:

1. stream the validated rows in batches of ``batch_rows``; give each row its record key and a
   64-bit hash of it, drop duplicates inside the batch, gather the statistics that imputation and
   z-scores need, and append the rows to one of ``P = ceil(2 * rows / batch_rows)`` bucket files
   (Arrow IPC) chosen by ``hash % P``. Equal keys always land in the same bucket;
2. read one bucket at a time (about ``batch_rows / 2`` rows), drop the duplicates it holds, fill
   missing values, add features, write the result.

So no more than about one batch of rows is in memory at any time, whatever the input size; the
statistics are a few numbers per column (value counts for ``mode`` columns). Inputs of at most
``batch_rows`` rows skip the buckets. Row order is not kept.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tributary.ml.pipeline.specs import NUMERIC_TYPES, output_columns
from tributary.ml.pipeline.staging import StageWriter, iter_batches

log = logging.getLogger(__name__)

RECORD_KEY = "record_key"
ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_(), "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def typed_schema(columns: Sequence[tuple[str, str]], *, with_key: bool = False) -> pa.Schema:
    fields = [(name, ARROW_TYPES[kind]) for name, kind in columns]
    if with_key:
        fields.append((RECORD_KEY, pa.string()))
    return pa.schema(fields)


def to_frame(data: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping nullable ints/bools (no float upcast) and dates as datetime64."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return data.to_pandas(types_mapper=mapping.get, date_as_object=False)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    columns = []
    for column in schema:
        array = pa.array(frame[column.name], from_pandas=True)
        if array.type != column.type:
            # datetime64 -> date32 / timestamp[us] truncates on purpose; other types are already right.
            array = array.cast(column.type, safe=not pa.types.is_temporal(column.type))
        columns.append(array)
    return pa.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------- typing
def _cast(values: pd.Series, kind: str) -> pd.Series:
    if kind == "string":
        return values.astype("string")
    if kind == "float":
        number = pd.to_numeric(values, errors="coerce").astype("float64")
        return number.where(np.isfinite(number))
    if kind == "int":
        number = pd.to_numeric(values, errors="coerce").astype("float64")
        whole = np.isfinite(number) & (number == np.round(number)) & (number.abs() < 2**62)
        return number.where(whole).astype("Int64")
    if kind == "bool":
        text = values.astype("string").str.strip().str.lower()
        return text.map(lambda v: True if v in _TRUE else False if v in _FALSE else None,
                        na_action="ignore").astype("boolean")
    if kind == "date":
        return pd.to_datetime(values, errors="coerce", format="ISO8601").dt.tz_localize(None).dt.normalize()
    if kind == "timestamp":
        return pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    raise ValueError(f"unknown column type {kind!r}")


def cast_frame(raw: pd.DataFrame, columns: Sequence[Mapping[str, str]]) -> tuple[pd.DataFrame, pd.Series]:
    """Cast raw string columns to the spec's types.

    Returns the typed frame (nullable dtypes) and, per row, the type errors (``None`` when the row is
    fine). Empty strings are missing values, not errors.
    """
    typed: dict[str, pd.Series] = {}
    errors = pd.Series([None] * len(raw), index=raw.index, dtype=object)
    for column in columns:
        name, kind = column["name"], column["type"]
        values = raw[name].astype("string")
        values = values.where(values.str.strip() != "")
        cast = _cast(values, kind)
        bad = values.notna() & cast.isna()
        if bad.any():
            for index, value in values[bad].items():
                message = f"type: {name}={value[:80]!r} is not {kind}"
                errors.at[index] = message if errors.at[index] is None else f"{errors.at[index]}; {message}"
        typed[name] = cast
    return pd.DataFrame(typed, index=raw.index), errors


# --------------------------------------------------------------------------- keys
def record_keys(frame: pd.DataFrame, key: Sequence[str], columns: Sequence[str]) -> tuple[pd.Series, np.ndarray]:
    """(record key strings, uint64 hashes). The key columns joined by ``|``, or a hash of all columns."""
    hashed = pd.util.hash_pandas_object(frame[list(key or columns)], index=False).to_numpy(dtype=np.uint64)
    if key:
        text = frame[key[0]].astype("string").fillna("")
        for name in key[1:]:
            text = text + "|" + frame[name].astype("string").fillna("")
        return text.astype(object), hashed
    return pd.Series([f"{h:016x}" for h in hashed.tolist()], index=frame.index, dtype=object), hashed


# --------------------------------------------------------------------------- statistics for imputation
@dataclass
class ColumnStats:
    """Running statistics of the columns that imputation or z-scores need."""

    numeric: dict[str, list[float]] = field(default_factory=dict)  # name -> [count, sum, sum of squares]
    counts: dict[str, pd.Series] = field(default_factory=dict)  # name -> value counts (mode columns)

    def update(self, frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> None:
        for name in numeric:
            values = frame[name].astype("Float64").dropna().to_numpy(dtype="float64")
            acc = self.numeric.setdefault(name, [0.0, 0.0, 0.0])
            acc[0] += values.size
            acc[1] += float(values.sum())
            acc[2] += float(np.square(values).sum())
        for name in categorical:
            counts = frame[name].value_counts(dropna=True)
            self.counts[name] = counts if name not in self.counts else self.counts[name].add(counts, fill_value=0)

    def mean(self, name: str) -> float | None:
        count, total, _ = self.numeric.get(name, [0.0, 0.0, 0.0])
        return total / count if count else None

    def std(self, name: str) -> float | None:
        count, total, squares = self.numeric.get(name, [0.0, 0.0, 0.0])
        if count < 2:
            return None
        variance = max(0.0, (squares - total * total / count) / (count - 1))
        return math.sqrt(variance)

    def mode(self, name: str) -> Any:
        counts = self.counts.get(name)
        return None if counts is None or counts.empty else counts.sort_values(ascending=False, kind="stable").index[0]


def _strategies(spec: Mapping[str, Any]) -> dict[str, Any]:
    missing = spec["processing"]["missing"]
    default = missing.get("default", "keep")
    return {c["name"]: missing["columns"].get(c["name"], default) for c in spec["columns"]}


def needed_stats(spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(numeric columns needing mean/std, columns needing value counts)."""
    types = {c["name"]: c["type"] for c in spec["columns"]}
    numeric = {name for name, s in _strategies(spec).items() if s == "mean" and types[name] in NUMERIC_TYPES}
    numeric |= {f["column"] for f in spec["processing"]["features"] if f["op"] == "zscore"}
    categorical = {name for name, s in _strategies(spec).items() if s == "mode"}
    return sorted(numeric), sorted(categorical)


def fill_missing(frame: pd.DataFrame, spec: Mapping[str, Any], stats: ColumnStats) -> tuple[pd.DataFrame, int]:
    """Apply each column's missing-value strategy; returns the frame and how many rows ``drop`` removed."""
    types = {c["name"]: c["type"] for c in spec["columns"]}
    drop: list[str] = []
    for name, strategy in _strategies(spec).items():
        if not frame[name].isna().any():
            continue
        if strategy == "drop":
            drop.append(name)
            continue
        if isinstance(strategy, Mapping):
            value: Any = strategy["value"]
        elif strategy == "mean" and types[name] in NUMERIC_TYPES:
            value = stats.mean(name)
            if value is not None and types[name] == "int":
                value = round(value)
        elif strategy == "zero":
            value = {"int": 0, "float": 0.0, "string": "", "bool": False}.get(types[name])
        elif strategy == "mode":
            value = stats.mode(name)
        else:
            continue
        if value is not None:
            frame[name] = frame[name].fillna(_cast(pd.Series([value]), types[name]).iloc[0])
    if not drop:
        return frame, 0
    keep = frame[drop].notna().all(axis=1)
    return frame[keep], int((~keep).sum())


# --------------------------------------------------------------------------- features
def add_features(frame: pd.DataFrame, features: Sequence[Mapping[str, Any]], stats: ColumnStats) -> pd.DataFrame:
    """Derived columns, in spec order (a feature may use an earlier one). Undefined results are null."""
    for feature in features:
        name, op = feature["name"], feature["op"]
        if op in ("ratio", "difference", "product"):
            left, right = (frame[c].astype("Float64").astype("float64") for c in feature["columns"])
            with np.errstate(divide="ignore", invalid="ignore"):
                value = {"ratio": left / right, "difference": left - right, "product": left * right}[op]
            frame[name] = value.where(np.isfinite(value))
        elif op == "log1p":
            source = frame[feature["column"]].astype("Float64").astype("float64")
            frame[name] = np.log1p(source.where(source > -1))
        elif op == "zscore":
            source = frame[feature["column"]].astype("Float64").astype("float64")
            mean, std = stats.mean(feature["column"]), stats.std(feature["column"])
            frame[name] = (source - mean) / std if mean is not None and std else source * 0.0
        elif op == "map":
            mapping = {str(k): str(v) for k, v in feature["mapping"].items()}
            keys = frame[feature["column"]].astype("string")
            frame[name] = keys.map(mapping.get, na_action="ignore").astype("string")
    return frame


# --------------------------------------------------------------------------- the process step
@dataclass
class ProcessResult:
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    dropped_missing: int = 0
    batches_read: int = 0
    buckets: int = 1
    max_rows_in_memory: int = 0  # the largest frame materialized at once (the memory bound, in rows)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _bucket_count(rows: int, batch_rows: int) -> int:
    return 1 if rows <= batch_rows else math.ceil(2 * rows / batch_rows)


def process_stage(validated: Path, output: Path, spec: Mapping[str, Any],
                  progress: Callable[[str], None] | None = None) -> ProcessResult:
    """Dedupe, fill missing values and add features from ``validated`` into ``output`` (see module doc)."""
    progress = progress or log.info
    batch_rows = int(spec["processing"]["batch_rows"])
    names = [c["name"] for c in spec["columns"]]
    key = list(spec.get("key", []))
    numeric, categorical = needed_stats(spec)
    out_schema = typed_schema(output_columns(spec), with_key=True)
    in_schema = typed_schema([(c["name"], c["type"]) for c in spec["columns"]], with_key=True)
    import pyarrow.parquet as pq

    total = pq.ParquetFile(str(validated)).metadata.num_rows
    result = ProcessResult(buckets=_bucket_count(total, batch_rows))
    stats = ColumnStats()
    started = time.monotonic()

    def finish(frame: pd.DataFrame, writer: StageWriter) -> None:
        before = len(frame)
        frame = frame.drop_duplicates(RECORD_KEY, keep="first")
        result.duplicates += before - len(frame)
        frame, dropped = fill_missing(frame, spec, stats)
        result.dropped_missing += dropped
        frame = add_features(frame, spec["processing"]["features"], stats)
        writer.write(to_arrow(frame, out_schema))
        result.rows_out += len(frame)

    bucket_dir = output.parent / "buckets"
    with StageWriter(output, out_schema) as writer:
        if result.buckets == 1:
            frame = to_frame(pq.read_table(str(validated), columns=names))
            result.rows_in = result.max_rows_in_memory = len(frame)
            result.batches_read = 1 if len(frame) else 0
            frame[RECORD_KEY] = record_keys(frame, key, names)[0]
            stats.update(frame.drop_duplicates(RECORD_KEY), numeric, categorical)
            finish(frame, writer)
            return result

        # Pass 1: key, hash, in-batch dedupe, statistics, spill into hash buckets.
        shutil.rmtree(bucket_dir, ignore_errors=True)
        bucket_dir.mkdir(parents=True)
        spills: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        sinks: dict[int, Any] = {}
        try:
            for batch in iter_batches(validated, batch_rows, columns=names):
                frame = to_frame(batch)
                result.rows_in += len(frame)
                result.batches_read += 1
                result.max_rows_in_memory = max(result.max_rows_in_memory, len(frame))
                frame[RECORD_KEY], hashes = record_keys(frame, key, names)
                unique = ~frame[RECORD_KEY].duplicated()
                result.duplicates += int((~unique).sum())
                frame, hashes = frame[unique.to_numpy()], hashes[unique.to_numpy()]
                stats.update(frame, numeric, categorical)
                bucket_of = (hashes % np.uint64(result.buckets)).astype(np.int64)
                order = np.argsort(bucket_of, kind="stable")
                if not len(frame):
                    continue
                table = to_arrow(frame.iloc[order], in_schema)
                sorted_buckets = bucket_of[order]
                bounds = np.searchsorted(sorted_buckets, np.arange(result.buckets + 1))
                for bucket in np.unique(sorted_buckets).tolist():
                    if bucket not in spills:
                        sinks[bucket] = pa.OSFile(str(bucket_dir / f"{bucket:05d}.arrow"), "wb")
                        spills[bucket] = pa.ipc.new_stream(sinks[bucket], in_schema)
                    spills[bucket].write_table(table.slice(bounds[bucket], bounds[bucket + 1] - bounds[bucket]))
                if result.batches_read % 10 == 0:
                    progress(f"process pass 1: {result.batches_read} batches, {result.rows_in:,} rows "
                             f"({time.monotonic() - started:.1f}s)")
        finally:
            for bucket, spill in spills.items():
                spill.close()
                sinks[bucket].close()

        # Pass 2: one bucket at a time.
        for index, path in enumerate(sorted(bucket_dir.glob("*.arrow")), start=1):
            with pa.OSFile(str(path), "rb") as source:
                frame = to_frame(pa.ipc.open_stream(source).read_all())
            result.max_rows_in_memory = max(result.max_rows_in_memory, len(frame))
            finish(frame, writer)
            path.unlink()
            if index % 20 == 0:
                progress(f"process pass 2: {index}/{len(spills)} buckets, {result.rows_out:,} rows out")
    shutil.rmtree(bucket_dir, ignore_errors=True)
    return result
