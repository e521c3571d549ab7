"""Reorg-safe event-log indexing: ``eth_getLogs`` by block range into ``evm_event_logs``.

Each *indexer* (a name for an address/topic filter) keeps a checkpoint (last block indexed and its
hash) and the hashes of its last ``reorg_window`` blocks. Every run first re-checks those hashes
against the node; from the lowest block that changed, logs and hashes are deleted, the checkpoint
moves back to the fork point, the reorg is recorded in ``evm_index_reorgs``, and the range is
indexed again. A reorg deeper than the window is a security failure (nothing is deleted).

Chunks are written in one database transaction each (COPY into a temporary table, then upsert on
(indexer, chain_id, block_number, log_index)), together with the checkpoint: a crash loses at most
one chunk of work and a re-run is idempotent.

:func:`index_deployed` is the whole ``evm_event_indexing`` step (addresses from the deployments
registry, the warehouse opened through ``WarehouseHook``); :func:`asset_extra` what its Asset says.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tributary.core.errors import SecurityError, TransientError
from tributary.evm import SYSTEM, deployments
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

_LOG_COLUMNS = ("indexer", "chain_id", "block_number", "log_index", "block_hash", "tx_hash", "tx_index", "address",
                "topic0", "topics", "data", "event_name", "args")


@dataclass(frozen=True)
class IndexSpec:
    indexer: str
    chain_id: int
    addresses: list[str] = field(default_factory=list)
    topics: list[Any] | None = None
    start_block: int = 0
    reorg_window: int = 64
    chunk_size: int = 2000
    lag: int = 0  # stay this many blocks behind the tip


@dataclass
class IndexResult:
    indexer: str
    chain_id: int
    from_block: int
    to_block: int
    logs: int = 0
    chunks: int = 0
    reorg: dict[str, Any] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"indexer": self.indexer, "chain_id": self.chain_id, "from_block": self.from_block,
                "to_block": self.to_block, "logs": self.logs, "chunks": self.chunks, "reorg": self.reorg,
                "seconds": round(self.seconds, 3),
                "logs_per_second": round(self.logs / self.seconds, 1) if self.seconds else None}


def known_events() -> dict[str, tuple[str, dict[str, Any]]]:
    """topic0 -> (contract name, event ABI) over every compiled artifact."""
    from tributary.evm.contracts import contracts_dir, load_artifact

    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted((contracts_dir() / "build").glob("*.json")):
        artifact = load_artifact(path.stem)
        for topic, event in artifact.events().items():
            out.setdefault(topic, (artifact.name, event))
    return out


def checkpoint(conn: Any, indexer: str, chain_id: int) -> tuple[int, str] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT block_number, block_hash FROM evm_index_checkpoints WHERE indexer = %s AND chain_id = %s",
                    (indexer, chain_id))
        row = cur.fetchone()
    return (int(row[0]), row[1]) if row else None


def _set_checkpoint(cur: Any, indexer: str, chain_id: int, number: int, block_hash: str) -> None:
    cur.execute("INSERT INTO evm_index_checkpoints (indexer, chain_id, block_number, block_hash)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (indexer, chain_id) DO UPDATE SET"
                " block_number = EXCLUDED.block_number, block_hash = EXCLUDED.block_hash, updated_at = now()",
                (indexer, chain_id, number, block_hash))


# --------------------------------------------------------------------------- reorgs
def check_reorg(conn: Any, hook: Any, spec: IndexSpec) -> dict[str, Any] | None:
    """Compare the stored window with the node; roll back from the first changed block."""
    with conn.cursor() as cur:
        cur.execute("SELECT block_number, block_hash FROM evm_index_blocks WHERE indexer = %s AND chain_id = %s"
                    " ORDER BY block_number", (spec.indexer, spec.chain_id))
        stored = {int(n): h for n, h in cur.fetchall()}
    conn.commit()
    if not stored:
        return None
    node = hook.block_hashes(sorted(stored))
    changed = sorted(n for n, h in stored.items() if node.get(n) != h)
    if not changed:
        return None
    lowest_stored = min(stored)
    if changed[0] == lowest_stored and lowest_stored > spec.start_block:
        raise SecurityError(f"indexer {spec.indexer}: reorg reaches below the {len(stored)}-block window"
                            f" (block {lowest_stored} changed); refusing to roll back automatically",
                            system=SYSTEM, reason="evm:reorg_too_deep")
    fork = changed[0] - 1
    old_tip = max(stored)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM evm_event_logs WHERE indexer = %s AND chain_id = %s AND block_number > %s",
                    (spec.indexer, spec.chain_id, fork))
        removed = cur.rowcount
        cur.execute("DELETE FROM evm_index_blocks WHERE indexer = %s AND chain_id = %s AND block_number > %s",
                    (spec.indexer, spec.chain_id, fork))
        _set_checkpoint(cur, spec.indexer, spec.chain_id, fork, stored.get(fork) or node.get(fork) or "")
        cur.execute("INSERT INTO evm_index_reorgs (indexer, chain_id, fork_block, old_tip, logs_removed)"
                    " VALUES (%s, %s, %s, %s, %s)", (spec.indexer, spec.chain_id, fork, old_tip, removed))
    conn.commit()
    reorg = {"fork_block": fork, "old_tip": old_tip, "depth": old_tip - fork, "logs_removed": removed}
    log.warning("indexer %s: reorg below block %d (old tip %d): %d logs removed, re-indexing",
                spec.indexer, fork + 1, old_tip, removed)
    return reorg


# --------------------------------------------------------------------------- indexing
def _rows(spec: IndexSpec, logs: list[dict[str, Any]], events: dict[str, tuple[str, dict[str, Any]]]) -> list[tuple]:
    from tributary.evm.contracts import decode_log

    rows = []
    for item in logs:
        if item.get("removed"):
            continue
        topics = item.get("topics") or []
        topic0 = topics[0] if topics else None
        name, args = None, None
        known = events.get(topic0) if topic0 else None
        if known:
            try:
                args = decode_log(known[1], topics, item["data"])
                name = known[1]["name"]
            except Exception as exc:  # a log of another contract with the same topic but other layout
                log.debug("log %s:%s does not decode as %s: %s", item["blockNumber"], item["logIndex"],
                          known[1]["name"], exc)
        rows.append((spec.indexer, spec.chain_id, int(item["blockNumber"], 16), int(item["logIndex"], 16),
                     item["blockHash"], item["transactionHash"], int(item["transactionIndex"], 16),
                     item["address"], topic0, topics, item["data"], name,
                     json.dumps(args) if args is not None else None))
    return rows


def _pg_array(values: list[str]) -> str:
    return "{" + ",".join(values) + "}"


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, list):
        value = _pg_array(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _store(cur: Any, rows: list[tuple]) -> None:
    if not rows:
        return
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS evm_event_logs_stage (LIKE evm_event_logs INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS")
    columns = ", ".join(_LOG_COLUMNS)
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_copy_text(v) for v in row) + "\n")
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(f"COPY evm_event_logs_stage ({columns}) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
    else:  # psycopg2
        buffer.seek(0)
        cur.copy_expert(f"COPY evm_event_logs_stage ({columns}) FROM STDIN", buffer)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _LOG_COLUMNS[4:])
    cur.execute(f"INSERT INTO evm_event_logs ({columns}) SELECT {columns} FROM evm_event_logs_stage"
                f" ON CONFLICT (indexer, chain_id, block_number, log_index) DO UPDATE SET {updates},"
                " indexed_at = now()")


def index_range(conn: Any, hook: Any, spec: IndexSpec, *, max_blocks: int | None = None,
                to_block: int | None = None) -> IndexResult:
    """Check for a reorg, then index from the checkpoint up to ``to_block`` (default: tip - lag)."""
    started = time.monotonic()
    reorg = check_reorg(conn, hook, spec)
    point = checkpoint(conn, spec.indexer, spec.chain_id)
    conn.commit()
    start = point[0] + 1 if point else spec.start_block
    tip = hook.block_number() - spec.lag
    stop = min(tip, to_block) if to_block is not None else tip
    if max_blocks is not None:
        stop = min(stop, start + max_blocks - 1)
    result = IndexResult(spec.indexer, spec.chain_id, start, stop, reorg=reorg)
    if stop < start:
        result.seconds = time.monotonic() - started
        return result
    events = known_events()
    window_start = max(start, tip - spec.reorg_window + 1)
    chunk = spec.chunk_size
    low = start
    while low <= stop:
        high = min(stop, low + chunk - 1)
        try:
            logs = hook.get_logs(low, high, address=spec.addresses or None, topics=spec.topics)
        except TransientError as exc:
            if exc.reason == "evm:logs_range_too_large" and high > low:
                chunk = max(1, (high - low + 1) // 2)  # the node caps results: halve the range
                continue
            raise
        window = list(range(max(low, window_start), high + 1))
        hashes = hook.block_hashes(sorted(set(window) | {high}))
        for item in logs:
            number = int(item["blockNumber"], 16)
            if number in hashes and hashes[number] != item["blockHash"]:
                raise TransientError(f"block {number} changed while indexing (reorg in progress)", system=SYSTEM,
                                     reason="evm:reorg_in_progress")
        if hashes.get(high) is None:
            raise TransientError(f"block {high} vanished while indexing", system=SYSTEM, reason="evm:reorg_in_progress")
        rows = _rows(spec, logs, events)
        with conn.cursor() as cur:
            _store(cur, rows)
            for number in window:
                cur.execute("INSERT INTO evm_index_blocks (indexer, chain_id, block_number, block_hash)"
                            " VALUES (%s, %s, %s, %s) ON CONFLICT (indexer, chain_id, block_number)"
                            " DO UPDATE SET block_hash = EXCLUDED.block_hash",
                            (spec.indexer, spec.chain_id, number, hashes[number]))
            cur.execute("DELETE FROM evm_index_blocks WHERE indexer = %s AND chain_id = %s AND block_number <= %s",
                        (spec.indexer, spec.chain_id, high - spec.reorg_window))
            _set_checkpoint(cur, spec.indexer, spec.chain_id, high, hashes[high])
        conn.commit()
        result.logs += len(rows)
        result.chunks += 1
        log.info("indexer %s: blocks %d..%d, %d logs", spec.indexer, low, high, len(rows))
        low = high + 1
    result.seconds = time.monotonic() - started
    return result


def index_deployed(hook: Any, *, indexer: str, contracts: list[str], addresses: list[str], start_block: int = 0,
                   chunk_size: int = 2000, reorg_window: int = 64, lag: int = 0, max_blocks: int | None = None,
                   warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Index the logs of ``addresses`` (empty: the registered deployments of ``contracts`` on the
    hook's chain) from the indexer's checkpoint; the :class:`IndexResult` as a dict. Nothing to index
    (no address, no deployment) is a result with 0 logs, not an error."""
    from tributary.storage.warehouse import WarehouseHook

    chain_id = hook.check_chain()
    with WarehouseHook(warehouse_conn_id).session() as conn:
        addresses = list(addresses)
        if not addresses:
            for name in contracts:
                found = deployments.find(conn, name, chain_id)
                if found:
                    addresses.append(found["address"])
        if not addresses:
            log.info("no deployment of %s on chain %d: nothing to index", contracts, chain_id)
            return {"indexer": indexer, "chain_id": chain_id, "logs": 0, "reorg": None, "from_block": None,
                    "to_block": None}
        spec = IndexSpec(indexer=indexer, chain_id=chain_id, addresses=addresses, start_block=start_block,
                         reorg_window=reorg_window, chunk_size=chunk_size, lag=lag)
        result = index_range(conn, hook, spec, max_blocks=max_blocks).as_dict()
    log.info("indexed: %s", result)
    return result


def asset_extra(result: dict[str, Any]) -> dict[str, Any] | None:
    """The ``extra`` of the ``evm_event_logs`` Asset event for an indexing result; None when nothing
    changed (no new logs and no reorg: no event)."""
    if not result["logs"] and not result["reorg"]:
        return None
    return {k: result[k] for k in ("indexer", "chain_id", "from_block", "to_block", "logs", "reorg")}
