"""The settlement ledger: ``btc_settlements`` (one row per settlement) and ``btc_settlement_events``
(append-only, every step), include/sql/bitcoin/003_settlement.sql.

:class:`SettlementLedger` is the only code that writes SQL for settlements; the settlement workflow
(:mod:`tributary.bitcoin.settlement`) decides what to write and when to commit. It reaches the
warehouse through :class:`~tributary.storage.warehouse.WarehouseHook` only. Commits are explicit
because their order is the guarantee: a signed transaction is committed before it is broadcast.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

COLUMNS = ("id", "status", "network", "wallet", "payouts", "payouts_sha256", "total_sats", "fee_policy",
           "confirmations_required", "bump_after_minutes", "txid", "raw_tx", "replaced_txids", "fee_sats",
           "confirmations", "block_hash", "block_height", "source", "dag_run_id", "last_error", "created_at",
           "updated_at", "signed_at", "broadcast_at", "last_bump_at", "confirmed_at")
_JSON_COLUMNS = ("payouts", "fee_policy")
# jsonb read as text and decoded here: whether a driver decodes jsonb itself, a row whose fee_policy is
# the JSON string "fast" must come back as that string, not as something to decode again.
_SELECT = ", ".join(f"{c}::text" if c in _JSON_COLUMNS else c for c in COLUMNS)
_EVENT_COLUMNS = ("event", "status", "txid", "detail", "dag_run_id", "at")


class Clock(enum.Enum):
    """A timestamp the database sets: ``ledger.update(sid, signed_at=NOW)`` writes SQL ``now()``, so
    every time in the ledger comes from one clock (the database's), never a worker's."""

    NOW = "now()"


NOW = Clock.NOW


def _row(values: Sequence[Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    row = dict(zip(COLUMNS, values, strict=True))
    for key in _JSON_COLUMNS:  # selected as text (see _SELECT): a JSON string value stays a string
        if row[key] is not None:
            row[key] = json.loads(row[key])
    row["replaced_txids"] = list(row["replaced_txids"] or [])
    return row


class SettlementLedger:
    """The settlement tables over one warehouse connection (``conn``, DB-API).

    Open one with ``with SettlementLedger.session(conn_id) as ledger:``; the workflow commits at the
    points that matter (:meth:`commit`), and the session rolls back whatever a failure left open.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def session(cls, conn_id: str = WAREHOUSE_CONN_ID) -> Iterator[SettlementLedger]:
        from tributary.storage.warehouse import WarehouseHook

        with WarehouseHook(conn_id).session() as conn:
            yield cls(conn)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    # ----------------------------------------------------------------- settlements
    def load(self, settlement_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        """The row as a dict (jsonb decoded, ``replaced_txids`` a list); ``lock``: ``FOR UPDATE``."""
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {_SELECT} FROM btc_settlements WHERE id = %s"
                        + (" FOR UPDATE" if lock else ""), (settlement_id,))
            return _row(cur.fetchone())

    def insert(self, settlement_id: str, *, status: str, network: str, payouts: Any, fee_policy: Any,
               confirmations_required: int, run_id: str | None, wallet: str | None = None,
               payouts_sha256: str | None = None, total_sats: int | None = None,
               bump_after_minutes: float | None = None, last_error: str | None = None) -> bool:
        """Register a settlement that came over REST; False when the id already exists (left as it is)."""
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO btc_settlements (id, status, network, wallet, payouts, payouts_sha256,"
                        " total_sats, fee_policy, confirmations_required, bump_after_minutes, source, dag_run_id,"
                        " last_error)"
                        " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s, 'rest', %s, %s)"
                        " ON CONFLICT (id) DO NOTHING",
                        (settlement_id, status, network, wallet, json.dumps(payouts, default=str), payouts_sha256,
                         total_sats, json.dumps(fee_policy, default=str), confirmations_required,
                         bump_after_minutes, run_id, last_error))
            return cur.rowcount == 1

    def update(self, settlement_id: str, **fields: Any) -> None:
        """Set columns (``NOW`` for the database's clock); ``updated_at`` always moves."""
        if not fields:
            return
        assignments, values = [], []
        for key, value in fields.items():
            if key not in COLUMNS:
                raise KeyError(key)
            if value is NOW:
                assignments.append(f"{key} = now()")
                continue
            if key in _JSON_COLUMNS:
                assignments.append(f"{key} = %s::jsonb")
                value = json.dumps(value)
            else:
                assignments.append(f"{key} = %s")
            values.append(value)
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE btc_settlements SET {', '.join(assignments)}, updated_at = now() WHERE id = %s",
                        (*values, settlement_id))

    def fail(self, settlement_id: str, error: BaseException, run_id: str | None) -> None:
        """Mark a settlement failed — only while nothing was signed — record why, and commit.

        Whatever the failing step left uncommitted is rolled back first.
        """
        from tributary.core.errors import classify

        self.rollback()
        row = self.load(settlement_id, lock=True)
        if row is None or row["status"] != "pending" or row["raw_tx"]:
            self.rollback()  # a signed transaction may be out there: such a row is never marked failed here
            return
        classification = classify(error)
        message = f"[{classification.error_class}] {error}"[:2000]
        self.update(settlement_id, status="failed", last_error=message, dag_run_id=run_id)
        self.record_event(settlement_id, "failed", status="failed", txid=row["txid"], run_id=run_id,
                          error=message, reason=classification.reason)
        self.commit()

    def pending_ids(self, limit: int) -> list[str]:
        """Rows other systems inserted and no run picked up yet, oldest first."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM btc_settlements WHERE status = 'pending' ORDER BY created_at, id LIMIT %s",
                        (limit,))
            return [r[0] for r in cur.fetchall()]

    def signed_ids(self, wallet: str | None, *, exclude: str) -> list[str]:
        """Settlements of ``wallet`` whose signed transaction was never broadcast (oldest first)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM btc_settlements WHERE status = 'signed' AND wallet IS NOT DISTINCT FROM %s"
                        " AND id <> %s ORDER BY signed_at", (wallet, exclude))
            return [r[0] for r in cur.fetchall()]

    def known_txids(self) -> set[str]:
        """Every txid a settlement owns, current or replaced."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT txid FROM btc_settlements WHERE txid IS NOT NULL"
                        " UNION SELECT unnest(replaced_txids) FROM btc_settlements")
            return {r[0] for r in cur.fetchall()}

    @contextmanager
    def wallet_lock(self, wallet: str | None) -> Iterator[None]:
        """One funding+broadcast at a time per wallet: two settlements must never select the same coins.

        A session-level advisory lock (it outlives the commits made while it is held).
        """
        key = f"btc_settlement_wallet:{wallet or ''}"
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        self.commit()
        try:
            yield
        finally:
            self.rollback()
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            self.commit()

    # ----------------------------------------------------------------- events
    def record_event(self, settlement_id: str, event: str, *, status: str | None = None, txid: str | None = None,
                     run_id: str | None = None, **detail: Any) -> None:
        """Append to the settlement's history (committed with the step it belongs to) and log it."""
        text = json.dumps(detail, default=str)
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO btc_settlement_events (settlement_id, event, status, txid, detail, dag_run_id)"
                        " VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
                        (settlement_id, event, status, txid, text, run_id))
        log.info("settlement %s: %s%s%s%s", settlement_id, event, f" -> {status}" if status else "",
                 f" txid {txid}" if txid else "", f" {text}" if detail else "")

    def events(self, settlement_id: str) -> list[dict[str, Any]]:
        """The settlement's history, oldest first."""
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(_EVENT_COLUMNS)} FROM btc_settlement_events"
                        " WHERE settlement_id = %s ORDER BY id", (settlement_id,))
            return [dict(zip(_EVENT_COLUMNS, r, strict=True)) for r in cur.fetchall()]
