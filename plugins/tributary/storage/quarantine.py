"""Quarantine: where data-class failures put the records they reject.

Flows validate, quarantine what failed with the reason, let good records continue, and raise a
``DataError`` (with ``quarantined`` set) only when the failure rate passes their threshold. Rows
are keyed by (source, partition, record key), so a re-run replaces instead of duplicating.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tributary.core.errors import DataError


@dataclass(frozen=True)
class Rejected:
    key: str
    record: Mapping[str, Any]
    reason: str


def quarantine(
    conn: Any,
    source: str,
    rejected: Iterable[Rejected],
    *,
    partition: str = "",
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
) -> int:
    """Upsert rejected records; returns how many were written. Commits."""
    rows = [(source, partition, r.key, r.reason, json.dumps(r.record, default=str), dag_id, run_id, task_id)
            for r in rejected]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quarantine (source, partition_key, record_key, reason, record, dag_id, run_id, task_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (source, partition_key, record_key) DO UPDATE SET reason = EXCLUDED.reason,"
            " record = EXCLUDED.record, dag_id = EXCLUDED.dag_id, run_id = EXCLUDED.run_id,"
            " task_id = EXCLUDED.task_id, quarantined_at = now()",
            rows,
        )
    conn.commit()
    return len(rows)


def check_failure_rate(source: str, rejected: int, total: int, max_rate: float, system: str | None = None) -> None:
    """Raise a ``DataError`` when more than ``max_rate`` of the batch was rejected."""
    if total and rejected / total > max_rate:
        raise DataError(f"{source}: {rejected} of {total} records rejected ({rejected / total:.1%} > "
                        f"{max_rate:.1%}); see quarantine", system=system, reason="failure_rate",
                        quarantined=rejected, quarantine_location=f"warehouse:quarantine/{source}")
