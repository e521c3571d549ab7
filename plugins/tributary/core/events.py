"""Outcome events (failure / retry / success of a task try) and where they are kept.

Events go to the ``error_events`` table of the warehouse. The event id is derived from the task
try, so a callback that runs twice writes one row. When the warehouse cannot be reached the event
is appended to a local spool file and written on the next successful store: an event is never lost
because a database blinked.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tributary.core.errors import Classification, ErrorClass, Severity, classify
from tributary.core.masking import mask_text
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

_EVENT_NAMESPACE = uuid.UUID("6f1d3c1e-6a51-4f7c-9a39-2b7f4d1c7e10")
_COLUMNS = ("event_id", "occurred_at", "kind", "error_class", "severity", "reason", "system", "dag_id",
            "task_id", "run_id", "map_index", "try_number", "exception_type", "message")


@dataclass
class OutcomeEvent:
    kind: str  # failure | retry | success
    severity: str
    dag_id: str
    task_id: str | None
    run_id: str | None
    map_index: int | None
    try_number: int | None
    system: str | None = None
    error_class: str | None = None
    reason: str | None = None
    exception_type: str | None = None
    message: str | None = None
    occurred_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    event_id: str = ""
    alert_status: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.event_id:
            key = "|".join(str(v) for v in (self.dag_id, self.run_id, self.task_id, self.map_index,
                                             self.try_number, self.kind))
            self.event_id = str(uuid.uuid5(_EVENT_NAMESPACE, key))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def severity_enum(self) -> Severity:
        return Severity(self.severity)


def _root_cause(exc: BaseException) -> BaseException:
    """The exception a person wants to read: our fail-fast wrappers chain the original."""
    seen = exc
    while seen.__cause__ is not None and getattr(seen, "classification", None) is not None:
        seen = seen.__cause__
    return seen


def event_from_context(context: Mapping[str, Any], kind: str, system: str | None = None) -> OutcomeEvent:
    """Build an event from an Airflow callback context (task callbacks: ``ti`` and ``exception``)."""
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "unknown")
    classification: Classification | None = None
    exception_type = message = None
    if isinstance(exc, BaseException):
        classification = classify(exc)
        system = getattr(exc, "system", None) or system
        root = _root_cause(exc)
        exception_type = f"{type(root).__module__}.{type(root).__qualname__}"
        message = mask_text(str(exc))[:4000]
    elif isinstance(exc, str):  # Airflow passes a string for some failures (e.g. zombie tasks)
        classification = Classification(ErrorClass.TRANSIENT, "airflow:task_lost", Severity.WARNING)
        message = mask_text(exc)[:4000]

    if kind == "success":
        severity = Severity.INFO
    elif kind == "retry":
        severity = Severity.WARNING if classification is None else min(
            classification.severity, Severity.WARNING, key=lambda s: s.rank)
    else:
        severity = classification.severity if classification else Severity.ERROR
    return OutcomeEvent(
        kind=kind,
        severity=str(severity),
        dag_id=str(dag_id),
        task_id=getattr(ti, "task_id", None),
        run_id=getattr(ti, "run_id", None),
        map_index=getattr(ti, "map_index", None),
        try_number=getattr(ti, "try_number", None),
        system=system,
        error_class=str(classification.error_class) if classification else None,
        reason=classification.reason if classification else None,
        exception_type=exception_type,
        message=message,
    )


def default_spool_dir() -> Path:
    base = os.environ.get("TRIBUTARY_STATE_DIR") or os.path.join(
        os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "tributary")
    return Path(base) / "spool"


class EventStore:
    """Writes events to ``error_events``; falls back to a spool file when the warehouse is down."""

    def __init__(self, conn_id: str = WAREHOUSE_CONN_ID, spool_dir: Path | None = None) -> None:
        self.conn_id = conn_id
        self.spool_path = (spool_dir or default_spool_dir()) / "error_events.jsonl"

    def _session(self) -> AbstractContextManager[Any]:
        # Imported here only to keep the Postgres provider out of DAG parsing (callbacks import us).
        from tributary.storage.warehouse import WarehouseHook

        return WarehouseHook(self.conn_id).session()

    def record(self, event: OutcomeEvent) -> str:
        """Store the event (and any spooled ones); returns ``"stored"`` or ``"spooled"``. Never raises."""
        try:
            self._drain([event])
            return "stored"
        except Exception as exc:
            log.warning("warehouse unavailable for error event %s (%s); spooled to %s", event.event_id,
                        mask_text(str(exc)), self.spool_path)
            self._spool(event)
            return "spooled"

    def update_alert_status(self, event: OutcomeEvent) -> None:
        try:
            with self._session() as conn, conn.cursor() as cur:
                cur.execute("UPDATE error_events SET alert_status = %s WHERE event_id = %s",
                            (json.dumps(event.alert_status), event.event_id))
        except Exception as exc:  # the event itself is already stored or spooled
            log.warning("could not record alert status of %s: %s", event.event_id, mask_text(str(exc)))

    def flush_spool(self) -> int:
        """Write spooled events to the warehouse; returns how many were written."""
        return self._drain([])

    # ----------------------------------------------------------------- internals
    @staticmethod
    def _insert(conn: Any, events: Iterable[OutcomeEvent]) -> None:
        rows = [(*(e.as_dict()[c] for c in _COLUMNS), json.dumps(e.alert_status)) for e in events]
        placeholders = ", ".join(["%s"] * (len(_COLUMNS) + 1))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO error_events ({', '.join(_COLUMNS)}, alert_status) VALUES ({placeholders}) "
                "ON CONFLICT (event_id) DO NOTHING",
                rows,
            )

    def _drain(self, events: list[OutcomeEvent]) -> int:
        """Insert spooled events plus ``events`` and empty the spool, under one exclusive lock so a
        concurrent callback cannot append between the read and the truncate."""
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            pending, unreadable = self._parse_spool(fh)
            batch = pending + events
            if batch:
                with self._session() as conn:
                    self._insert(conn, batch)
            if unreadable:
                with open(self.dead_letter_path, "a", encoding="utf-8") as out:
                    out.writelines(unreadable)
            fh.truncate(0)
        return len(pending)

    @property
    def dead_letter_path(self) -> Path:
        return self.spool_path.with_name("error_events.dead.jsonl")

    def _parse_spool(self, lines: Iterable[str]) -> tuple[list[OutcomeEvent], list[str]]:
        """The spooled events, and the lines that are not one (torn write, hand edit, older format):
        those go to the dead-letter file once the rest is stored, so they never hold it back."""
        events, dead = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(OutcomeEvent(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                log.warning("spooled error event on line %d of %s is unreadable (%s); moved to %s", number,
                            self.spool_path, type(exc).__name__, self.dead_letter_path)
                dead.append(line if line.endswith("\n") else line + "\n")
        return events, dead

    def _spool(self, event: OutcomeEvent) -> None:
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(event.as_dict()) + "\n")
