"""DatasetSource: specs, the three kinds of source, and the holdout every model is judged on."""

from __future__ import annotations

import pytest

from tributary.core.errors import DataError, PermanentError
from tributary.ml.models.datasets import (
    LabelledData,
    ParquetSource,
    PostgresSource,
    SklearnSource,
    fingerprint,
    holdout_mask,
    source_from_spec,
)


@pytest.mark.unit
def test_the_holdout_of_a_row_does_not_depend_on_the_other_rows() -> None:
    keys = [str(i) for i in range(2000)]
    everything = dict(zip(keys, holdout_mask(keys), strict=True))
    some = keys[500:700] + keys[1900:]
    assert dict(zip(some, holdout_mask(some), strict=True)) == {k: everything[k] for k in some}
    share = sum(everything.values()) / len(keys)
    assert 0.22 < share < 0.28  # 25 % of rows, give or take the hash
    assert holdout_mask(keys) == holdout_mask(keys)


@pytest.mark.unit
def test_the_bundled_dataset_splits_into_disjoint_training_part_and_holdout() -> None:
    data = LabelledData.load(SklearnSource(dataset="wine"))
    train, holdout = data.train(), data.holdout()
    assert len(train) + len(holdout) == 178
    assert not set(train["row_id"]) & set(holdout["row_id"])
    assert set(holdout["target"]) == {0, 1, 2}
    assert "target" not in data.features and "row_id" not in data.features
    assert len(data.features) == 13
    assert fingerprint(holdout["row_id"]) == fingerprint(LabelledData.load(SklearnSource(dataset="wine"))
                                                         .holdout()["row_id"])


@pytest.mark.unit
def test_specs_round_trip_and_bad_specs_name_the_problem() -> None:
    spec = {"kind": "parquet", "path": "/data/wine", "key": "id", "target": "label", "exclude": ["ingested_at"],
            "filters": {"ds": "2026-01-01"}, "partition_column": "ds"}
    source = source_from_spec(spec)
    assert isinstance(source, ParquetSource)
    assert source_from_spec(source.to_spec()) == source
    assert source_from_spec(None) == SklearnSource(dataset="breast_cancer")
    assert isinstance(source_from_spec({"kind": "postgres", "table": "public.ml_wine"}), PostgresSource)

    for bad, message in [({"kind": "csv"}, "kind must be one of"),
                         ({"kind": "sklearn", "dataset": "mnist"}, "dataset must be one of"),
                         ({"kind": "sklearn", "path": "/x"}, r"unknown field\(s\) \['path'\]"),
                         ({"kind": "parquet"}, "need a path"),
                         ({"kind": "postgres", "table": "x; DROP TABLE y"}, "table as 'name' or 'schema.name'")]:
        with pytest.raises(PermanentError, match=message):
            source_from_spec(bad)


@pytest.mark.unit
def test_a_hive_partitioned_parquet_folder_is_read_in_batches_without_partition_columns(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame.insert(0, "id", [f"iris-{i}" for i in range(len(frame))])
    frame["ds"] = ["2026-01-01" if i % 3 else "2026-01-02" for i in range(len(frame))]
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), tmp_path, partition_cols=["ds"])

    source = ParquetSource(path=str(tmp_path), key="id", target="target")
    data = LabelledData.load(source)
    assert len(data.frame) == 150
    assert sorted(data.features) == sorted(load_iris(as_frame=True).data.columns)  # no "ds"
    day = source.with_filters(ds="2026-01-02")
    assert len(day.load()) == 50
    assert [len(b) for b in day.iter_batches(20)] == [20, 20, 10]
    assert source.lineage() == ("file", str(tmp_path.resolve()))
    # One snapshot to train on: the newest partition, unless a filter or the trigger names one.
    dated = ParquetSource(path=str(tmp_path), key="id", target="target", partition_column="ds")
    assert dated.partitions() == ["2026-01-01", "2026-01-02"]
    assert dict(dated.pinned().filters) == {"ds": "2026-01-02"}
    assert dict(dated.pinned("2026-01-01").filters) == {"ds": "2026-01-01"}
    assert dated.with_filters(ds="2026-01-01").pinned() == dated.with_filters(ds="2026-01-01")
    assert source.pinned() is source  # no partition column: the whole source


@pytest.mark.postgres
def test_a_warehouse_table_is_streamed_with_numeric_columns_as_floats(pg, warehouse) -> None:
    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS ml_test_source")
        cur.execute('CREATE TABLE ml_test_source (record_key text PRIMARY KEY, ds date, "width cm" numeric(6,2),'
                    " colour text, label integer)")
        cur.executemany("INSERT INTO ml_test_source VALUES (%s, %s, %s, %s, %s)",
                        [(f"k{i:02d}", "2026-01-01" if i < 7 else "2026-01-02", 1.25 * i,
                          "red" if i % 2 else None, i % 2) for i in range(10)])
    pg.commit()

    source = source_from_spec({"kind": "postgres", "table": "public.ml_test_source", "key": "record_key",
                               "target": "label", "exclude": ["ds"]})
    batches = list(source.iter_batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    frame = source.load()
    assert frame["width cm"].dtype == float
    assert frame["width cm"].tolist()[:3] == [0.0, 1.25, 2.5]
    assert source.feature_columns(frame) == ["width cm", "colour"]
    assert len(source.with_filters(ds="2026-01-02").load()) == 3
    assert source.lineage() == (f"postgres://{warehouse.host}:{warehouse.port}",
                                f"{warehouse.database}.public.ml_test_source")

    dated = source_from_spec({"kind": "postgres", "table": "ml_test_source", "key": "record_key",
                              "target": "label", "partition_column": "ds"})
    assert dated.partitions() == ["2026-01-01", "2026-01-02"]
    newest = dated.pinned()
    assert dict(newest.filters) == {"ds": "2026-01-02"} and len(newest.load()) == 3
    data = LabelledData.load(newest)
    assert data.features == ["width cm", "colour"]  # the partition column is not a feature


@pytest.mark.postgres
def test_a_partitioned_source_with_nothing_stored_is_a_data_error(pg) -> None:
    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS ml_test_empty")
        cur.execute("CREATE TABLE ml_test_empty (record_key text, ds date, x float8, label int)")
    pg.commit()
    empty = source_from_spec({"kind": "postgres", "table": "ml_test_empty", "key": "record_key",
                              "target": "label", "partition_column": "ds"})
    with pytest.raises(DataError, match="no partitions stored yet"):
        empty.pinned()
    missing = source_from_spec({"kind": "postgres", "table": "ml_test_never_created", "key": "record_key",
                                "target": "label", "partition_column": "ds"})
    with pytest.raises(DataError, match="does not exist"):
        missing.pinned()
