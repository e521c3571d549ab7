"""Quarantine: rejected records are kept with their reason, once, and a bad batch is a data error."""

from __future__ import annotations

import pytest

from tributary.core.errors import DataError, ErrorClass, classify
from tributary.storage.quarantine import Rejected, check_failure_rate, quarantine


@pytest.mark.postgres
def test_rejected_records_are_kept_once_across_reruns(pg) -> None:
    rejected = [Rejected("row-1", {"amount": -5}, "amount must be >= 0"),
                Rejected("row-2", {"amount": None}, "amount is missing")]
    assert quarantine(pg, "payouts", rejected, partition="2026-03-10", run_id="r1") == 2
    assert quarantine(pg, "payouts", rejected[:1], partition="2026-03-10", run_id="r2") == 1
    with pg.cursor() as cur:
        cur.execute("SELECT record_key, reason, record, run_id FROM quarantine WHERE source = 'payouts'"
                    " ORDER BY record_key")
        rows = cur.fetchall()
    assert rows == [("row-1", "amount must be >= 0", {"amount": -5}, "r2"),
                    ("row-2", "amount is missing", {"amount": None}, "r1")]


@pytest.mark.unit
def test_a_failure_rate_above_the_threshold_is_a_data_error() -> None:
    check_failure_rate("payouts", 1, 100, max_rate=0.05)  # 1% is tolerated
    with pytest.raises(DataError) as info:
        check_failure_rate("payouts", 10, 100, max_rate=0.05, system="bitcoin")
    assert info.value.quarantined == 10
    assert classify(info.value).error_class is ErrorClass.DATA
