"""Error analysis: aggregation in the warehouse, spike detection, report files."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from tributary.core.analysis import fetch_aggregates, find_spikes, summarize, write_report

DAY = date(2026, 3, 10)


def _row(day: date, failures: int, error_class: str = "transient", system: str = "bitcoin",
         dag_id: str = "bitcoin_chain_sync") -> dict:
    return {"day": day, "error_class": error_class, "system": system, "dag_id": dag_id, "failures": failures,
            "retries": 0, "successes": 0}


@pytest.mark.unit
def test_a_day_far_above_its_trailing_average_is_a_spike() -> None:
    rows = [_row(DAY - timedelta(days=d), 1) for d in range(1, 8)] + [_row(DAY, 9)]
    spikes = find_spikes(rows, DAY, window=7, factor=2.0, min_count=3)
    assert {(s.dimension, s.value) for s in spikes} == {
        ("error_class", "transient"), ("system", "bitcoin"), ("dag_id", "bitcoin_chain_sync")}
    assert spikes[0].count == 9 and spikes[0].trailing_mean == 1.0


@pytest.mark.unit
def test_steady_failures_and_small_counts_are_not_spikes() -> None:
    steady = [_row(DAY - timedelta(days=d), 5) for d in range(0, 8)]
    assert find_spikes(steady, DAY) == []
    assert find_spikes([_row(DAY, 2)], DAY, min_count=3) == []


@pytest.mark.unit
def test_summary_counts_today_by_class_system_and_dag() -> None:
    rows = [_row(DAY, 2), _row(DAY, 1, "security", "dwn", "dwn_data_replication"), _row(DAY - timedelta(1), 4)]
    summary = summarize(rows, DAY)
    assert summary["failures_today"] == 3
    assert summary["by_class_today"] == {"transient": 2, "security": 1}
    assert summary["by_system_today"] == {"bitcoin": 2, "dwn": 1}
    assert summary["failures_in_window"] == 7


@pytest.mark.unit
def test_report_is_written_with_chart_and_spikes(tmp_path) -> None:
    rows = [_row(DAY - timedelta(days=d), 1) for d in range(1, 8)] + [_row(DAY, 12, "data", "ml", "ml_pipeline")]
    result = write_report(rows, DAY, 7, tmp_path)
    report = (tmp_path / "2026-03-10" / "error_analysis.md").read_text()
    assert "# Error analysis for 2026-03-10" in report
    assert "system=ml: 12 failures on 2026-03-10" in report
    assert "![failures by class](failures.png)" in report
    png = (tmp_path / "2026-03-10" / "failures.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    assert result["failures_today"] == 12 and result["spikes"]


@pytest.mark.postgres
def test_aggregation_query_counts_events_per_day(pg) -> None:
    base = datetime(2026, 3, 10, 12, tzinfo=UTC)
    events = [("failure", "transient", base), ("failure", "transient", base), ("retry", "transient", base),
              ("success", None, base), ("failure", "data", base - timedelta(days=1)),
              ("failure", "data", base - timedelta(days=30))]  # outside the window
    dag = f"dag_{uuid.uuid4().hex[:6]}"
    with pg.cursor() as cur:
        for kind, klass, at in events:
            cur.execute(
                "INSERT INTO error_events (event_id, occurred_at, kind, error_class, severity, system, dag_id)"
                " VALUES (%s, %s, %s, %s, 'error', 'bitcoin', %s)", (str(uuid.uuid4()), at, kind, klass, dag))
    pg.commit()
    rows = [r for r in fetch_aggregates(pg, DAY, 7) if r["dag_id"] == dag]
    today = {r["error_class"]: r for r in rows if r["day"] == DAY}
    assert (today["transient"]["failures"], today["transient"]["retries"]) == (2, 1)
    assert today["none"]["successes"] == 1
    assert sum(r["failures"] for r in rows) == 3
