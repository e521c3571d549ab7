"""Analysis: statistics and drift against the previous partition, with a report of charts per run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tributary.ml.pipeline.analysis import profile, psi
from tributary.ml.pipeline.processing import RECORD_KEY, to_arrow, typed_schema
from tributary.ml.pipeline.specs import output_columns
from tributary.ml.pipeline.storage import replace_partition


@pytest.mark.unit
def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, 20_000)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, rng.normal(0, 1, 20_000)) < 0.01  # sampling noise only
    assert 0.06 < psi(reference, rng.normal(0.3, 1, 20_000)) < 0.13  # about shift², as theory says
    assert psi(reference, rng.normal(1.5, 1, 20_000)) > 1.0
    constant = np.full(100, 3.0)
    assert psi(constant, constant) == pytest.approx(0.0) and psi(constant, constant + 1) > 1.0
    assert psi(np.array([np.nan]), reference) is None


@pytest.mark.unit
def test_profile_streams_exact_statistics_and_keeps_a_bounded_sample(tmp_path: Path) -> None:
    values = np.arange(10_000, dtype="float64")
    values[::100] = np.nan
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"x": pa.array(values, from_pandas=True)}), path, row_group_size=1000)
    result = profile(path, ["x"], batch_rows=1000, sample_rows=500)
    summary = result.column_summary("x")
    present = values[~np.isnan(values)]
    assert summary["count"] == 9900 and summary["nulls"] == 100
    assert summary["mean"] == pytest.approx(present.mean()) and summary["std"] == pytest.approx(present.std(ddof=1))
    assert (summary["min"], summary["max"]) == (1.0, 9999.0)
    assert result.sample["x"].size == 500  # never more than sample_rows kept
    assert 3500 < summary["median"] < 6500  # a uniform sample of the whole file, not of its start


def _partition(spec: Any, tmp_path: Path, partition: str, shift: float, rows: int = 3000) -> None:
    rng = np.random.default_rng(abs(hash(partition)) % 1000)
    frame = pd.DataFrame({
        "id": pd.array(range(rows), dtype="Int64"), "sensor": pd.array(["a"] * rows, dtype="string"),
        "reading": rng.normal(50 + shift, 10, rows), "day": pd.to_datetime([partition] * rows),
        "ok": pd.array([True] * rows, dtype="boolean"), "reading_log": rng.normal(3, 0.1, rows),
        "reading_z": rng.normal(0, 1, rows), "sensor_name": pd.array(["alpha"] * rows, dtype="string"),
        RECORD_KEY: [str(i) for i in range(rows)],
    })
    path = tmp_path / f"{partition}.parquet"
    pq.write_table(to_arrow(frame, typed_schema(output_columns(spec.as_dict()), with_key=True)), path)
    replace_partition(path, spec.name, partition)


@pytest.mark.postgres
def test_analyze_operator_reports_drift_against_the_previous_partition(
        tmp_path: Path, load: Any, sensor_spec: Any, make_context: Any, reports: Path, pg: Any) -> None:
    from tributary.ml.pipeline.operators import AnalyzeOperator

    spec = load(sensor_spec())
    _partition(spec, tmp_path, "2026-03-01", shift=0)
    _partition(spec, tmp_path, "2026-03-02", shift=0)
    _partition(spec, tmp_path, "2026-03-03", shift=15)
    events = {"asset": [SimpleNamespace(extra={"partition": "2026-03-02"}),
                        SimpleNamespace(extra={"partition": "2026-03-03"})]}
    operator = AnalyzeOperator(task_id="analyze", spec=spec.as_dict())
    context = make_context("analyze", dag_id="ml_pipeline_sensors_analysis", run_id="asset_triggered__1",
                           triggering_asset_events=events)
    summaries = operator.execute(context)

    assert [(s["partition"], s["previous_partition"]) for s in summaries] == [
        ("2026-03-02", "2026-03-01"), ("2026-03-03", "2026-03-02")]
    stable, shifted = (json.loads(Path(s["report_json"]).read_text()) for s in summaries)
    assert stable["drift"]["reading"]["psi"] < 0.05 and stable["drifted"] == []
    assert shifted["drift"]["reading"]["psi"] > 1.0 and shifted["drifted"] == ["reading"]
    assert shifted["drift"]["reading"]["ks_pvalue"] < 1e-6 and shifted["drift"]["id"]["psi"] == pytest.approx(0.0)
    assert shifted["columns"]["reading"]["count"] == 3000
    folder = Path(summaries[1]["report_html"]).parent
    assert folder == reports / "ml_pipelines" / "sensors" / "2026-03-03" / "asset_triggered__1"
    for name in ("analysis.html", "analysis.json", "psi.png", "distributions.png"):
        assert (folder / name).stat().st_size > 500, name
    assert (folder / "psi.png").read_bytes()[:4] == b"\x89PNG"
    assert "shifted" in (folder / "analysis.html").read_text()
    with pg.cursor() as cur:
        cur.execute("SELECT metric, value FROM ml_metrics WHERE dag_id = 'ml_pipeline_sensors_analysis'")
        metrics = dict(cur.fetchall())
    pg.commit()
    assert metrics["drifted_features"] == 1 and metrics["max_psi"] > 1.0 and metrics["partitions"] == 2


@pytest.mark.postgres
def test_analyze_without_a_previous_partition_reports_statistics_only(
        tmp_path: Path, load: Any, sensor_spec: Any, make_context: Any, reports: Path, pg: Any) -> None:
    from tributary.ml.pipeline.operators import AnalyzeOperator

    spec = load(sensor_spec())
    _partition(spec, tmp_path, "2026-03-01", shift=0)
    [summary] = AnalyzeOperator(task_id="analyze", spec=spec.as_dict()).execute(make_context("analyze"))
    assert summary["partition"] == "2026-03-01" and summary["previous_partition"] is None  # the latest one
    assert summary["max_psi"] is None
    folder = Path(summary["report_html"]).parent
    assert (folder / "distributions.png").is_file() and not (folder / "psi.png").exists()
    assert "No earlier partition" in (folder / "analysis.html").read_text()
