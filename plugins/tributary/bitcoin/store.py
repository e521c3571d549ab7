"""Parsed blocks -> the warehouse tables of ``include/sql/bitcoin/001_chain.sql``, fast and idempotent.

Each :func:`load_blocks` call is one transaction: the rows are streamed with ``COPY`` into temporary
staging tables, then upserted on the natural keys (block hash; block hash + txid [+ index]).
Loading the same blocks again writes nothing; a later load may only fill what was unknown before
(a height, a fee, an input's value). :func:`delete_from_height` rolls a chain back for a reorg:
the orphaned blocks go and their transactions, inputs and outputs with them (ON DELETE CASCADE),
and checkpoints above the fork move back. Works with psycopg 3 (what
``tributary.storage.warehouse.WarehouseHook`` returns here) and psycopg2 connections.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.parse import BlockRow, InputRow, Outpoint, OutputRow, ParsedBlock, PrevoutLookup, TransactionRow
from tributary.core.errors import DataError

BLOCK_COLUMNS = ("chain", *BlockRow._fields)
TRANSACTION_COLUMNS = ("chain", "block_hash", "txid", "wtxid", "idx", "is_coinbase", "has_witness", "version",
                       "locktime", "size", "vsize", "weight", "input_count", "output_count", "output_value", "fee")
INPUT_COLUMNS = ("chain", "block_hash", "txid", "idx", "prev_txid", "prev_vout", "script_sig", "witness",
                 "sequence", "value")
OUTPUT_COLUMNS = ("chain", "block_hash", "txid", "idx", "value", "script_pubkey", "script_type", "address")

# table -> (columns, conflict key, what a repeated load may still fill in)
_TABLES: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "btc_blocks": (BLOCK_COLUMNS, "chain, hash", "height"),
    "btc_transactions": (TRANSACTION_COLUMNS, "chain, block_hash, txid", "fee"),
    "btc_inputs": (INPUT_COLUMNS, "chain, block_hash, txid, idx", "value"),
    "btc_outputs": (OUTPUT_COLUMNS, "chain, block_hash, txid, idx", None),
}


@dataclass
class ChainCounts:
    """Rows written (inserted or filled in) by a load, or removed by a rollback, per table."""

    blocks: int = 0
    transactions: int = 0
    inputs: int = 0
    outputs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --------------------------------------------------------------------------- COPY text format
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):  # witness stack: hex items, so quoting is enough inside the array literal
        return "{" + ",".join(f'"{item}"' for item in value) + "}"
    return str(value).translate(_ESCAPES)


def _lines(rows: Iterable[Sequence[Any]], prefix: str) -> Iterator[str]:
    for row in rows:
        yield prefix + "\t".join(map(_text, row)) + "\n"


def _opt(value: int | None) -> str:
    return "\\N" if value is None else str(value)


def _opt_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    return value if value.isalnum() else value.translate(_ESCAPES)


def _hex(value: str | None) -> str:
    return "\\N" if value is None else value


def _witness(stack: tuple[str, ...] | None) -> str:
    if stack is None:
        return "\\N"
    return '{"' + '","'.join(stack) + '"}' if stack else "{}"


# The per-table formatters below write what ``_lines`` writes, one f-string per row instead of a
# ``_text`` call per field (same text): hashes, txids, scripts and witness items are hex (parse.py
# writes them with ``bytes.hex``/``b2lx``) and numbers are digits, so they need no escaping; only the
# text columns (script type, address) go through the escape table, and only when not alphanumeric.
def _transaction_lines(rows: Iterable[TransactionRow], prefix: str) -> Iterator[str]:
    for r in rows:
        yield (f"{prefix}{r.block_hash}\t{r.txid}\t{r.wtxid}\t{r.idx}\t"
               f"{'t' if r.is_coinbase else 'f'}\t{'t' if r.has_witness else 'f'}\t{r.version}\t{r.locktime}\t"
               f"{r.size}\t{r.vsize}\t{r.weight}\t{r.input_count}\t{r.output_count}\t{r.output_value}\t"
               f"{_opt(r.fee)}\n")


def _input_lines(rows: Iterable[InputRow], prefix: str) -> Iterator[str]:
    for r in rows:
        yield (f"{prefix}{r.block_hash}\t{r.txid}\t{r.idx}\t{_hex(r.prev_txid)}\t"
               f"{_opt(r.prev_vout)}\t{r.script_sig}\t{_witness(r.witness)}\t{r.sequence}\t"
               f"{_opt(r.value)}\n")


def _output_lines(rows: Iterable[OutputRow], prefix: str) -> Iterator[str]:
    for r in rows:
        yield (f"{prefix}{r.block_hash}\t{r.txid}\t{r.idx}\t{r.value}\t"
               f"{r.script_pubkey}\t{_opt_text(r.script_type)}\t{_opt_text(r.address)}\n")


def _block_values(row: BlockRow) -> tuple[Any, ...]:
    time = datetime.fromtimestamp(row.time, UTC).isoformat(sep=" ")
    return row._replace(time=time)  # type: ignore[arg-type]


def _copy(cur: Any, statement: str, data: bytes) -> None:
    if hasattr(cur, "copy_expert"):  # psycopg2
        cur.copy_expert(statement, io.BytesIO(data))
    else:  # psycopg 3
        with cur.copy(statement) as copy:
            copy.write(data)


@contextmanager
def _transaction(conn: Any) -> Iterator[Any]:
    """One transaction whether or not the connection is in autocommit mode."""
    autocommit = bool(getattr(conn, "autocommit", False))
    try:
        with conn.cursor() as cur:
            if autocommit:
                cur.execute("BEGIN")
            yield cur
            if autocommit:
                cur.execute("COMMIT")
        if not autocommit:
            conn.commit()
    except BaseException:
        conn.rollback()
        raise


# --------------------------------------------------------------------------- load
def load_blocks(conn: Any, blocks: Sequence[ParsedBlock], *, chain: str,
                checkpoint_conn_id: str | None = None) -> ChainCounts:
    """Upsert ``blocks`` (one transaction); with ``checkpoint_conn_id`` also advance that checkpoint
    to the highest block of the batch, in the same transaction. Returns the rows written."""
    unique = list({b.hash: b for b in blocks}.values())
    counts = ChainCounts()
    if not unique:
        return counts
    prefix = _text(chain) + "\t"
    payload = {
        "btc_blocks": _lines((_block_values(b.block) for b in unique), prefix),
        "btc_transactions": _transaction_lines((t for b in unique for t in b.transactions), prefix),
        "btc_inputs": _input_lines((i for b in unique for i in b.inputs), prefix),
        "btc_outputs": _output_lines((o for b in unique for o in b.outputs), prefix),
    }
    with _transaction(conn) as cur:
        for table, (columns, _, _) in _TABLES.items():
            stage = f"btc_stage_{table.removeprefix('btc_')}"
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            _copy(cur, f"COPY {stage} ({', '.join(columns)}) FROM STDIN", "".join(payload[table]).encode())
        cur.execute(
            "SELECT s.height, s.hash, b.hash FROM btc_stage_blocks s JOIN btc_blocks b"
            " ON b.chain = s.chain AND b.height = s.height AND b.hash <> s.hash LIMIT 1")
        taken = cur.fetchone()
        if taken:
            raise DataError(f"chain {chain!r}: height {taken[0]} already holds block {taken[2]}, not {taken[1]};"
                            " roll back with delete_from_height before loading the new branch",
                            system=SYSTEM, reason="height_taken")
        for table, (columns, key, fillable) in _TABLES.items():
            stage = f"btc_stage_{table.removeprefix('btc_')}"
            names = ", ".join(columns)
            action = "DO NOTHING" if fillable is None else (
                f"DO UPDATE SET {fillable} = EXCLUDED.{fillable}"
                f" WHERE {table}.{fillable} IS NULL AND EXCLUDED.{fillable} IS NOT NULL")
            cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ON CONFLICT ({key}) {action}")
            setattr(counts, table.removeprefix("btc_"), max(cur.rowcount, 0))
        if checkpoint_conn_id is not None:
            known = [b.block for b in unique if b.block.height is not None]
            if known:
                top = max(known, key=lambda r: r.height or 0)
                _set_checkpoint(cur, chain, checkpoint_conn_id, int(top.height or 0), top.hash)
    return counts


# --------------------------------------------------------------------------- reorgs
def delete_from_height(conn: Any, height: int, *, chain: str) -> ChainCounts:
    """Remove blocks at ``height`` and above (and all rows derived from them); move checkpoints back."""
    counts = ChainCounts()
    gone = "SELECT hash FROM btc_blocks WHERE chain = %(chain)s AND height >= %(height)s"
    params = {"chain": chain, "height": height}
    with _transaction(conn) as cur:
        cur.execute(
            f"SELECT (SELECT count(*) FROM btc_transactions WHERE chain = %(chain)s AND block_hash IN ({gone})),"
            f" (SELECT count(*) FROM btc_inputs WHERE chain = %(chain)s AND block_hash IN ({gone})),"
            f" (SELECT count(*) FROM btc_outputs WHERE chain = %(chain)s AND block_hash IN ({gone}))", params)
        counts.transactions, counts.inputs, counts.outputs = (int(v) for v in cur.fetchone())
        cur.execute("DELETE FROM btc_blocks WHERE chain = %(chain)s AND height >= %(height)s", params)
        counts.blocks = cur.rowcount
        cur.execute(
            "UPDATE btc_sync_checkpoint c SET height = b.height, hash = b.hash, updated_at = now()"
            " FROM btc_blocks b WHERE c.chain = %(chain)s AND c.height >= %(height)s"
            " AND b.chain = c.chain AND b.height = %(height)s - 1", params)
        cur.execute("DELETE FROM btc_sync_checkpoint WHERE chain = %(chain)s AND height >= %(height)s", params)
    return counts


# --------------------------------------------------------------------------- reads
def stored_hashes(conn: Any, *, chain: str, start: int, stop: int) -> dict[int, str]:
    """Stored block hashes by height for ``start..stop`` (inclusive): compare with the node's to find a fork."""
    with conn.cursor() as cur:
        cur.execute("SELECT height, hash FROM btc_blocks WHERE chain = %s AND height BETWEEN %s AND %s",
                    (chain, start, stop))
        return {int(h): str(x) for h, x in cur.fetchall()}


def stored_tip(conn: Any, *, chain: str) -> tuple[int, str] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT height, hash FROM btc_blocks WHERE chain = %s AND height IS NOT NULL"
                    " ORDER BY height DESC LIMIT 1", (chain,))
        row = cur.fetchone()
    return (int(row[0]), str(row[1])) if row else None


def get_checkpoint(conn: Any, *, chain: str, conn_id: str) -> tuple[int, str] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT height, hash FROM btc_sync_checkpoint WHERE chain = %s AND conn_id = %s",
                    (chain, conn_id))
        row = cur.fetchone()
    return (int(row[0]), str(row[1])) if row else None


def set_checkpoint(conn: Any, *, chain: str, conn_id: str, height: int, block_hash: str) -> None:
    with _transaction(conn) as cur:
        _set_checkpoint(cur, chain, conn_id, height, block_hash)


def _set_checkpoint(cur: Any, chain: str, conn_id: str, height: int, block_hash: str) -> None:
    cur.execute(
        "INSERT INTO btc_sync_checkpoint (chain, conn_id, height, hash) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (chain, conn_id) DO UPDATE SET height = EXCLUDED.height, hash = EXCLUDED.hash,"
        " updated_at = now()", (chain, conn_id, height, block_hash))


def stored_prevouts(conn: Any, *, chain: str) -> PrevoutLookup:
    """A ``parse`` lookup answering spent-output values from ``btc_outputs`` (one query per call: per
    block when ``parse_blocks`` calls it, per batch in ``sync``'s parallel parse)."""

    def lookup(outpoints: Sequence[Outpoint]) -> Mapping[Outpoint, int]:
        if not outpoints:
            return {}
        with conn.cursor() as cur:
            cur.execute(
                "SELECT o.txid, o.idx, o.value FROM btc_outputs o"
                " JOIN unnest(%s::text[], %s::int[]) AS q(txid, idx) ON o.txid = q.txid AND o.idx = q.idx"
                " WHERE o.chain = %s", ([t for t, _ in outpoints], [i for _, i in outpoints], chain))
            return {(str(t), int(i)): int(v) for t, i, v in cur.fetchall()}

    return lookup
