"""The ``stacks_transactions`` ledger (include/sql/stacks/001_stacks.sql): one row per request id.

A DB-API connection (psycopg 3 or psycopg2) is passed in; every write commits, because the row
must be durable before the transaction it describes leaves for the node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

COLUMNS = ("request_id", "action", "network", "sender", "contract_id", "function_name", "args", "nonce", "fee",
           "txid", "raw_tx", "status", "tx_status", "result", "result_repr", "block_height", "index_block_hash",
           "error", "dag_run_id")
FINAL_STATUSES = frozenset({"confirmed", "failed", "rejected"})


def _row(cur: Any) -> dict[str, Any] | None:
    row = cur.fetchone()
    if row is None:
        return None
    record = dict(zip(COLUMNS, row, strict=True))
    record["raw_tx"] = bytes(record["raw_tx"]) if record["raw_tx"] is not None else None
    for key in ("args", "result"):
        if isinstance(record[key], str):
            record[key] = json.loads(record[key])
    return record


def get(conn: Any, request_id: str) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM stacks_transactions WHERE request_id = %s", (request_id,))
        record = _row(cur)
    conn.commit()
    return record


def insert_signed(conn: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """Insert a signed, not yet broadcast transaction; when the request id exists, return the stored row."""
    values = dict(record)
    values["args"] = json.dumps(values.get("args") or [])
    values["status"] = "signed"
    names = ("request_id", "action", "network", "sender", "contract_id", "function_name", "args", "nonce", "fee",
             "txid", "raw_tx", "status", "dag_run_id")
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO stacks_transactions ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
            " ON CONFLICT (request_id) DO NOTHING",
            [values.get(n) for n in names[:6]] + [values["args"]] + [values.get(n) for n in names[7:]],
        )
    conn.commit()
    stored = get(conn, str(record["request_id"]))
    assert stored is not None
    return stored


def update(conn: Any, request_id: str, **fields: Any) -> dict[str, Any]:
    allowed = {"status", "tx_status", "result", "result_repr", "block_height", "index_block_hash", "error"}
    unknown = set(fields) - allowed
    if unknown:
        raise KeyError(f"not updatable: {sorted(unknown)}")
    if "result" in fields and fields["result"] is not None:
        fields["result"] = json.dumps(fields["result"])
    assignments = ", ".join(f"{name} = %s" for name in fields)
    with conn.cursor() as cur:
        cur.execute(f"UPDATE stacks_transactions SET {assignments}, updated_at = now() WHERE request_id = %s",
                    [*fields.values(), request_id])
    conn.commit()
    stored = get(conn, request_id)
    assert stored is not None
    return stored


def summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What may go to XCom: everything but the raw transaction bytes."""
    return {k: v for k, v in record.items() if k != "raw_tx"}
