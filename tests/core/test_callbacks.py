"""Outcome callbacks against a real warehouse and a local webhook receiver."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

from tributary.core.callbacks import OutcomeRecorder
from tributary.core.errors import DataError, PermanentError, TransientError
from tributary.core.events import EventStore, event_from_context
from tributary.core.failfast import raise_classified


def _context(exc: BaseException | None, try_number: int = 1, run_id: str = "manual__1") -> dict:
    ti = SimpleNamespace(dag_id="bitcoin_settlement", task_id="broadcast", run_id=run_id, map_index=-1,
                         try_number=try_number)
    return {"ti": ti, "exception": exc}


def _failure(exc: Exception, system: str = "bitcoin") -> BaseException:
    try:
        raise_classified(exc, system)
    except BaseException as raised:
        return raised
    raise AssertionError("raise_classified did not raise")


def _rows(pg, run_id: str) -> list[dict]:
    with pg.cursor() as cur:
        cur.execute("SELECT * FROM error_events WHERE run_id = %s ORDER BY occurred_at", (run_id,))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture
def alert_to_sink(webhook_conn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIBUTARY_ALERTING", json.dumps(
        {"min_severity": "warning", "notifiers": [{"type": "log"}, {"type": "webhook", "conn_id": webhook_conn}]}))


@pytest.mark.postgres
def test_failure_is_recorded_with_its_class_and_alerted(pg, http_sink, alert_to_sink) -> None:
    exc = _failure(PermanentError("address bc1qxyz is not valid for regtest; password=hunter22"))
    OutcomeRecorder("failure", "bitcoin")(_context(exc, run_id="r-fail"))

    [row] = _rows(pg, "r-fail")
    assert row["kind"] == "failure" and row["error_class"] == "permanent" and row["severity"] == "error"
    assert (row["system"], row["dag_id"], row["task_id"], row["try_number"]) == (
        "bitcoin", "bitcoin_settlement", "broadcast", 1)
    assert row["exception_type"] == "tributary.core.errors.PermanentError"
    assert "hunter22" not in row["message"] and "password=***" in row["message"]
    assert row["alert_status"] == {"log": "sent", "webhook": "sent"}

    [alert] = http_sink.posted_json()
    assert alert["event"]["event_id"] == str(row["event_id"])
    assert alert["event"]["error_class"] == "permanent"
    assert "hunter22" not in json.dumps(alert)
    [post] = [r for r in http_sink.requests if r["method"] == "POST"]
    assert post["headers"]["Authorization"] == "Bearer sink-token-123"


@pytest.mark.postgres
def test_a_callback_that_runs_twice_writes_one_event(pg, http_sink, alert_to_sink) -> None:
    exc = _failure(DataError("3 rows failed validation", quarantined=3))
    context = _context(exc, run_id="r-twice")
    OutcomeRecorder("failure", "ml")(context)
    OutcomeRecorder("failure", "ml")(context)
    rows = _rows(pg, "r-twice")
    assert len(rows) == 1 and rows[0]["error_class"] == "data"


@pytest.mark.postgres
def test_a_failing_notifier_never_fails_the_task_nor_loses_the_event(pg, http_sink, alert_to_sink) -> None:
    http_sink.status = 500
    exc = _failure(PermanentError("rejected"))
    OutcomeRecorder("failure", "bitcoin")(_context(exc, run_id="r-notifier-down"))  # must not raise
    [row] = _rows(pg, "r-notifier-down")
    assert row["alert_status"]["log"] == "sent"
    assert row["alert_status"]["webhook"].startswith("failed: TransientError")


@pytest.mark.postgres
def test_retries_are_recorded_but_not_alerted_by_default(pg, http_sink, alert_to_sink) -> None:
    exc = TransientError("node warming up")
    OutcomeRecorder("retry", "bitcoin")(_context(exc, run_id="r-retry"))
    [row] = _rows(pg, "r-retry")
    assert (row["kind"], row["error_class"], row["severity"]) == ("retry", "transient", "warning")
    assert http_sink.posted_json() == []


@pytest.mark.postgres
def test_success_is_recorded_as_an_info_outcome(pg) -> None:
    OutcomeRecorder("success", "bitcoin")(_context(None, run_id="r-ok"))
    [row] = _rows(pg, "r-ok")
    assert (row["kind"], row["error_class"], row["severity"]) == ("success", None, "info")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.postgres
def test_events_are_spooled_when_the_warehouse_is_down_and_written_later(pg, warehouse, tmp_path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_WAREHOUSE", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": _closed_port(), "login": "x", "schema": "x"}))
    event = event_from_context(_context(_failure(PermanentError("boom")), run_id="r-spool"), "failure", "x")

    assert EventStore("down_warehouse", spool_dir=tmp_path).record(event) == "spooled"
    assert _rows(pg, "r-spool") == []
    assert (tmp_path / "error_events.jsonl").read_text().count(event.event_id) == 1

    assert EventStore("tributary_warehouse", spool_dir=tmp_path).flush_spool() == 1
    assert [str(r["event_id"]) for r in _rows(pg, "r-spool")] == [event.event_id]
    assert (tmp_path / "error_events.jsonl").read_text() == ""


@pytest.mark.unit
def test_event_ids_are_stable_per_try() -> None:
    a = event_from_context(_context(None, try_number=1), "failure")
    b = event_from_context(_context(None, try_number=1), "failure")
    c = event_from_context(_context(None, try_number=2), "failure")
    assert a.event_id == b.event_id != c.event_id
