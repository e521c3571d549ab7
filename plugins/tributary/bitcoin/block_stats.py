"""Per-block statistics of the active chain in ``btc_block_stats`` (the ``bitcoin_block_watch`` DAG's logic).

* :func:`block_stats` reads one ``getblock <hash> 2`` answer: tx count, size, weight, inputs/outputs,
  total output, total fee, min/avg/max fee rate and weight-weighted fee-rate percentiles (the
  percentile walk of :func:`tributary.bitcoin.mempool.weighted_percentiles`).
* :func:`sync_block_stats` fills ``btc_block_stats`` from the last stored block up to the node's tip.
  Blocks that left the active chain are kept but marked ``in_active_chain = false`` (the fork point is
  :func:`tributary.bitcoin.sync.find_fork_point`, the chain sync's); a reorg deeper than
  ``max_reorg_depth`` is a security error. Upserts by (chain, hash): re-runs change nothing.
* :func:`last_seen_tip` and :func:`update_block_stats` are what the DAG's tasks call: they open the
  node and the warehouse (``WarehouseHook``) themselves.

Waiting for the next block is :class:`tributary.bitcoin.triggers.NewTipTrigger`, deferred to by
:class:`tributary.bitcoin.operators.WaitForNewTipOperator`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.hook import BitcoinCoreHook
from tributary.bitcoin.mempool import feerate, sats, weighted_percentiles
from tributary.bitcoin.sync import find_fork_point
from tributary.core.errors import DataError, SecurityError
from tributary.storage import WAREHOUSE_CONN_ID
from tributary.storage.warehouse import WarehouseHook

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- block statistics
@dataclass(frozen=True)
class BlockStats:
    hash: str
    height: int
    prev_hash: str | None
    time: datetime
    median_time: datetime | None
    tx_count: int
    size: int
    stripped_size: int | None
    weight: int
    input_count: int
    output_count: int
    total_out: int
    total_fee: int | None
    min_feerate: Decimal | None
    max_feerate: Decimal | None
    avg_feerate: Decimal | None
    percentiles: list[Decimal | None]


def _when(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(int(seconds), UTC) if seconds is not None else None


def block_stats(block: Mapping[str, Any]) -> BlockStats:
    """Statistics of one ``getblock <hash> 2`` answer (getblockstats-like; coinbase excluded from fees)."""
    txs = block.get("tx")
    if not isinstance(txs, list) or not txs or not isinstance(txs[0], Mapping):
        raise DataError(f"getblock {block.get('hash')}: no verbosity-2 transactions", system=SYSTEM,
                        reason="malformed_response")
    rates: list[tuple[Decimal, int]] = []
    fees: list[int] = []
    fees_known = True
    inputs = outputs = total_out = fee_weight = 0
    for tx in txs[1:]:
        weight = int(tx.get("weight") or 0)
        inputs += len(tx.get("vin") or [])
        outputs += len(tx.get("vout") or [])
        total_out += sum(sats(o["value"]) for o in tx.get("vout") or [])
        if tx.get("fee") is None:
            fees_known = False  # a node without undo data for this block (pruned) reports no fees
            continue
        fee = sats(tx["fee"])
        fees.append(fee)
        fee_weight += weight
        rates.append((feerate(fee, Decimal(weight) / 4), weight))
    total_fee = sum(fees) if fees_known else None
    outputs_all = outputs + len(txs[0].get("vout") or [])
    return BlockStats(
        hash=str(block["hash"]), height=int(block["height"]), prev_hash=block.get("previousblockhash"),
        time=_when(block["time"]), median_time=_when(block.get("mediantime")),  # type: ignore[arg-type]
        tx_count=int(block.get("nTx") or len(txs)), size=int(block["size"]),
        stripped_size=int(block["strippedsize"]) if block.get("strippedsize") is not None else None,
        weight=int(block["weight"]), input_count=inputs, output_count=outputs_all, total_out=total_out,
        total_fee=total_fee,
        min_feerate=min(r for r, _ in rates) if rates else None,
        max_feerate=max(r for r, _ in rates) if rates else None,
        avg_feerate=feerate(sum(fees), Decimal(fee_weight) / 4) if rates and fee_weight else None,
        percentiles=weighted_percentiles(rates),
    )


_STATS_COLUMNS = ("hash", "height", "prev_hash", "time", "median_time", "tx_count", "size", "stripped_size",
                  "weight", "input_count", "output_count", "total_out", "total_fee", "min_feerate", "max_feerate",
                  "avg_feerate", "feerate_p10", "feerate_p25", "feerate_p50", "feerate_p75", "feerate_p90")


def _values(stats: BlockStats) -> list[Any]:
    row = asdict(stats)
    percentiles = row.pop("percentiles")
    return [*row.values(), *percentiles]


def store_block_stats(conn: Any, *, chain: str, rows: Sequence[BlockStats]) -> None:
    """Upsert ``rows`` as the active blocks at their heights (one transaction)."""
    names = ", ".join(_STATS_COLUMNS)
    marks = ", ".join(["%s"] * len(_STATS_COLUMNS))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATS_COLUMNS[1:])
    try:
        with conn.cursor() as cur:
            for stats in rows:
                # Whatever was active at this height is not any more (keeps the one-active-per-height index).
                cur.execute("UPDATE btc_block_stats SET in_active_chain = false, orphaned_at = now()"
                            " WHERE chain = %s AND height = %s AND hash <> %s AND in_active_chain",
                            (chain, stats.height, stats.hash))
                cur.execute(
                    f"INSERT INTO btc_block_stats (chain, {names}) VALUES (%s, {marks})"
                    f" ON CONFLICT (chain, hash) DO UPDATE SET {updates}, in_active_chain = true,"
                    " orphaned_at = NULL, computed_at = now()", (chain, *_values(stats)))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def mark_orphaned(conn: Any, *, chain: str, hashes: Sequence[str]) -> int:
    if not hashes:
        return 0
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE btc_block_stats SET in_active_chain = false, orphaned_at = now()"
                        " WHERE chain = %s AND hash = ANY(%s) AND in_active_chain", (chain, list(hashes)))
            count = cur.rowcount
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return count


def active_blocks(conn: Any, *, chain: str, depth: int) -> dict[int, str]:
    """The ``depth`` highest active blocks stored for ``chain``: height -> hash."""
    with conn.cursor() as cur:
        cur.execute("SELECT height, hash FROM btc_block_stats WHERE chain = %s AND in_active_chain"
                    " ORDER BY height DESC LIMIT %s", (chain, depth))
        return {int(h): str(x) for h, x in cur.fetchall()}


@dataclass
class SyncReport:
    chain: str
    tip_height: int
    tip_hash: str
    fork_height: int | None = None
    orphaned: list[str] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    skipped_heights: int = 0  # gap left because it was larger than max_blocks


def sync_block_stats(hook: Any, conn: Any, *, chain: str, max_blocks: int = 144, max_reorg_depth: int = 100,
                     chunk: int = 10) -> SyncReport:
    """Bring ``btc_block_stats`` of ``chain`` up to the node's active tip (see module docstring)."""
    tip_hash = hook.get_best_block_hash()
    tip_height = int(hook.get_block_header(tip_hash)["height"])
    report = SyncReport(chain=chain, tip_height=tip_height, tip_hash=tip_hash)
    stored = active_blocks(conn, chain=chain, depth=max_reorg_depth + 1)
    start = max(tip_height - max_blocks + 1, 0)
    if stored:
        top = max(stored)
        check = min(top, tip_height)
        node: dict[int, str] = {}
        if check in stored:
            node[check] = hook.get_block_hash(check)
        if check not in stored or node[check] != stored[check]:  # usually one call; a reorg, one batch
            low = min(stored)
            if low <= check:
                node.update(zip(range(low, check + 1), hook.get_block_hashes(low, check), strict=True))
        # Compared: the heights asked of the node, and the stored ones above its tip (it has none there).
        point = find_fork_point({h: x for h, x in stored.items() if h in node or h > check}, node)
        # The highest stored block the node still has (None: none of them is in its active chain).
        fork = max((h for h in stored if point is None or h <= point), default=None)
        if fork is None and len(stored) > max_reorg_depth:
            raise SecurityError(f"chain {chain!r}: none of the last {len(stored)} stored blocks is in the node's "
                                f"active chain (reorg deeper than {max_reorg_depth}, or another chain under this "
                                "label)", system=SYSTEM, reason="reorg_too_deep")
        report.fork_height = fork
        report.orphaned = [stored[h] for h in sorted(stored) if fork is None or h > fork]
        if report.orphaned:
            log.warning("reorg on %s: %d stored block(s) left the active chain (fork at height %s): %s", chain,
                        len(report.orphaned), fork, ", ".join(report.orphaned))
            mark_orphaned(conn, chain=chain, hashes=report.orphaned)
        resume = (fork + 1) if fork is not None else min(stored)
        if resume < start:
            report.skipped_heights = start - resume
            log.info("gap of %d block(s) after height %d is larger than max_blocks=%d: computing heights %d..%d only",
                     start - resume, resume - 1, max_blocks, start, tip_height)
        start = max(start, resume)
    if start > tip_height:
        log.info("%s: stats already cover the tip %d %s", chain, tip_height, tip_hash)
        return report
    hashes = hook.get_block_hashes(start, tip_height)
    log.info("%s: computing stats of %d block(s), heights %d..%d", chain, len(hashes), start, tip_height)
    batch: list[BlockStats] = []
    for block_hash in hashes:
        stats = block_stats(hook.call("getblock", block_hash, 2, wallet=""))
        batch.append(stats)
        log.info("block %d %s: %d txs, %d WU, fees %s, median %s sat/vB", stats.height, stats.hash, stats.tx_count,
                 stats.weight, "unknown" if stats.total_fee is None else f"{stats.total_fee} sat",
                 "-" if stats.percentiles[2] is None else stats.percentiles[2])
        if len(batch) >= chunk:
            store_block_stats(conn, chain=chain, rows=batch)
            report.computed += [b.height for b in batch]
            batch = []
    if batch:
        store_block_stats(conn, chain=chain, rows=batch)
        report.computed += [b.height for b in batch]
    return report


# --------------------------------------------------------------------------- the DAG's tasks
def last_seen_tip(*, chain: str, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> tuple[int, str] | None:
    """The highest active block stored for ``chain``: (height, hash), or None before the first run."""
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return next(iter(active_blocks(conn, chain=chain, depth=1).items()), None)


def update_block_stats(conn_id: str, *, chain_label: str | None = None, max_blocks: int = 144,
                       max_reorg_depth: int = 100, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> SyncReport:
    """:func:`sync_block_stats` for the node of ``conn_id``, stored under ``chain_label`` or else the
    node's chain name."""
    hook = BitcoinCoreHook(conn_id)
    chain = chain_label or hook.chain_name()
    log.info("stats stored as chain %r", chain)
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return sync_block_stats(hook, conn, chain=chain, max_blocks=max_blocks, max_reorg_depth=max_reorg_depth)
