"""Chain sync: node -> warehouse, incremental from a checkpoint, reorg-safe, in parallel-safe ranges.

The steps of the ``bitcoin_chain_sync`` DAG, without Airflow (each takes a warehouse connection and a
:class:`~tributary.bitcoin.hook.BitcoinCoreHook`):

1. :func:`check_reorg` compares the stored hashes with the node's from the stored tip downwards. The
   fork point is the highest height below which every compared stored hash is the node's (for a
   consistent stored chain: the highest height where stored hash == node hash). Blocks above it are
   orphans: :func:`tributary.bitcoin.store.delete_from_height` removes them with everything derived
   (ON DELETE CASCADE) and moves the checkpoint back; the reorg is logged and recorded in
   ``btc_reorgs``. A reorg deeper than ``max_depth`` is refused with a :class:`SecurityError` and
   nothing is deleted (a deep rewrite of history needs a person).
2. :func:`plan` picks the heights to sync (from the checkpoint, or an explicit range) and
   :func:`split_ranges` cuts them into ranges for mapped tasks.
3. :func:`sync_range` loads one range: ``getblockhash`` in batches, ``getblock <hash> 0`` in batches
   (the next batch is fetched while the current one is parsed and loaded), python-bitcoinlib parsing
   (``parse.py``; a big batch in :data:`PARSE_WORKERS` forked processes, a block each, its spent-output
   values then resolved here with one warehouse query per batch), COPY + upsert
   (``store.load_blocks``), one transaction per batch. Ranges never
   touch the checkpoint, so they may run in any order or in parallel; spent-output values come from
   the batch and the warehouse, and what a parallel range had not stored yet is filled in afterwards
   by :func:`fill_missing_fees`.
4. :func:`advance_checkpoint` moves the checkpoint to the end of the contiguous stored heights;
   :func:`check_continuity` and :func:`check_tip_lag` verify the result.

Every step is idempotent: loads are upserts on natural keys, the fee fill only fills NULLs, the
checkpoint is derived from what is stored.

The DAG's tasks call the ``*_step`` functions at the end of this module: each opens the node and the
warehouse (``WarehouseHook(...).session()``) it needs and returns what the task returns.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from tributary.bitcoin import SYSTEM, store
from tributary.bitcoin.hook import BitcoinCoreHook
from tributary.bitcoin.parse import Outpoint, ParsedBlock, PrevoutCache, PrevoutLookup, parse_block, parse_blocks
from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError
from tributary.storage import WAREHOUSE_CONN_ID
from tributary.storage.warehouse import WarehouseHook

log = logging.getLogger(__name__)

# Deepest reorg rolled back without a person, by Core chain name; the DAG's ``max_reorg_depth`` param
# or the Variable below override it. Mainnet reorgs deeper than a few blocks have not happened since
# 2013, so 6 is already an incident there; regtest and testnets reorg deeply by design.
DEFAULT_MAX_REORG_DEPTH = {"main": 6, "test": 100, "testnet4": 100, "signet": 6, "regtest": 100}
MAX_REORG_DEPTH_VARIABLE = "tributary_bitcoin_max_reorg_depth"
MAX_MAPPED_RANGES = 1024  # Airflow's default [core] max_map_length


# --------------------------------------------------------------------------- request
@dataclass(frozen=True)
class SyncRequest:
    """The DAG's params, checked beyond what their JSON schema can say."""

    start_height: int | None = None
    end_height: int | None = None
    batch_size: int = 50
    rpc_batch_size: int = 20
    range_size: int = 1000
    max_blocks_per_run: int = 10_000
    max_reorg_depth: int | None = None
    max_tip_lag: int = 6
    chain_label: str | None = None
    conn_id: str = "tributary_bitcoin"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SyncRequest:
        nullable = {"start_height", "end_height", "max_reorg_depth", "chain_label"}
        request = cls(**{k: params[k] for k in cls.__dataclass_fields__
                         if k in params and (params[k] is not None or k in nullable)})
        request.validate()
        return request

    def validate(self) -> None:
        def bad(message: str) -> PermanentError:
            return PermanentError(f"invalid bitcoin_chain_sync conf: {message}", system=SYSTEM, reason="invalid_conf")

        for name in ("start_height", "end_height"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise bad(f"{name} must be a height >= 0 or null, got {value!r}")
        if self.start_height is not None and self.end_height is not None and self.end_height < self.start_height:
            raise bad(f"end_height {self.end_height} is below start_height {self.start_height}")
        for name in ("batch_size", "rpc_batch_size", "range_size", "max_blocks_per_run"):
            if int(getattr(self, name)) < 1:
                raise bad(f"{name} must be >= 1")
        if self.max_reorg_depth is not None and self.max_reorg_depth < 0:
            raise bad("max_reorg_depth must be >= 0 or null")
        if self.max_tip_lag < 0:
            raise bad("max_tip_lag must be >= 0")

    @property
    def explicit_range(self) -> bool:
        return self.start_height is not None or self.end_height is not None


def resolve_max_reorg_depth(requested: int | None, network: str, variable: Any = None) -> int:
    """The param, else the Variable (an int, or a JSON object by chain name), else the chain default."""
    if requested is not None:
        return int(requested)
    if variable not in (None, ""):
        value = json.loads(variable) if isinstance(variable, str) else variable
        if isinstance(value, Mapping):
            value = value.get(network)
        if value is not None:
            return int(value)
    return DEFAULT_MAX_REORG_DEPTH.get(network, 6)


# --------------------------------------------------------------------------- node
@dataclass(frozen=True)
class NodeState:
    network: str  # Core's chain name (address encoding)
    height: int
    best_hash: str
    initial_block_download: bool

    @classmethod
    def read(cls, hook: BitcoinCoreHook) -> NodeState:
        info = hook.check_chain()
        return cls(str(info["chain"]), int(info["blocks"]), str(info["bestblockhash"]),
                   bool(info.get("initialblockdownload")))


def node_hashes(hook: BitcoinCoreHook, start: int, stop: int) -> dict[int, str]:
    if stop < start:
        return {}
    return dict(zip(range(start, stop + 1), hook.get_block_hashes(start, stop), strict=True))


# --------------------------------------------------------------------------- reorgs
@dataclass
class Reorg:
    chain: str
    fork_height: int  # the last height both agree on (a lower bound when ``exact`` is false)
    depth: int  # stored tip height - fork height
    old_tip_height: int
    old_tip: str
    new_tip_height: int
    new_tip: str
    max_depth: int
    exact: bool = True
    action: str = "rolled_back"  # or "refused"
    removed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_fork_point(stored: Mapping[int, str], node: Mapping[int, str]) -> int | None:
    """None when every stored height holds the node's block; else the height below the lowest
    disagreeing one (a height the node does not have disagrees). Pure; the chain sync and the block
    statistics (``block_stats``) both find their forks with it."""
    disagree = [height for height, block_hash in stored.items() if node.get(height) != block_hash]
    return min(disagree) - 1 if disagree else None


def _lowest_stored(conn: Any, chain: str) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT min(height) FROM btc_blocks WHERE chain = %s", (chain,))
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def detect_reorg(conn: Any, hook: BitcoinCoreHook, *, chain: str, node: NodeState, max_depth: int) -> Reorg | None:
    """Compare the top ``max_depth + 1`` stored heights with the node; look deeper (up to 4x) only to
    report how deep a refused reorg is."""
    tip = store.stored_tip(conn, chain=chain)
    if tip is None:
        return None
    tip_height, tip_hash = tip
    if tip_height > node.height and node.initial_block_download:
        raise TransientError(f"the node is in initial block download at height {node.height}, below the stored tip"
                             f" {tip_height}: not comparing chains until it catches up", system=SYSTEM,
                             reason="node_in_ibd")
    lowest = _lowest_stored(conn, chain) or 0
    window = max_depth + 1
    while True:
        low = max(lowest, tip_height - window + 1)
        stored = store.stored_hashes(conn, chain=chain, start=low, stop=tip_height)
        fork = find_fork_point(stored, node_hashes(hook, low, min(tip_height, node.height)))
        if fork is None:
            return None
        deeper_possible = fork + 1 == min(stored) and low > lowest
        if not deeper_possible or tip_height - fork > 4 * (max_depth + 1):
            break
        window *= 2
    return Reorg(chain, fork, tip_height - fork, tip_height, tip_hash, node.height, node.best_hash, max_depth,
                 exact=not deeper_possible)


def record_reorg(conn: Any, reorg: Reorg, *, conn_id: str, run_id: str | None) -> None:
    with store._transaction(conn) as cur:
        cur.execute(
            "INSERT INTO btc_reorgs (chain, conn_id, fork_height, depth, exact, old_tip_height, old_tip,"
            " new_tip_height, new_tip, max_depth, action, removed, dag_run_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (reorg.chain, conn_id, reorg.fork_height, reorg.depth, reorg.exact, reorg.old_tip_height, reorg.old_tip,
             reorg.new_tip_height, reorg.new_tip, reorg.max_depth, reorg.action, json.dumps(reorg.removed), run_id))


def check_reorg(conn: Any, hook: BitcoinCoreHook, *, chain: str, node: NodeState, max_depth: int, conn_id: str,
                run_id: str | None = None) -> Reorg | None:
    """Roll back orphaned blocks (see the module docstring); a reorg deeper than ``max_depth`` raises
    :class:`SecurityError` after recording it, with nothing deleted."""
    reorg = detect_reorg(conn, hook, chain=chain, node=node, max_depth=max_depth)
    if reorg is None:
        log.info("no reorg: stored chain %r agrees with the node (tip %d %s)", chain, node.height, node.best_hash)
        return None
    if reorg.depth > max_depth:
        reorg.action = "refused"
        record_reorg(conn, reorg, conn_id=conn_id, run_id=run_id)
        raise SecurityError(
            f"chain {chain!r}: reorg of {'' if reorg.exact else 'at least '}{reorg.depth} blocks (stored tip"
            f" {reorg.old_tip_height} {reorg.old_tip}, fork at {'or below ' if not reorg.exact else ''}height"
            f" {reorg.fork_height}, node tip {reorg.new_tip_height} {reorg.new_tip}) is deeper than the limit of"
            f" {max_depth}; nothing was deleted. Check the node, then raise max_reorg_depth for one run to accept it.",
            system=SYSTEM, reason="reorg_too_deep")
    removed = store.delete_from_height(conn, reorg.fork_height + 1, chain=chain)
    reorg.removed = removed.as_dict()
    record_reorg(conn, reorg, conn_id=conn_id, run_id=run_id)
    log.warning("REORG on %r: fork at height %d, depth %d (old tip %d %s, new tip %d %s); removed %s",
                chain, reorg.fork_height, reorg.depth, reorg.old_tip_height, reorg.old_tip, reorg.new_tip_height,
                reorg.new_tip, reorg.removed)
    return reorg


# --------------------------------------------------------------------------- planning
def contiguous_tip(conn: Any, *, chain: str, after: int) -> tuple[int, str] | None:
    """The highest stored height ``h`` such that every height ``after+1 .. h`` is stored (None when
    ``after+1`` is not)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT b.height, b.hash FROM btc_blocks b WHERE b.chain = %(chain)s AND b.height > %(after)s"
            " AND NOT EXISTS (SELECT 1 FROM btc_blocks n WHERE n.chain = b.chain AND n.height = b.height + 1)"
            " ORDER BY b.height LIMIT 1", {"chain": chain, "after": after})
        end = cur.fetchone()
        if end is None:
            return None
        cur.execute("SELECT count(*) FROM btc_blocks WHERE chain = %s AND height > %s AND height <= %s",
                    (chain, after, end[0]))
        count = int(cur.fetchone()[0])
    return (int(end[0]), str(end[1])) if count == int(end[0]) - after else None


def synced_height(conn: Any, *, chain: str, conn_id: str) -> int:
    """The end of the contiguous stored heights from the checkpoint (-1: nothing from genesis)."""
    checkpoint = store.get_checkpoint(conn, chain=chain, conn_id=conn_id)
    base = checkpoint[0] if checkpoint else -1
    top = contiguous_tip(conn, chain=chain, after=base)
    return top[0] if top else base


@dataclass
class SyncPlan:
    chain: str
    network: str
    conn_id: str
    start: int
    stop: int  # < start: nothing to sync
    node_height: int
    capped: bool  # the run stops short of the node's tip (max_blocks_per_run)
    explicit: bool  # a backfill range from the conf
    ranges: list[dict[str, Any]]

    @property
    def blocks(self) -> int:
        return max(0, self.stop - self.start + 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocks": self.blocks}


def split_ranges(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``start..stop`` (inclusive) cut into consecutive ranges of at most ``size`` heights."""
    return [(low, min(low + size - 1, stop)) for low in range(start, stop + 1, size)]


def plan(conn: Any, *, chain: str, node: NodeState, request: SyncRequest) -> SyncPlan:
    if request.start_height is not None:
        start = request.start_height
    else:
        start = synced_height(conn, chain=chain, conn_id=request.conn_id) + 1
    stop = node.height if request.end_height is None else request.end_height
    if stop > node.height:
        log.warning("end_height %d is above the node's tip %d: syncing up to the tip", stop, node.height)
        stop = node.height
    capped = False
    bounded = request.start_height is not None and request.end_height is not None
    if not bounded and stop - start + 1 > request.max_blocks_per_run:
        stop, capped = start + request.max_blocks_per_run - 1, True
    pieces = split_ranges(start, stop, request.range_size)
    if len(pieces) > MAX_MAPPED_RANGES:
        raise PermanentError(f"{stop - start + 1} blocks in ranges of {request.range_size} make {len(pieces)} mapped"
                             f" tasks (limit {MAX_MAPPED_RANGES}): raise range_size or split the backfill",
                             system=SYSTEM, reason="invalid_conf")
    ranges = [{"chain": chain, "network": node.network, "conn_id": request.conn_id, "start": low, "stop": high,
               "batch_size": request.batch_size, "rpc_batch_size": request.rpc_batch_size} for low, high in pieces]
    result = SyncPlan(chain, node.network, request.conn_id, start, stop, node.height, capped,
                      request.explicit_range, ranges)
    if ranges:
        log.info("plan for %r: heights %d..%d (%d blocks) in %d range(s) of <= %d; node tip %d%s", chain, start, stop,
                 result.blocks, len(ranges), request.range_size, node.height,
                 " (capped by max_blocks_per_run: the next run continues)" if capped else "")
    else:
        log.info("plan for %r: nothing to sync (next height %d, node tip %d)", chain, start, node.height)
    return result


# --------------------------------------------------------------------------- loading
@dataclass
class RangeResult:
    chain: str
    start: int
    stop: int
    blocks: int = 0
    rows: int = 0
    written: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tip_hash: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(hashes: Sequence[str], size: int) -> Iterator[tuple[int, Sequence[str]]]:
    for offset in range(0, len(hashes), size):
        yield offset, hashes[offset:offset + size]


# A batch is parsed in worker processes when it is big enough for the processes to pay for
# themselves (forking, pickling the rows back); smaller batches are parsed in this process.
PARSE_WORKERS = 2
PARALLEL_MIN_BLOCKS = 4
PARALLEL_MIN_BYTES = 1_000_000


def _parse_alone(raw: bytes, height: int, network: str) -> ParsedBlock | tuple[str, str | None]:
    """One block parsed on its own (in a worker process): spends of other blocks stay unpriced.
    A ``DataError`` comes back as (message, reason), since the exception's keywords do not pickle."""
    try:
        return parse_block(raw, height=height, network=network)
    except DataError as exc:
        return str(exc), exc.reason


def _parse_parallel(pool: Executor, raw: Sequence[bytes], *, first_height: int, network: str,
                    lookup: PrevoutLookup, known: PrevoutCache) -> list[ParsedBlock]:
    """What ``parse_blocks(raw, lookup=lookup, known=known)`` returns, with the blocks parsed in ``pool``.

    Each worker parses one block alone; here, block by block in height order, the outputs of the block
    join ``known`` (as ``parse_block`` adds them) and its unpriced spends take their values from it; what
    is still unknown then is asked of ``lookup`` in one call for the whole batch (nothing of the batch
    is stored yet, so one call answers what a call per block would), and the fees are completed.
    """
    heights = range(first_height, first_height + len(raw))
    parsed: list[ParsedBlock] = []
    unpriced: list[list[int]] = []  # per block: indexes of inputs still without a value
    ask: dict[Outpoint, None] = {}
    values = known.values
    for block in pool.map(_parse_alone, raw, heights, [network] * len(raw)):
        if isinstance(block, tuple):
            raise DataError(block[0], system=SYSTEM, reason=block[1])
        known.add(block.outputs)
        missing = []
        inputs = block.inputs
        for index, row in enumerate(inputs):
            if row.value is None and row.prev_txid is not None:
                value = values.get((row.prev_txid, row.prev_vout))  # type: ignore[arg-type]
                if value is None:
                    missing.append(index)
                    ask[(row.prev_txid, row.prev_vout)] = None  # type: ignore[index]
                else:
                    inputs[index] = row._replace(value=value)
        parsed.append(block)
        unpriced.append(missing)
    found = lookup(list(ask)) if ask else {}
    for block, missing in zip(parsed, unpriced, strict=True):
        inputs = block.inputs
        for index in missing:
            row = inputs[index]
            value = found.get((row.prev_txid, row.prev_vout))  # type: ignore[arg-type]
            if value is not None:
                inputs[index] = row._replace(value=value)
        position = 0
        transactions = block.transactions
        for index, tx in enumerate(transactions):
            spent = inputs[position:position + tx.input_count]
            position += tx.input_count
            if tx.fee is None and not tx.is_coinbase and spent and all(i.value is not None for i in spent):
                transactions[index] = tx._replace(fee=sum(i.value for i in spent) - tx.output_value)  # type: ignore[misc]
    return parsed


def sync_range(conn: Any, hook: BitcoinCoreHook, *, chain: str, network: str, start: int, stop: int,
               batch_size: int = 50, rpc_batch_size: int = 20, **_: Any) -> RangeResult:
    """Load heights ``start..stop`` (inclusive); one transaction per ``batch_size`` blocks."""
    began = time.monotonic()
    result = RangeResult(chain, start, stop)
    hashes = hook.get_block_hashes(start, stop)
    lookup = store.stored_prevouts(conn, chain=chain)
    known = PrevoutCache()
    total = ChainTotals()
    previous: str | None = None
    with ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="getblock"))
        workers: Executor | None = None  # started for the first batch big enough, shut down with the range
        batches = list(_batches(hashes, batch_size))

        def fetch(index: int) -> Future[list[bytes]]:
            return pool.submit(hook.get_blocks_bytes, batches[index][1], chunk_size=rpc_batch_size)

        pending = fetch(0) if batches else None
        for index, (offset, wanted) in enumerate(batches):
            raw = pending.result() if pending is not None else []
            pending = fetch(index + 1) if index + 1 < len(batches) else None  # overlap the next download
            if len(raw) >= PARALLEL_MIN_BLOCKS and sum(map(len, raw)) >= PARALLEL_MIN_BYTES:
                if workers is None:
                    workers = stack.enter_context(ProcessPoolExecutor(
                        max_workers=PARSE_WORKERS, mp_context=multiprocessing.get_context("fork")))
                parsed = _parse_parallel(workers, raw, first_height=start + offset, network=network, lookup=lookup,
                                         known=known)
            else:
                parsed = list(parse_blocks(raw, first_height=start + offset, network=network, lookup=lookup,
                                           known=known))
            for block, expected in zip(parsed, wanted, strict=True):
                if block.hash != expected:
                    raise DataError(f"getblock {expected} answered block {block.hash}", system=SYSTEM,
                                    reason="malformed_response")
                if previous is not None and block.block.prev_hash != previous:
                    raise TransientError(f"block {block.hash} at height {block.block.height} does not extend"
                                         f" {previous}: the node's chain changed during the sync (a reorg); retrying",
                                         system=SYSTEM, reason="reorg_during_sync")
                previous = block.hash
            written = store.load_blocks(conn, parsed, chain=chain)
            total.add(parsed, written)
            result.blocks += len(parsed)
            elapsed = time.monotonic() - began
            log.info("heights %d..%d of %d..%d: %d/%d blocks, %.1f blocks/s, %.0f rows/s",
                     start + offset, start + offset + len(parsed) - 1, start, stop, result.blocks, len(hashes),
                     result.blocks / elapsed if elapsed else 0.0, total.rows / elapsed if elapsed else 0.0)
            # ``known`` saves a lookup query for spends of this range's outputs; it may be dropped any
            # time, because every loaded batch is committed and the warehouse lookup finds its outputs.
            if len(known.values) > 2_000_000:
                known.values.clear()
    result.rows, result.written, result.tip_hash = total.rows, total.written, previous
    result.seconds = round(time.monotonic() - began, 3)
    log.info("range %d..%d done: %d blocks, %d rows parsed in %.2f s (%.1f blocks/s); written %s", start, stop,
             result.blocks, result.rows, result.seconds, result.blocks / result.seconds if result.seconds else 0.0,
             result.written)
    return result


@dataclass
class ChainTotals:
    rows: int = 0
    written: dict[str, int] = field(default_factory=lambda: {"blocks": 0, "transactions": 0, "inputs": 0,
                                                             "outputs": 0})

    def add(self, parsed: Sequence[Any], written: store.ChainCounts) -> None:
        self.rows += sum(1 + len(b.transactions) + len(b.inputs) + len(b.outputs) for b in parsed)
        for key, value in written.as_dict().items():
            self.written[key] += value


# --------------------------------------------------------------------------- after the ranges
def fill_missing_fees(conn: Any, *, chain: str) -> tuple[int, int]:
    """Fill input values whose spent output is stored now, then the fees they complete.

    Needed after parallel ranges: a range may spend outputs of a range loaded after it. Uses the
    partial index of inputs without a value, so it costs what is missing, not the table size.
    Returns (inputs filled, fees filled).
    """
    with store._transaction(conn) as cur:
        cur.execute("CREATE TEMP TABLE btc_fee_fill (block_hash text, txid text) ON COMMIT DROP")
        cur.execute(
            "WITH filled AS (UPDATE btc_inputs i SET value = o.value FROM btc_outputs o"
            " WHERE i.chain = %(chain)s AND i.value IS NULL AND i.prev_txid IS NOT NULL"
            " AND o.chain = i.chain AND o.txid = i.prev_txid AND o.idx = i.prev_vout RETURNING i.block_hash, i.txid)"
            " INSERT INTO btc_fee_fill SELECT DISTINCT block_hash, txid FROM filled", {"chain": chain})
        inputs = max(cur.rowcount, 0)
        fees = 0
        if inputs:
            cur.execute(
                "UPDATE btc_transactions t SET fee = s.input_value - t.output_value FROM ("
                " SELECT i.block_hash, i.txid, sum(i.value) AS input_value FROM btc_inputs i"
                " JOIN btc_fee_fill f ON f.block_hash = i.block_hash AND f.txid = i.txid WHERE i.chain = %(chain)s"
                " GROUP BY i.block_hash, i.txid HAVING bool_and(i.value IS NOT NULL)) s"
                " WHERE t.chain = %(chain)s AND t.block_hash = s.block_hash AND t.txid = s.txid"
                " AND t.fee IS NULL AND NOT t.is_coinbase", {"chain": chain})
            fees = max(cur.rowcount, 0)
    if inputs:
        log.info("filled %d input values and %d fees from outputs stored by other ranges", inputs, fees)
    return inputs, fees


def advance_checkpoint(conn: Any, *, chain: str, conn_id: str) -> tuple[int, str] | None:
    """Move the checkpoint to the end of the contiguous stored heights above it; returns it."""
    checkpoint = store.get_checkpoint(conn, chain=chain, conn_id=conn_id)
    top = contiguous_tip(conn, chain=chain, after=checkpoint[0] if checkpoint else -1)
    if top is not None and (checkpoint is None or top != checkpoint):
        store.set_checkpoint(conn, chain=chain, conn_id=conn_id, height=top[0], block_hash=top[1])
        log.info("checkpoint %s/%s: %s -> height %d %s", chain, conn_id,
                 f"height {checkpoint[0]}" if checkpoint else "none", top[0], top[1])
        return top
    return checkpoint


# --------------------------------------------------------------------------- verification
@dataclass
class Continuity:
    start: int
    stop: int
    missing: list[int] = field(default_factory=list)  # first few heights not stored
    missing_count: int = 0
    broken_links: list[int] = field(default_factory=list)  # heights whose prev_hash is not the stored block below

    @property
    def ok(self) -> bool:
        return not self.missing_count and not self.broken_links


def continuity(conn: Any, *, chain: str, start: int, stop: int, sample: int = 10) -> Continuity:
    """Gaps in ``start..stop`` and prev_hash links that do not match, including the link of ``start``
    to the stored block below it (when there is one)."""
    report = Continuity(start, stop)
    if stop < start:
        return report
    params = {"chain": chain, "start": start, "stop": stop}
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM btc_blocks WHERE chain = %(chain)s AND height BETWEEN %(start)s AND %(stop)s",
                    params)
        report.missing_count = (stop - start + 1) - int(cur.fetchone()[0])
        if report.missing_count:
            cur.execute(
                "SELECT g FROM generate_series(%(start)s::integer, %(stop)s::integer) g WHERE NOT EXISTS"
                " (SELECT 1 FROM btc_blocks b WHERE b.chain = %(chain)s AND b.height = g) ORDER BY g"
                f" LIMIT {int(sample)}", params)
            report.missing = [int(r[0]) for r in cur.fetchall()]
        cur.execute(
            "SELECT b.height FROM btc_blocks b JOIN btc_blocks p ON p.chain = b.chain AND p.height = b.height - 1"
            " WHERE b.chain = %(chain)s AND b.height BETWEEN %(start)s AND %(stop)s AND b.prev_hash <> p.hash"
            f" ORDER BY b.height LIMIT {int(sample)}", params)
        report.broken_links = [int(r[0]) for r in cur.fetchall()]
    return report


def check_continuity(conn: Any, *, chain: str, start: int, stop: int) -> Continuity:
    report = continuity(conn, chain=chain, start=start, stop=stop)
    if not report.ok:
        raise DataError(
            f"chain {chain!r} heights {start}..{stop}: {report.missing_count} missing (first {report.missing}),"
            f" prev_hash links broken at {report.broken_links}; the next run's reorg check repairs links broken by a"
            " reorg during this run, missing heights are re-synced from the checkpoint",
            system=SYSTEM, reason="chain_continuity")
    log.info("continuity of %r heights %d..%d: no gaps, every prev_hash link matches", chain, start, stop)
    return report


def check_tip_lag(node_height: int, synced: int, *, max_lag: int, enforce: bool) -> int:
    """``node_height - synced``; above ``max_lag`` a DataError (stale data) when ``enforce``, a warning when
    the run was not meant to reach the tip (a capped catch-up or a backfill range)."""
    lag = node_height - synced
    if lag <= max_lag:
        log.info("tip lag %d block(s) (node %d, synced %d; limit %d)", lag, node_height, synced, max_lag)
    elif enforce:
        raise DataError(f"synced height {synced} lags the node's tip {node_height} by {lag} blocks (limit {max_lag})",
                        system=SYSTEM, reason="tip_lag")
    else:
        log.warning("tip lag %d blocks above the limit %d (node %d, synced %d): this run was not meant to reach the"
                    " tip (catching up or a backfill range)", lag, max_lag, node_height, synced)
    return lag


# --------------------------------------------------------------------------- the Asset event
def blocks_event_extra(conn: Any, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extra`` of a ``btc_blocks`` event for a run's plan (see ``tributary.bitcoin.assets``)."""
    reorg = plan.get("reorg")
    to_height = plan["stop"] if plan["blocks"] else reorg["fork_height"]
    from_height = min([plan["start"]] + ([reorg["fork_height"] + 1] if reorg else []))
    tip_hash = store.stored_hashes(conn, chain=plan["chain"], start=to_height, stop=to_height).get(to_height)
    return {"chain": plan["chain"], "from_height": from_height, "to_height": to_height, "tip_hash": tip_hash,
            "blocks": plan["blocks"],
            "reorg": {k: reorg[k] for k in ("fork_height", "depth", "old_tip", "new_tip")} if reorg else None}


# --------------------------------------------------------------------------- the DAG's tasks
def check_reorg_step(params: Mapping[str, Any], *, run_id: str | None, max_reorg_depth_variable: Any = None,
                     warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``check_reorg``: validate the conf, read the node, roll back a reorg (see :func:`check_reorg`).
    ``max_reorg_depth_variable`` is the value of the Variable :data:`MAX_REORG_DEPTH_VARIABLE`."""
    request = SyncRequest.from_params(params)
    hook = BitcoinCoreHook(request.conn_id)
    node = NodeState.read(hook)
    chain = request.chain_label or node.network
    max_depth = resolve_max_reorg_depth(request.max_reorg_depth, node.network, max_reorg_depth_variable)
    log.info("node %s: chain %s, tip %d %s; stored as %r; max reorg depth %d", request.conn_id, node.network,
             node.height, node.best_hash, chain, max_depth)
    with WarehouseHook(warehouse_conn_id).session() as conn:
        reorg = check_reorg(conn, hook, chain=chain, node=node, max_depth=max_depth, conn_id=request.conn_id,
                            run_id=run_id)
    return {"chain": chain, "node": asdict(node), "reorg": reorg.as_dict() if reorg else None}


def plan_step(state: Mapping[str, Any], params: Mapping[str, Any], *,
              warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Task ``plan_ranges``: (the ranges to map ``sync_range`` over, the run's plan for the later tasks)."""
    request = SyncRequest.from_params(params)
    with WarehouseHook(warehouse_conn_id).session() as conn:
        planned = plan(conn, chain=state["chain"], node=NodeState(**state["node"]), request=request)
    return planned.ranges, {**planned.as_dict(), "reorg": state["reorg"], "max_tip_lag": request.max_tip_lag}


def sync_range_step(block_range: Mapping[str, Any], *, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``sync_range``: load one range of the plan (see :func:`sync_range`)."""
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return sync_range(conn, BitcoinCoreHook(block_range["conn_id"]), **block_range).as_dict()


def finalize_step(run_plan: Mapping[str, Any], *, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``finalize``: fill the fees other ranges made computable, then move the checkpoint."""
    with WarehouseHook(warehouse_conn_id).session() as conn:
        inputs, fees = fill_missing_fees(conn, chain=run_plan["chain"])
        checkpoint = advance_checkpoint(conn, chain=run_plan["chain"], conn_id=run_plan["conn_id"])
    return {"inputs_filled": inputs, "fees_filled": fees,
            "checkpoint": {"height": checkpoint[0], "hash": checkpoint[1]} if checkpoint else None}


def continuity_step(run_plan: Mapping[str, Any], *, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``verify_continuity``: the planned heights have no gap and every ``prev_hash`` links."""
    if run_plan["blocks"] == 0:
        log.info("nothing was synced: no range to verify")
        return {"ok": True, "start": run_plan["start"], "stop": run_plan["stop"]}
    with WarehouseHook(warehouse_conn_id).session() as conn:
        report = check_continuity(conn, chain=run_plan["chain"], start=run_plan["start"], stop=run_plan["stop"])
    return {"ok": report.ok, **asdict(report)}


def tip_lag_step(run_plan: Mapping[str, Any], finalized: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``verify_tip_lag``: the checkpoint is within ``max_tip_lag`` of the node's tip (enforced only
    for runs meant to reach it, see :func:`check_tip_lag`)."""
    node_height = BitcoinCoreHook(run_plan["conn_id"]).get_block_count()
    synced = finalized["checkpoint"]["height"] if finalized["checkpoint"] else -1
    lag = check_tip_lag(node_height, synced, max_lag=run_plan["max_tip_lag"],
                        enforce=not (run_plan["explicit"] or run_plan["capped"]))
    return {"node_height": node_height, "synced_height": synced, "lag": lag}


def publish_step(run_plan: Mapping[str, Any], *,
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any] | None:
    """Task ``publish``: the ``extra`` of the run's ``btc_blocks`` event, or None when the run changed
    nothing (no new block, no reorg) and there is no event to emit."""
    if run_plan["blocks"] == 0 and run_plan["reorg"] is None:
        return None
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return blocks_event_extra(conn, run_plan)
