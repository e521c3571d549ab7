"""Mempool snapshots, fee estimates and watched transactions (the ``bitcoin_mempool`` DAG's logic).

No Airflow import. Three parts:

* **fee-rate statistics** shared with the block stats of :mod:`tributary.bitcoin.block_stats`:
  :func:`weighted_percentiles` is Bitcoin Core's ``getblockstats`` percentile walk (sort by fee rate,
  walk the cumulative weight), with exact sat/vB rates instead of Core's integer ones;
* **snapshots**: ``getrawmempool true`` -> one :class:`MempoolSnapshot` row (count, vsize, fees,
  percentiles, histogram), ``estimatesmartfee`` per target -> :class:`FeeEstimate` rows;
* **watched transactions**: a small state machine (:func:`decide`) over what the node says about each
  txid. ``unseen`` -> ``mempool`` -> ``confirmed``; a transaction that vanishes unconfirmed is
  ``replaced`` when another transaction spends one of the inputs recorded when it was first seen
  (``replaced_by``), else ``dropped``. A confirmed transaction whose block is reorganised away goes
  back to ``mempool`` (or ``dropped`` / ``replaced``). Without ``-txindex`` the block scan of the
  spender search also finds a watched transaction's own confirmation (it spends its own inputs).

Every write is an upsert keyed by natural keys ((chain, snapshot key), (chain, txid)), so any task
may run twice. The DAG's tasks call the ``*_step`` functions at the end, which open the node and the
warehouse (``WarehouseHook(...).session()``) themselves.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.amounts import SATS_PER_BTC, btc_to_sats
from tributary.core.errors import DataError, ErrorClass, PermanentError, TributaryError, classify
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

TXID_PATTERN = r"^[0-9a-f]{64}$"
_TXID = re.compile(TXID_PATTERN)
PERCENTILES = (10, 25, 50, 75, 90)
DEFAULT_FEE_TARGETS = (1, 3, 6, 12, 144)
# Lower edges of the fee-rate histogram bins, sat/vB (the last bin is open-ended).
HISTOGRAM_EDGES = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40, 50, 60, 80, 100, 125, 150, 200, 300, 500,
                   1000, 2000)
STATUSES = ("unseen", "mempool", "confirmed", "dropped", "replaced")
_RATE = Decimal("0.001")


# --------------------------------------------------------------------------- fee-rate statistics
def sats(amount: Any) -> int:
    """A BTC amount as the hook decodes it (Decimal) to satoshis."""
    try:
        return btc_to_sats(str(amount))
    except (TypeError, ValueError) as exc:
        raise DataError(f"amount {amount!r} BTC is not a whole number of satoshis", system=SYSTEM,
                        reason="malformed_amount") from exc


def feerate(fee_sat: int, vsize: Decimal | int) -> Decimal:
    """sat/vB, rounded to 0.001."""
    if not vsize:
        return Decimal(0)
    return (Decimal(fee_sat) / Decimal(vsize)).quantize(_RATE, rounding=ROUND_HALF_UP)


def weighted_percentiles(pairs: Iterable[tuple[Decimal, int]],
                         percentiles: Sequence[int] = PERCENTILES) -> list[Decimal | None]:
    """The fee rate at each percentile of cumulative weight (Core's ``CalculatePercentilesByWeight``).

    ``pairs`` are (fee rate, weight); an empty input gives ``None`` for every percentile.
    """
    ordered = sorted(pairs)
    if not ordered:
        return [None] * len(percentiles)
    total = sum(w for _, w in ordered)
    thresholds = [total * p / 100 for p in percentiles]
    result: list[Decimal | None] = [None] * len(percentiles)
    index, cumulative = 0, 0
    for rate, weight in ordered:
        cumulative += weight
        while index < len(thresholds) and cumulative >= thresholds[index]:
            result[index] = rate
            index += 1
    for i in range(index, len(result)):
        result[i] = ordered[-1][0]
    return result


def histogram(entries: Iterable[tuple[Decimal, int, int]]) -> list[dict[str, Any]]:
    """(fee rate, vsize, fee) -> non-empty bins ``{"min", "max", "count", "vsize", "fee"}`` by HISTOGRAM_EDGES."""
    bins: dict[int, dict[str, Any]] = {}
    for rate, vsize, fee in entries:
        slot = max(i for i, edge in enumerate(HISTOGRAM_EDGES) if rate >= edge) if rate >= 0 else 0
        upper = HISTOGRAM_EDGES[slot + 1] if slot + 1 < len(HISTOGRAM_EDGES) else None
        item = bins.setdefault(slot, {"min": HISTOGRAM_EDGES[slot], "max": upper, "count": 0, "vsize": 0, "fee": 0})
        item["count"] += 1
        item["vsize"] += int(vsize)
        item["fee"] += int(fee)
    return [bins[k] for k in sorted(bins)]


# --------------------------------------------------------------------------- mempool snapshot
@dataclass(frozen=True)
class MempoolSnapshot:
    tx_count: int
    vsize_total: int
    fee_total: int
    min_feerate: Decimal | None
    max_feerate: Decimal | None
    percentiles: list[Decimal | None]
    histogram: list[dict[str, Any]]


def _entry_fee(txid: str, entry: Mapping[str, Any]) -> int:
    fees = entry.get("fees")
    if isinstance(fees, Mapping) and fees.get("base") is not None:
        return sats(fees["base"])
    if entry.get("fee") is not None:  # Core < 21 (deprecated field)
        return sats(entry["fee"])
    raise DataError(f"mempool entry {txid} has no fee", system=SYSTEM, reason="malformed_response")


def summarize_mempool(verbose_mempool: Mapping[str, Mapping[str, Any]]) -> MempoolSnapshot:
    """One snapshot row from ``getrawmempool true`` (txid -> entry)."""
    rows: list[tuple[Decimal, int, int]] = []
    for txid, entry in verbose_mempool.items():
        vsize = int(entry.get("vsize") or 0)
        if vsize <= 0:
            raise DataError(f"mempool entry {txid} has no vsize", system=SYSTEM, reason="malformed_response")
        fee = _entry_fee(txid, entry)
        rows.append((feerate(fee, vsize), vsize, fee))
    rates = [r for r, _, _ in rows]
    return MempoolSnapshot(
        tx_count=len(rows),
        vsize_total=sum(v for _, v, _ in rows),
        fee_total=sum(f for _, _, f in rows),
        min_feerate=min(rates) if rates else None,
        max_feerate=max(rates) if rates else None,
        percentiles=weighted_percentiles((r, v) for r, v, _ in rows),
        histogram=histogram(rows),
    )


@dataclass(frozen=True)
class FeeEstimate:
    conf_target: int
    mode: str
    feerate_sat_vb: Decimal | None
    blocks: int | None
    errors: str | None


def estimate_fees(hook: Any, targets: Sequence[int], mode: str = "conservative") -> list[FeeEstimate]:
    """``estimatesmartfee`` for every target in one batch; a missing estimate is a row with ``errors``."""
    answers = hook.batch([("estimatesmartfee", [int(t), mode]) for t in targets], wallet="")
    estimates = []
    for target, answer in zip(targets, answers, strict=True):
        rate = answer.get("feerate")
        estimates.append(FeeEstimate(
            conf_target=int(target), mode=mode,
            feerate_sat_vb=(Decimal(str(rate)) * SATS_PER_BTC / 1000).quantize(_RATE) if rate is not None else None,
            blocks=int(answer["blocks"]) if answer.get("blocks") is not None else None,
            errors="; ".join(answer.get("errors") or []) or None))
    return estimates


# --------------------------------------------------------------------------- storage
def _commit(conn: Any, statements: Iterable[tuple[str, Any]]) -> None:
    try:
        with conn.cursor() as cur:
            for sql, params in statements:
                cur.execute(sql, params)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def store_snapshot(conn: Any, *, chain: str, key: str, snapshot: MempoolSnapshot, taken_at: datetime,
                   tip_height: int | None, tip_hash: str | None) -> None:
    """Upsert the snapshot of ``key`` (a re-run of the same DAG run replaces it)."""
    p = snapshot.percentiles
    _commit(conn, [(
        "INSERT INTO btc_mempool_snapshots (chain, snapshot_key, taken_at, tip_height, tip_hash, tx_count,"
        " vsize_total, fee_total, min_feerate, max_feerate, feerate_p10, feerate_p25, feerate_p50, feerate_p75,"
        " feerate_p90, feerate_histogram) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (chain, snapshot_key) DO UPDATE SET taken_at = EXCLUDED.taken_at,"
        " tip_height = EXCLUDED.tip_height, tip_hash = EXCLUDED.tip_hash, tx_count = EXCLUDED.tx_count,"
        " vsize_total = EXCLUDED.vsize_total, fee_total = EXCLUDED.fee_total,"
        " min_feerate = EXCLUDED.min_feerate, max_feerate = EXCLUDED.max_feerate,"
        " feerate_p10 = EXCLUDED.feerate_p10, feerate_p25 = EXCLUDED.feerate_p25,"
        " feerate_p50 = EXCLUDED.feerate_p50, feerate_p75 = EXCLUDED.feerate_p75,"
        " feerate_p90 = EXCLUDED.feerate_p90, feerate_histogram = EXCLUDED.feerate_histogram",
        (chain, key, taken_at, tip_height, tip_hash, snapshot.tx_count, snapshot.vsize_total, snapshot.fee_total,
         snapshot.min_feerate, snapshot.max_feerate, *p, json.dumps(snapshot.histogram)))])


def store_fee_estimates(conn: Any, *, chain: str, key: str, estimates: Sequence[FeeEstimate],
                        estimated_at: datetime) -> None:
    _commit(conn, [(
        "INSERT INTO btc_fee_estimates (chain, snapshot_key, conf_target, estimate_mode, estimated_at,"
        " feerate_sat_vb, blocks, errors) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (chain, snapshot_key, conf_target, estimate_mode) DO UPDATE SET"
        " estimated_at = EXCLUDED.estimated_at, feerate_sat_vb = EXCLUDED.feerate_sat_vb,"
        " blocks = EXCLUDED.blocks, errors = EXCLUDED.errors",
        (chain, key, e.conf_target, e.mode, estimated_at, e.feerate_sat_vb, e.blocks, e.errors))
        for e in estimates])


def take_snapshot(hook: Any, conn: Any, *, chain: str, key: str) -> MempoolSnapshot:
    """Read the node's mempool at its current tip and store it as snapshot ``key`` (idempotent per key)."""
    taken_at = datetime.now(UTC)
    tip_hash = hook.get_best_block_hash()
    snapshot = summarize_mempool(hook.get_raw_mempool(verbose=True))
    tip_height = int(hook.get_block_header(tip_hash)["height"])
    store_snapshot(conn, chain=chain, key=key, snapshot=snapshot, taken_at=taken_at, tip_height=tip_height,
                   tip_hash=tip_hash)
    log.info("mempool at tip %d: %d txs, %d vB, %d sat, median %s sat/vB", tip_height, snapshot.tx_count,
             snapshot.vsize_total, snapshot.fee_total, snapshot.percentiles[2])
    return snapshot


def record_fee_estimates(hook: Any, conn: Any, *, chain: str, key: str, targets: Sequence[int],
                         mode: str = "conservative") -> list[FeeEstimate]:
    """``estimatesmartfee`` for every target, stored under ``key`` (idempotent per key)."""
    estimates = estimate_fees(hook, targets, mode)
    store_fee_estimates(conn, chain=chain, key=key, estimates=estimates, estimated_at=datetime.now(UTC))
    for e in estimates:
        log.info("target %d: %s sat/vB", e.conf_target, e.feerate_sat_vb if e.feerate_sat_vb is not None
                 else e.errors)
    return estimates


def normalize_txids(values: Iterable[Any]) -> list[str]:
    """Validated, de-duplicated txids (64 lowercase hex); anything else is a permanent error."""
    txids: list[str] = []
    for value in values:
        if not isinstance(value, str) or not _TXID.match(value):
            raise PermanentError(f"not a txid (64 lowercase hex characters): {value!r:.80}", system=SYSTEM,
                                 reason="invalid_txid")
        if value not in txids:
            txids.append(value)
    return txids


def add_watches(conn: Any, *, chain: str, txids: Sequence[str], label: str | None = None) -> int:
    """Start watching ``txids`` (status ``unseen`` until a run finds them); returns how many are new.

    Already-watched txids keep their state; a non-null ``label`` replaces theirs.
    """
    txids = normalize_txids(txids)
    if not txids:
        return 0
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM btc_watched_txs WHERE chain = %s AND txid = ANY(%s)", (chain, txids))
        known = int(cur.fetchone()[0])
    _commit(conn, [(
        "INSERT INTO btc_watched_txs (chain, txid, label) VALUES (%s, %s, %s) ON CONFLICT (chain, txid) DO UPDATE"
        " SET label = COALESCE(EXCLUDED.label, btc_watched_txs.label), updated_at = now()"
        " WHERE EXCLUDED.label IS NOT NULL AND EXCLUDED.label IS DISTINCT FROM btc_watched_txs.label",
        (chain, txid, label)) for txid in txids])
    return len(txids) - known


def remove_watches(conn: Any, *, chain: str, txids: Sequence[str]) -> int:
    txids = normalize_txids(txids)
    if not txids:
        return 0
    with conn.cursor() as cur:
        cur.execute("DELETE FROM btc_watched_txs WHERE chain = %s AND txid = ANY(%s)", (chain, txids))
        removed = cur.rowcount
    conn.commit()
    return removed


# --------------------------------------------------------------------------- watched transactions
@dataclass(frozen=True)
class Watch:
    """A row of ``btc_watched_txs`` (the fields the state machine reads and writes)."""

    txid: str
    status: str = "unseen"
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    seen_height: int | None = None
    confirmations: int = 0
    block_hash: str | None = None
    block_height: int | None = None
    replaced_by: str | None = None
    inputs: tuple[str, ...] | None = None
    fee: int | None = None
    vsize: int | None = None


@dataclass(frozen=True)
class Found:
    """What the node says about a txid it knows: in a block of the active chain, or in the mempool."""

    block_hash: str | None = None
    block_height: int | None = None
    confirmations: int = 0
    inputs: tuple[str, ...] | None = None
    vsize: int | None = None
    fee: int | None = None


@dataclass(frozen=True)
class Spender:
    txid: str
    block_hash: str | None = None  # None: the spender is in the mempool
    block_height: int | None = None


def decide(watch: Watch, found: Found | None, spender: Spender | None, *, now: datetime,
           tip_height: int) -> Watch:
    """The next state of ``watch`` given this run's observation (pure)."""
    if found is None and spender is not None and spender.txid == watch.txid and spender.block_hash:
        # No txindex: the block scan found the transaction itself spending its inputs.
        found = Found(block_hash=spender.block_hash, block_height=spender.block_height,
                      confirmations=tip_height - (spender.block_height or tip_height) + 1)
    if found is not None:
        confirmed = bool(found.block_hash) and found.confirmations > 0
        return replace(
            watch,
            status="confirmed" if confirmed else "mempool",
            first_seen=watch.first_seen or now,
            last_seen=now,
            seen_height=tip_height,
            confirmations=found.confirmations if confirmed else 0,
            block_hash=found.block_hash if confirmed else None,
            block_height=found.block_height if confirmed else None,
            replaced_by=None,
            inputs=watch.inputs or found.inputs,
            fee=found.fee if found.fee is not None else watch.fee,
            vsize=found.vsize or watch.vsize,
        )
    if watch.status == "unseen":
        return watch
    if spender is not None and spender.txid != watch.txid:
        return replace(watch, status="replaced", replaced_by=spender.txid, confirmations=0, block_hash=None,
                       block_height=None)
    if watch.status == "replaced":
        return watch  # still gone; the spender found earlier stays the answer
    return replace(watch, status="dropped", confirmations=0, block_hash=None, block_height=None)


def _outpoints(vin: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(f"{i['txid']}:{int(i['vout'])}" for i in vin if "coinbase" not in i and i.get("txid"))


def _found(answer: Mapping[str, Any], tip_height: int) -> Found | None:
    """A ``getrawtransaction`` verbose answer; ``None`` when it comes from a block off the active chain."""
    if answer.get("in_active_chain") is False:
        return None
    block_hash = answer.get("blockhash")
    confirmations = int(answer.get("confirmations") or 0)
    if block_hash and confirmations <= 0:
        return None  # conflicted / off the active chain
    return Found(block_hash=block_hash, confirmations=confirmations,
                 block_height=tip_height - confirmations + 1 if block_hash else None,
                 inputs=_outpoints(answer.get("vin") or []), vsize=answer.get("vsize"))


def _not_found(error: Any) -> bool:
    if not isinstance(error, TributaryError):
        return False
    if classify(error).error_class is ErrorClass.TRANSIENT:
        raise error
    return getattr(error, "code", None) in (-5, -8)  # unknown tx / block not found


def lookup_transactions(hook: Any, watches: Sequence[Watch], tip_height: int) -> dict[str, Found]:
    """Find each watched txid on the node: a confirmed one first in its recorded block (works without txindex)."""
    found: dict[str, Found] = {}
    first = [(w.txid, [w.txid, 1, w.block_hash] if w.block_hash else [w.txid, 1]) for w in watches]
    again: list[str] = []
    answers = hook.batch([("getrawtransaction", p) for _, p in first], wallet="", raise_errors=False) if first else []
    for (txid, params), answer in zip(first, answers, strict=True):
        if isinstance(answer, Exception):
            if not _not_found(answer):
                raise answer
            if len(params) == 3:
                again.append(txid)
            continue
        hit = _found(answer, tip_height)
        if hit is None and len(params) == 3:
            again.append(txid)
        elif hit is not None:
            found[txid] = hit
    if again:
        answers = hook.batch([("getrawtransaction", [t, 1]) for t in again], wallet="", raise_errors=False)
        for txid, answer in zip(again, answers, strict=True):
            if isinstance(answer, Exception):
                if not _not_found(answer):
                    raise answer
                continue
            hit = _found(answer, tip_height)
            if hit is not None:
                found[txid] = hit
    in_mempool = [t for t, f in found.items() if not f.block_hash]
    if in_mempool:
        entries = hook.batch([("getmempoolentry", [t]) for t in in_mempool], wallet="", raise_errors=False)
        for txid, entry in zip(in_mempool, entries, strict=True):
            if isinstance(entry, Mapping):
                found[txid] = replace(found[txid], fee=_entry_fee(txid, entry), vsize=int(entry.get("vsize") or 0)
                                      or found[txid].vsize)
    return found


def _mempool_spenders(hook: Any, outpoints: set[str], *, chunk_size: int = 500) -> dict[str, Spender]:
    """Mempool transactions spending ``outpoints``: ``gettxspendingprevout`` (Core >= 24), else a scan."""
    from tributary.bitcoin.hook import BitcoinRpcError

    request = [{"txid": o.split(":")[0], "vout": int(o.split(":")[1])} for o in sorted(outpoints)]
    try:
        answer = hook.call("gettxspendingprevout", request, wallet="", retry=True)
        return {f"{a['txid']}:{int(a['vout'])}": Spender(str(a["spendingtxid"]))
                for a in answer if a.get("spendingtxid")}
    except BitcoinRpcError as exc:
        if exc.code != -32601:
            raise
    spenders: dict[str, Spender] = {}
    txids = list(hook.get_raw_mempool())
    log.info("node has no gettxspendingprevout: scanning %d mempool transactions for %d outpoints",
             len(txids), len(outpoints))
    answers = hook.batch_chunked((("getrawtransaction", [t, 1]) for t in txids), chunk_size=chunk_size,
                                 wallet="", raise_errors=False)
    for txid, answer in zip(txids, answers, strict=True):
        if isinstance(answer, Mapping):
            for outpoint in _outpoints(answer.get("vin") or []):
                if outpoint in outpoints:
                    spenders[outpoint] = Spender(txid)
    return spenders


def _block_spenders(hook: Any, outpoints: set[str], start: int, stop: int) -> dict[str, Spender]:
    """Transactions of active blocks ``start..stop`` spending ``outpoints`` (getblock verbosity 2)."""
    spenders: dict[str, Spender] = {}
    if start > stop:
        return spenders
    hashes = hook.get_block_hashes(start, stop)
    for height, block_hash in zip(range(start, stop + 1), hashes, strict=True):
        block = hook.call("getblock", block_hash, 2, wallet="")
        for tx in block.get("tx") or []:
            for outpoint in _outpoints(tx.get("vin") or []):
                if outpoint in outpoints:
                    spenders[outpoint] = Spender(str(tx["txid"]), block_hash, height)
    return spenders


def find_spenders(hook: Any, watches: Sequence[Watch], tip_height: int, *,
                  scan_blocks: int = 144) -> dict[str, Spender]:
    """Per watched txid, a transaction spending one of its recorded inputs (confirmed spenders win)."""
    wanted = {o for w in watches for o in (w.inputs or ())}
    if not wanted:
        return {}
    # From where it was last seen (a confirmed one: its old block, which a reorg may have replaced
    # by a block holding a conflicting spend); the block at seen_height itself may have raced that run.
    since = min(min(h for h in (w.block_height, w.seen_height, tip_height) if h is not None) for w in watches)
    start = max(since, tip_height - scan_blocks + 1, 0)
    spenders = _mempool_spenders(hook, wanted)
    spenders.update(_block_spenders(hook, wanted, start, tip_height))
    result: dict[str, Spender] = {}
    for watch in watches:
        hits = [spenders[o] for o in (watch.inputs or ()) if o in spenders]
        if hits:
            result[watch.txid] = next((h for h in hits if h.block_hash), hits[0])
    return result


_WATCH_COLUMNS = ("txid", "status", "first_seen", "last_seen", "seen_height", "confirmations", "block_hash",
                  "block_height", "replaced_by", "inputs", "fee", "vsize")


def load_watches(conn: Any, *, chain: str, final_confirmations: int) -> list[Watch]:
    """Watched transactions still worth checking: all but those confirmed ``final_confirmations`` deep."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_WATCH_COLUMNS)} FROM btc_watched_txs WHERE chain = %s"
                    " AND NOT (status = 'confirmed' AND confirmations >= %s) ORDER BY txid",
                    (chain, final_confirmations))
        rows = cur.fetchall()
    return [Watch(**{**dict(zip(_WATCH_COLUMNS, row, strict=True)),
                     "inputs": tuple(row[9]) if row[9] is not None else None}) for row in rows]


def save_watches(conn: Any, *, chain: str, watches: Sequence[Watch]) -> None:
    sets = ", ".join(f"{c} = %s" for c in _WATCH_COLUMNS[1:])
    _commit(conn, [(f"UPDATE btc_watched_txs SET {sets}, updated_at = now() WHERE chain = %s AND txid = %s",
                    (*[list(w.inputs) if c == "inputs" and w.inputs is not None else getattr(w, c)
                       for c in _WATCH_COLUMNS[1:]], chain, w.txid)) for w in watches])


@dataclass
class TrackReport:
    checked: int = 0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def track_watched(hook: Any, conn: Any, *, chain: str, final_confirmations: int = 6, scan_blocks: int = 144,
                  now: datetime | None = None) -> TrackReport:
    """Update every watched transaction of ``chain`` from the node; returns the transitions made."""
    now = now or datetime.now(UTC)
    watches = load_watches(conn, chain=chain, final_confirmations=final_confirmations)
    report = TrackReport(checked=len(watches))
    if not watches:
        return report
    tip_height = hook.get_block_count()
    found = lookup_transactions(hook, watches, tip_height)
    vanished = [w for w in watches if w.txid not in found and w.status in ("mempool", "confirmed", "dropped")
                and w.inputs]
    spenders = find_spenders(hook, vanished, tip_height, scan_blocks=scan_blocks) if vanished else {}
    updated = []
    for watch in watches:
        new = decide(watch, found.get(watch.txid), spenders.get(watch.txid), now=now, tip_height=tip_height)
        if new != watch:
            updated.append(new)
        if new.status != watch.status:
            report.transitions.append({"txid": watch.txid, "from": watch.status, "to": new.status,
                                       "replaced_by": new.replaced_by, "confirmations": new.confirmations})
        report.statuses[new.status] = report.statuses.get(new.status, 0) + 1
    save_watches(conn, chain=chain, watches=updated)
    return report


# --------------------------------------------------------------------------- the DAG's tasks
# The DAG file imports this module when it is parsed (for its params' constants): the hook and the
# Postgres provider are imported only when a task runs.
def register_watches_step(conn_id: str, *, chain_label: str | None, watch: Sequence[str], unwatch: Sequence[str],
                          label: str | None = None, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``register_watches``: the run's ``chain`` (``chain_label``, else the node's chain name), with
    ``watch`` added to and ``unwatch`` removed from the watched txids."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.storage.warehouse import WarehouseHook

    chain = chain_label or BitcoinCoreHook(conn_id).chain_name()
    with WarehouseHook(warehouse_conn_id).session() as conn:
        added = add_watches(conn, chain=chain, txids=watch, label=label)
        removed = remove_watches(conn, chain=chain, txids=unwatch)
    log.info("%s: %d txid(s) newly watched, %d removed", chain, added, removed)
    return {"chain": chain, "added": added, "removed": removed}


def snapshot_step(conn_id: str, *, chain: str, key: str,
                  warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``snapshot_mempool``: :func:`take_snapshot` of the node of ``conn_id``."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.storage.warehouse import WarehouseHook

    with WarehouseHook(warehouse_conn_id).session() as conn:
        snapshot = take_snapshot(BitcoinCoreHook(conn_id), conn, chain=chain, key=key)
    return {"tx_count": snapshot.tx_count, "vsize_total": snapshot.vsize_total, "fee_total": snapshot.fee_total}


def fee_estimates_step(conn_id: str, *, chain: str, key: str, targets: Sequence[int], mode: str = "conservative",
                       warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, str | None]:
    """Task ``estimate_fees``: :func:`record_fee_estimates`; sat/vB by target (None: no estimate)."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.storage.warehouse import WarehouseHook

    with WarehouseHook(warehouse_conn_id).session() as conn:
        estimates = record_fee_estimates(BitcoinCoreHook(conn_id), conn, chain=chain, key=key, targets=targets,
                                         mode=mode)
    return {str(e.conf_target): str(e.feerate_sat_vb) if e.feerate_sat_vb is not None else None for e in estimates}


def track_watched_step(conn_id: str, *, chain: str, final_confirmations: int = 6, scan_blocks: int = 144,
                       warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Task ``track_watched_txs``: :func:`track_watched`, each transition logged."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.storage.warehouse import WarehouseHook

    with WarehouseHook(warehouse_conn_id).session() as conn:
        report = track_watched(BitcoinCoreHook(conn_id), conn, chain=chain, final_confirmations=final_confirmations,
                               scan_blocks=scan_blocks)
    for t in report.transitions:
        log.info("%s: %s -> %s%s%s", t["txid"], t["from"], t["to"],
                 f" by {t['replaced_by']}" if t["replaced_by"] else "",
                 f" ({t['confirmations']} conf)" if t["to"] == "confirmed" else "")
    log.info("%d watched tx(s) checked: %s", report.checked, report.statuses)
    return {"checked": report.checked, "statuses": report.statuses, "transitions": report.transitions}
