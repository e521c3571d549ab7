"""A corrupt line in the error-event spool never holds back the events behind it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tributary.core.errors import PermanentError
from tributary.core.events import EventStore, event_from_context
from tributary.core.failfast import ClassifiedFailure, raise_classified

pytestmark = pytest.mark.postgres


def _event(run_id: str):
    try:
        raise_classified(PermanentError("boom"), "platform")
    except ClassifiedFailure as exc:
        ti = SimpleNamespace(dag_id="spool_test", task_id="t", run_id=run_id, map_index=-1, try_number=1)
        return event_from_context({"ti": ti, "exception": exc}, "failure", "platform")
    raise AssertionError("unreachable")


def test_an_unreadable_spool_line_goes_to_the_dead_letter_file_and_the_rest_is_stored(pg, tmp_path, caplog) -> None:
    first, second, third = _event("spool-1"), _event("spool-2"), _event("spool-3")
    spool = tmp_path / "error_events.jsonl"
    spool.write_text("\n".join([
        json.dumps(first.as_dict()),
        '{"event_id": "torn write', # a line cut short by a crash
        json.dumps({"unexpected": "shape"}),
        json.dumps(second.as_dict()),
    ]) + "\n")

    store = EventStore("tributary_warehouse", spool_dir=tmp_path)
    assert store.record(third) == "stored"

    with pg.cursor() as cur:
        cur.execute("SELECT run_id FROM error_events WHERE dag_id = 'spool_test' ORDER BY run_id")
        assert [r[0] for r in cur.fetchall()] == ["spool-1", "spool-2", "spool-3"]
    assert spool.read_text() == ""
    dead = store.dead_letter_path.read_text().splitlines()
    assert dead == ['{"event_id": "torn write', '{"unexpected": "shape"}']
    assert "unreadable" in caplog.text and "line 2" in caplog.text

    # The next drain finds nothing left to move.
    assert store.flush_spool() == 0
    assert store.dead_letter_path.read_text().splitlines() == dead
