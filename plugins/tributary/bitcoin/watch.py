"""Waiting for a new chain tip without a worker slot, and per-block statistics (``bitcoin_block_watch``).

* :class:`NewTipTrigger` polls ``getbestblockhash`` (the sync hook in ``asyncio.to_thread``) until the
  tip differs from ``last_tip``; it yields one event: ``new_tip``, ``timeout`` or ``error`` (permanent
  failures only: transient ones are logged and retried with backoff until the deadline). It has no
  side effects, so the triggerer may run it twice.
* :class:`WaitForNewTipOperator` reads the last seen tip (the ``last_tip`` argument, else the highest
  active block of ``btc_block_stats``), returns at once when the node is already past it, and
  otherwise defers to the trigger: the wait costs a triggerer coroutine, not a worker slot.
* :func:`sync_block_stats` fills ``btc_block_stats`` from the last stored block up to the node's tip
  (``getblock`` verbosity 2): tx count, size, weight, fees, fee-rate percentiles. Blocks that left the
  active chain are kept but marked ``in_active_chain = false``; a reorg deeper than
  ``max_reorg_depth`` is a security error. Upserts by (chain, hash): re-runs change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from tributary.bitcoin.mempool import feerate, sats, weighted_percentiles
from tributary.core.errors import (
    DataError,
    ErrorClass,
    PermanentError,
    SecurityError,
    TransientError,
    classify,
)
from tributary.core.masking import mask_text

SYSTEM = "bitcoin"
DEFAULT_CONN_ID = "tributary_bitcoin"
_ERRORS_BY_CLASS = {ErrorClass.PERMANENT: PermanentError, ErrorClass.DATA: DataError,
                    ErrorClass.SECURITY: SecurityError, ErrorClass.TRANSIENT: TransientError}


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


def last_seen_tip(conn: Any, *, chain: str) -> tuple[int, str] | None:
    blocks = active_blocks(conn, chain=chain, depth=1)
    return next(iter(blocks.items()), None)


@dataclass
class SyncReport:
    chain: str
    tip_height: int
    tip_hash: str
    fork_height: int | None = None
    orphaned: list[str] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    skipped_heights: int = 0  # gap left because it was larger than max_blocks


def find_fork(stored: Mapping[int, str], node_hashes: Mapping[int, str]) -> int | None:
    """The highest stored height whose hash the node still has at that height (pure)."""
    return max((h for h, x in stored.items() if node_hashes.get(h) == x), default=None)


def sync_block_stats(hook: Any, conn: Any, *, chain: str, max_blocks: int = 144, max_reorg_depth: int = 100,
                     log: Any = None, chunk: int = 10) -> SyncReport:
    """Bring ``btc_block_stats`` of ``chain`` up to the node's active tip (see module docstring)."""
    say = log.info if log is not None else print
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
        fork = find_fork(stored, node)
        if fork is None and len(stored) > max_reorg_depth:
            raise SecurityError(f"chain {chain!r}: none of the last {len(stored)} stored blocks is in the node's "
                                f"active chain (reorg deeper than {max_reorg_depth}, or another chain under this "
                                "label)", system=SYSTEM, reason="reorg_too_deep")
        report.fork_height = fork
        report.orphaned = [stored[h] for h in sorted(stored) if fork is None or h > fork]
        if report.orphaned:
            say(f"reorg on {chain}: {len(report.orphaned)} stored block(s) left the active chain (fork at height "
                f"{fork}): {', '.join(report.orphaned)}")
            mark_orphaned(conn, chain=chain, hashes=report.orphaned)
        resume = (fork + 1) if fork is not None else min(stored)
        if resume < start:
            report.skipped_heights = start - resume
            say(f"gap of {start - resume} block(s) after height {resume - 1} is larger than max_blocks={max_blocks}:"
                f" computing heights {start}..{tip_height} only")
        start = max(start, resume)
    if start > tip_height:
        say(f"{chain}: stats already cover the tip {tip_height} {tip_hash}")
        return report
    hashes = hook.get_block_hashes(start, tip_height)
    say(f"{chain}: computing stats of {len(hashes)} block(s), heights {start}..{tip_height}")
    batch: list[BlockStats] = []
    for block_hash in hashes:
        stats = block_stats(hook.call("getblock", block_hash, 2, wallet=""))
        batch.append(stats)
        fee = "unknown" if stats.total_fee is None else f"{stats.total_fee} sat"
        say(f"block {stats.height} {stats.hash}: {stats.tx_count} txs, {stats.weight} WU, fees {fee},"
            f" median {stats.percentiles[2] if stats.percentiles[2] is not None else '-'} sat/vB")
        if len(batch) >= chunk:
            store_block_stats(conn, chain=chain, rows=batch)
            report.computed += [b.height for b in batch]
            batch = []
    if batch:
        store_block_stats(conn, chain=chain, rows=batch)
        report.computed += [b.height for b in batch]
    return report


# --------------------------------------------------------------------------- trigger
class NewTipTrigger(BaseTrigger):
    """Fires once the node's best block hash differs from ``last_tip`` (or at ``deadline``, epoch seconds)."""

    def __init__(self, last_tip: str | None, *, conn_id: str = DEFAULT_CONN_ID, poll_interval: float = 15.0,
                 deadline: float | None = None, max_backoff: float = 300.0) -> None:
        super().__init__()
        self.last_tip = last_tip
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else time.time() + 3600.0
        self.max_backoff = float(max_backoff)
        self._hook: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"last_tip": self.last_tip, "conn_id": self.conn_id, "poll_interval": self.poll_interval,
                 "deadline": self.deadline, "max_backoff": self.max_backoff})

    def _best(self) -> tuple[str, dict[str, Any] | None]:
        """One poll (runs in a thread: the hook is synchronous). The header only when the tip moved."""
        if self._hook is None:
            from tributary.bitcoin.hook import BitcoinCoreHook

            self._hook = BitcoinCoreHook(self.conn_id)
        best = self._hook.get_best_block_hash()
        return best, (self._hook.get_block_header(best) if best != self.last_tip else None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        failures = 0
        while True:
            delay = self.poll_interval
            try:
                best, header = await asyncio.to_thread(self._best)
            except Exception as exc:
                classification = classify(exc)
                message = mask_text(str(exc))[:500]
                if not classification.retryable:
                    yield TriggerEvent({"status": "error", "error_class": str(classification.error_class),
                                        "reason": classification.reason, "message": message})
                    return
                failures += 1
                delay = min(self.max_backoff, self.poll_interval * 2 ** min(failures, 16))
                self.log.warning("polling %s failed (%s, %d in a row): %s; next try in %.1fs", self.conn_id,
                                 classification.reason, failures, message, delay)
            else:
                failures = 0
                if header is not None:
                    yield TriggerEvent({"status": "new_tip", "hash": best, "height": int(header["height"]),
                                        "time": int(header["time"]), "previous": self.last_tip})
                    return
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield TriggerEvent({"status": "timeout", "previous": self.last_tip})
                return
            await asyncio.sleep(min(delay, remaining))


# --------------------------------------------------------------------------- operator
def error_from_event(event: Mapping[str, Any]) -> Exception:
    """The classified exception an ``error`` event stands for."""
    cls = _ERRORS_BY_CLASS.get(ErrorClass(event.get("error_class", "permanent")), PermanentError)
    return cls(f"waiting for a new tip failed: {event.get('message')}", system=SYSTEM, reason=event.get("reason"))


class WaitForNewTipOperator(BaseOperator):
    """Returns ``{"hash", "height", "time", "previous", "waited"}`` of a tip newer than the last seen one.

    ``last_tip`` (a block hash) overrides the last seen tip read from ``btc_block_stats`` for
    ``chain_label`` (default: the node's chain name). With nothing seen yet it returns the current tip.
    No new block within ``timeout`` seconds: the task is skipped (and so is what depends on it).
    """

    template_fields: Sequence[str] = ("conn_id", "last_tip", "chain_label", "poll_interval", "timeout")
    ui_color = "#f7931a"

    def __init__(self, *, conn_id: str = DEFAULT_CONN_ID, last_tip: str | None = None,
                 chain_label: str | None = None, poll_interval: float = 15.0, timeout: float = 1800.0,
                 warehouse_conn_id: str = "tributary_warehouse", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.last_tip = last_tip
        self.chain_label = chain_label
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.warehouse_conn_id = warehouse_conn_id

    def _last_seen(self, hook: Any) -> str | None:
        if self.last_tip:
            return str(self.last_tip)
        from tributary.bitcoin.mempool import chain_name
        from tributary.storage.warehouse import connect, ensure_schema

        chain = chain_name(hook, self.chain_label)
        conn = connect(self.warehouse_conn_id)
        try:
            ensure_schema(conn)
            seen = last_seen_tip(conn, chain=chain)
        finally:
            conn.close()
        if seen:
            self.log.info("last seen tip of %s: height %d %s (btc_block_stats)", chain, *seen)
        return seen[1] if seen else None

    def execute(self, context: Any) -> dict[str, Any]:
        from tributary.bitcoin.hook import BitcoinCoreHook
        from tributary.core.failfast import raise_classified

        try:
            hook = BitcoinCoreHook(self.conn_id)
            last = self._last_seen(hook)
            best = hook.get_best_block_hash()
            if best != last:
                header = hook.get_block_header(best)
                self.log.info("tip %d %s is already past the last seen %s: no wait", header["height"], best, last)
                return {"hash": best, "height": int(header["height"]), "time": int(header["time"]),
                        "previous": last, "waited": False}
            poll, timeout = float(self.poll_interval), float(self.timeout)
            self.log.info("waiting for a block after %s: deferring to the triggerer (no worker slot held), "
                          "polling every %gs for up to %gs", last, poll, timeout)
            self.defer(trigger=NewTipTrigger(last, conn_id=self.conn_id, poll_interval=poll,
                                             deadline=time.time() + timeout),
                       method_name="execute_complete", timeout=timedelta(seconds=timeout + max(120.0, 4 * poll)))
        except Exception as exc:
            raise_classified(exc, SYSTEM)
        raise AssertionError("unreachable: defer() raises")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from tributary.core.failfast import raise_classified

        event = dict(event or {})
        status = event.get("status")
        if status == "new_tip":
            self.log.info("new tip %d %s (after %s)", event["height"], event["hash"], event.get("previous"))
            return {"hash": event["hash"], "height": int(event["height"]), "time": int(event["time"]),
                    "previous": event.get("previous"), "waited": True}
        if status == "timeout":
            raise AirflowSkipException(f"no block after {event.get('previous')} within {self.timeout}s")
        raise_classified(error_from_event(event) if status == "error" else
                         DataError(f"unexpected trigger event {event!r:.200}", system=SYSTEM,
                                   reason="unexpected_event"), SYSTEM)
        raise AssertionError("unreachable")
