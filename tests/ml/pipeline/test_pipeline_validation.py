"""Validation: bad rows are quarantined with their reasons, good rows continue, a bad batch fails as a data error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tributary.core.errors import DataError, ErrorClass
from tributary.core.failfast import ClassifiedFailure

GOOD = ["1,a,10.5,2026-03-01,true", "2,b,20,2026-03-01,false", "3,c,0,2026-03-01,", "4,a,,2026-03-01,yes",
        "5,b,99.9,2026-03-02,no", "6,c,42,2026-03-01,1", "7,a,5,2026-03-01,0"]
BAD = {
    "x8,a,1,2026-03-01,true": "type: id='x8' is not int",
    "9,a,150,2026-03-01,true": "expect_column_values_to_be_between(reading): reading=150.0",
    "10,z,1,2026-03-01,true": "expect_column_values_to_be_in_set(sensor): sensor='z'",
    "11,,1,2026-03-01,true": "expect_column_values_to_not_be_null(sensor)",
    "12,a,1,March 1st,true": "type: day='March 1st' is not date",
    ",a,1,2026-03-01,true": "key_null: key column id is empty",
    "13,a,1": "malformed_csv_row: expected 5 fields, got 3",
}


def _land(data_dir: Path, lines: list[str], partition: str = "2026-03-01") -> None:
    folder = data_dir / "landing" / "sensors" / partition
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "readings.csv").write_text("id,sensor,reading,day,ok\n" + "\n".join(lines) + "\n")


def _collect_and_validate(spec: Any, make_context: Any, max_failure_rate: float | None = None) -> dict[str, Any]:
    from tributary.ml.pipeline.operators import CollectOperator, ValidateOperator

    dag_id = f"ml_pipeline_{spec.name}"
    manifest = CollectOperator(task_id="collect", spec=spec.as_dict(),
                               source={**spec.source, "path": "sensors/2026-03-01/*.csv"}
                               ).execute(make_context("collect", dag_id=dag_id))
    validate = ValidateOperator(task_id="validate", spec=spec.as_dict(), manifest=manifest,
                                max_failure_rate=max_failure_rate)
    return validate.execute(make_context("validate", dag_id=dag_id))


def _quarantined(pg: Any, source: str = "ml_pipeline_sensors") -> dict[str, str]:
    with pg.cursor() as cur:
        cur.execute("SELECT record_key, reason FROM quarantine WHERE source = %s AND partition_key = '2026-03-01'",
                    (source,))
        rows = dict(cur.fetchall())
    pg.commit()
    return rows


@pytest.mark.postgres
def test_bad_rows_are_quarantined_with_reasons_and_good_rows_continue(
        data_dir: Path, load: Any, sensor_spec: Any, make_context: Any, pg: Any, reports: Path) -> None:
    _land(data_dir, GOOD + list(BAD))
    spec = load(sensor_spec())
    result = _collect_and_validate(spec, make_context)

    assert result["rows"] == len(GOOD) and result["rows_quarantined"] == len(BAD)
    assert result["dq_score"] == pytest.approx(len(GOOD) / (len(GOOD) + len(BAD)))
    validated = pq.read_table(result["validated"]).to_pylist()
    assert [r["id"] for r in validated] == [1, 2, 3, 4, 5, 6, 7]
    assert validated[3]["reading"] is None and validated[3]["ok"] is True  # typed, missing kept for processing

    quarantined = _quarantined(pg)
    assert len(quarantined) == len(BAD)
    for reason in BAD.values():
        assert any(reason in text for text in quarantined.values()), (reason, list(quarantined.values()))
    assert quarantined["readings.csv:9"].startswith("expect_column_values_to_be_between(reading): reading=150.0")
    with pg.cursor() as cur:
        cur.execute("SELECT record->>'sensor', dag_id, task_id FROM quarantine WHERE record_key = 'readings.csv:10'")
        assert cur.fetchone() == ("z", "ml_pipeline_sensors", "validate")
        cur.execute("SELECT metric, value FROM ml_metrics WHERE dag_id = 'ml_pipeline_sensors'"
                    " AND task_id = 'validate'")
        metrics = dict(cur.fetchall())
    pg.commit()
    assert metrics["rows_in"] == 14 and metrics["rows_out"] == 7 and metrics["rows_quarantined"] == 7
    assert metrics["dq_score"] == pytest.approx(0.5) and metrics["duration_s"] > 0

    report = Path(result["validation_report"])
    assert report.is_file() and report.parent.is_relative_to(reports / "ml_pipelines" / "sensors" / "2026-03-01")
    page = report.read_text()
    assert "expect_column_values_to_be_in_set(sensor)" in page and "passed" in page
    assert (report.parent / "validation.json").is_file()

    # A re-run of the partition replaces its quarantine instead of adding to it.
    _land(data_dir, [*GOOD, "9,a,150,2026-03-01,true"])
    result = _collect_and_validate(spec, make_context)
    assert result["rows_quarantined"] == 1 and list(_quarantined(pg)) == ["readings.csv:8"]


@pytest.mark.postgres
def test_a_batch_over_the_failure_threshold_fails_as_a_data_error_after_quarantining(
        data_dir: Path, load: Any, sensor_spec: Any, make_context: Any, pg: Any, reports: Path) -> None:
    _land(data_dir, GOOD + list(BAD))
    spec = load(sensor_spec())
    with pytest.raises(ClassifiedFailure) as caught:
        _collect_and_validate(spec, make_context, max_failure_rate=0.2)
    assert caught.value.classification.error_class is ErrorClass.DATA  # no retry, alerted by the callback
    assert isinstance(caught.value.__cause__, DataError)
    assert "7 of 14 records rejected (50.0% > 20.0%)" in str(caught.value)
    assert len(_quarantined(pg)) == len(BAD)  # the evidence is kept
    page = next((reports / "ml_pipelines" / "sensors" / "2026-03-01").glob("*/validation.html")).read_text()
    assert "failed:" in page


@pytest.mark.unit
def test_validate_stage_raises_data_error_itself(data_dir: Path, load: Any, sensor_spec: Any, make_context: Any,
                                                 tmp_path: Path) -> None:
    from tributary.ml.pipeline.operators import CollectOperator
    from tributary.ml.pipeline.validation import ValidationResult, validate_stage

    _land(data_dir, GOOD[:2] + list(BAD)[:3])
    spec = load(sensor_spec())
    manifest = CollectOperator(task_id="collect", spec=spec.as_dict(),
                               source={**spec.source, "path": "sensors/2026-03-01/*.csv"}
                               ).execute(make_context("collect"))
    sunk: list[Any] = []
    result = ValidationResult()
    with pytest.raises(DataError) as caught:
        validate_stage(Path(manifest["raw"]), tmp_path / "validated.parquet", spec.as_dict(), max_failure_rate=0.5,
                       quarantine=lambda rows: sunk.extend(rows) or len(rows), source_label="sensors", result=result)
    assert caught.value.quarantined == 3 and caught.value.error_class is ErrorClass.DATA
    assert [r.key for r in sunk] == ["readings.csv:3", "readings.csv:4", "readings.csv:5"]
    assert result.rows_in == 5 and result.failure.startswith("sensors batch 1: 3 of 5 records rejected")


@pytest.mark.postgres
def test_a_failed_table_level_expectation_fails_the_batch(data_dir: Path, load: Any, sensor_spec: Any,
                                                          make_context: Any, pg: Any) -> None:
    suite = {"name": "mean", "expectations": [
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "reading", "min_value": 50, "max_value": 60}},
    ]}
    _land(data_dir, GOOD)
    spec = load(sensor_spec(), suite=suite)
    with pytest.raises(ClassifiedFailure) as caught:
        _collect_and_validate(spec, make_context)
    assert caught.value.classification.reason == "batch_expectation_failed"
    assert "expect_column_mean_to_be_between(reading)" in str(caught.value)


@pytest.mark.postgres
def test_every_batch_is_validated(data_dir: Path, load: Any, sensor_spec: Any, make_context: Any, pg: Any) -> None:
    lines = [f"{i},{'abc'[i % 3]},{i % 100},2026-03-01,true" for i in range(1, 251)]
    lines[199] = "200,a,-5,2026-03-01,true"  # in the last batch
    _land(data_dir, lines)
    spec = load(sensor_spec(processing={"batch_rows": 100}))
    result = _collect_and_validate(spec, make_context)
    assert result["rows"] == 249 and list(_quarantined(pg)) == ["readings.csv:200"]
    document = Path(result["validation_report"]).with_suffix(".json").read_text()
    assert '"batch": 3' in document


@pytest.mark.postgres
def test_a_batch_with_nothing_valid_left_is_all_quarantined(data_dir: Path, load: Any, sensor_spec: Any,
                                                            make_context: Any, pg: Any) -> None:
    _land(data_dir, ["x,a,1,2026-03-01,true", "1,a,1", "2,a,two,2026-03-01,true"])
    spec = load(sensor_spec())
    result = _collect_and_validate(spec, make_context, max_failure_rate=1.0)
    assert (result["rows"], result["rows_quarantined"], result["dq_score"]) == (0, 3, 0.0)
    assert len(_quarantined(pg)) == 3
