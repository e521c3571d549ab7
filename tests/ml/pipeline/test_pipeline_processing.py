"""Processing: typing, dedupe across batches, missing values and features, never more than a batch in memory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tributary.ml.pipeline.processing import (
    RECORD_KEY,
    cast_frame,
    process_stage,
    record_keys,
    to_arrow,
    typed_schema,
)

pytestmark = pytest.mark.unit

COLUMN_TYPES = [("id", "int"), ("sensor", "string"), ("reading", "float"), ("day", "date"), ("ok", "bool")]


def _validated(path: Path, frame: pd.DataFrame, row_group: int) -> Path:
    """Write ``frame`` as the validate step would (typed Parquet, one row group per batch)."""
    schema = typed_schema(COLUMN_TYPES)
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, len(frame), row_group):
            writer.write_table(to_arrow(frame.iloc[start:start + row_group], schema))
    return path


def _frame(ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": pd.array(ids, dtype="Int64"),
        "sensor": pd.array(["abcd"[i % 4] for i in ids], dtype="string"),
        "reading": [float(i % 97) if i % 11 else np.nan for i in ids],
        "day": pd.to_datetime(["2026-03-01"] * len(ids)),
        "ok": pd.array([None if i % 13 == 0 else i % 2 == 0 for i in ids], dtype="boolean"),
    })


def test_cast_frame_reports_each_bad_value() -> None:
    raw = pd.DataFrame({"id": ["1", "2.5", "x", ""], "sensor": ["a", "", None, "b"],
                        "reading": ["1e3", "nan?", "inf", " "], "day": ["2026-03-01", "2026-02-30", None, "2026-03-01"],
                        "ok": ["yes", "0", "maybe", None]})
    typed, errors = cast_frame(raw, [{"name": n, "type": t} for n, t in COLUMN_TYPES])
    assert typed["id"].tolist()[:1] == [1] and typed["id"].isna().tolist() == [False, True, True, True]
    assert typed["reading"].tolist()[0] == 1000.0 and typed["ok"].tolist()[:2] == [True, False]
    assert errors.tolist() == [
        None,
        "type: id='2.5' is not int; type: reading='nan?' is not float; type: day='2026-02-30' is not date",
        "type: id='x' is not int; type: reading='inf' is not float; type: ok='maybe' is not bool",
        None,  # empty strings and None are missing values, not errors
    ]


def test_large_input_is_deduped_in_hash_buckets_without_holding_more_than_a_batch(
        tmp_path: Path, load: Any, sensor_spec: Any) -> None:
    batch_rows = 500
    ids = list(range(4000))
    ids += [i * 7 % 4000 for i in range(600)]  # 600 duplicates, spread over other batches than their originals
    frame = _frame(ids)
    validated = _validated(tmp_path / "validated.parquet", frame, row_group=batch_rows)
    spec = load(sensor_spec(processing={"batch_rows": batch_rows}))

    result = process_stage(validated, tmp_path / "processed.parquet", spec.as_dict())

    assert result.rows_in == 4600 and result.batches_read == math.ceil(4600 / batch_rows) == 10
    assert result.buckets == math.ceil(2 * 4600 / batch_rows) == 19
    assert result.max_rows_in_memory <= batch_rows  # the memory bound, in rows
    assert result.duplicates == 600 and result.rows_out == 4000
    out = pq.read_table(tmp_path / "processed.parquet").to_pandas()
    assert sorted(out["id"].tolist()) == list(range(4000))
    assert out[RECORD_KEY].is_unique and set(out[RECORD_KEY]) == {str(i) for i in range(4000)}

    # Statistics for imputation come from the validated rows (before dedupe), one pass, streamed.
    expected_mean = frame["reading"].mean()
    filled = out.set_index("id").loc[[11, 22, 33], "reading"]
    assert filled.tolist() == pytest.approx([expected_mean] * 3)
    assert out["ok"].notna().all() and bool(out.set_index("id").loc[26, "ok"]) is True  # {value: true} filled
    row = out.set_index("id").loc[5]
    assert row["reading_log"] == pytest.approx(math.log1p(5.0))
    assert row["sensor_name"] == "beta" and pd.isna(out.set_index("id").loc[3, "sensor_name"])
    std = frame["reading"].std()
    assert row["reading_z"] == pytest.approx((5.0 - expected_mean) / std)


def test_small_input_takes_the_single_bucket_path_with_the_same_result(tmp_path: Path, load: Any,
                                                                        sensor_spec: Any) -> None:
    frame = _frame([1, 2, 3, 2, 1, 4])
    validated = _validated(tmp_path / "validated.parquet", frame, row_group=6)
    spec = load(sensor_spec(processing={"batch_rows": 100, "missing": {"default": "drop"}}))
    result = process_stage(validated, tmp_path / "processed.parquet", spec.as_dict())
    assert (result.buckets, result.batches_read, result.duplicates) == (1, 1, 2)
    assert result.rows_out == 4 and result.dropped_missing == 0
    out = pq.read_table(tmp_path / "processed.parquet")
    assert out.schema.field("day").type == pa.date32() and out.schema.field("id").type == pa.int64()
    assert sorted(out.column("id").to_pylist()) == [1, 2, 3, 4]


def test_record_key_without_natural_key_is_a_content_hash() -> None:
    frame = pd.DataFrame({"a": [1.0, 1.0, 2.0], "b": ["x", "x", "x"]})
    keys, hashes = record_keys(frame, [], ["a", "b"])
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) == 16 and hashes.dtype == np.uint64
