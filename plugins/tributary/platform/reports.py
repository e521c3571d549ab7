"""Glue between the error_analysis DAG and ``core.analysis``: params, warehouse, report folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tributary.core.analysis import fetch_aggregates, write_report
from tributary.core.errors import DataError
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)


def reports_dir() -> Path:
    """``TRIBUTARY_REPORTS_DIR``, else ``<project>/reports``."""
    default = Path(__file__).resolve().parents[3] / "reports"
    return Path(os.environ.get("TRIBUTARY_REPORTS_DIR") or default)


def report_day(params: Mapping[str, Any], logical_date: datetime | None) -> date:
    if params.get("day"):
        try:
            return date.fromisoformat(str(params["day"]))
        except ValueError as exc:
            raise DataError(f"param day={params['day']!r} is not a YYYY-MM-DD date",
                            reason="bad_param") from exc
    return (logical_date or datetime.now(UTC)).date()


def run_error_analysis(params: Mapping[str, Any], logical_date: datetime | None,
                       warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    from tributary.storage.warehouse import WarehouseHook

    day = report_day(params, logical_date)
    window = int(params.get("window_days", 7))
    with WarehouseHook(warehouse_conn_id).session() as conn:
        rows = fetch_aggregates(conn, day, window)
    summary = write_report(rows, day, window, reports_dir() / "error_analysis",
                           factor=float(params.get("spike_factor", 2.0)),
                           min_count=int(params.get("min_failures", 3)))
    log.info("error analysis %s: %d failures (%s); spikes: %s; report %s", day, summary["failures_today"],
             summary["by_class_today"] or "none", summary["spikes"] or "none", summary["report"])
    return summary
