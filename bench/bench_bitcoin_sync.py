"""Benchmark: the chain sync's batched RPC + COPY path against a naive row-by-row sync.

A private regtest devnet (``devnets/bitcoin``) gets ``--blocks`` blocks on top of 120 mined ones, each
with ``--txs`` wallet transactions (payments with change, so spends of spends and fees), then the same
heights are synced twice into a dedicated warehouse database, under two ``chain`` labels:

* **batched** (what ``bitcoin_chain_sync`` runs): ``tributary.bitcoin.sync.sync_range`` over the whole
  range (``getblockhash`` in batches of 500, ``getblock <hash> 0`` in batches of ``--rpc-batch`` per
  HTTP request with the next batch downloaded while the current one is parsed and loaded, COPY into
  staging tables + upsert, one transaction per ``--batch`` blocks), then the DAG's ``finalize`` work
  (fee fill, checkpoint).
* **naive** (the baseline): per block one ``getblockhash`` and one ``getblock`` RPC, the same parser
  and prevout lookup, one ``INSERT ... ON CONFLICT DO NOTHING`` per row, a commit per block.

Both must store the same rows. Prints the blocks/s and rows/s of both and their ratio; exits non-zero
when the ratio is below the target (5x) or the stored rows differ.

    .venv/bin/python bench/bench_bitcoin_sync.py [--blocks 600] [--txs 4] [--batch 200] [--rpc-batch 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RATIO_TARGET = 5.0
TABLES = ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs")


def node_hook(wallet: str = "") -> Any:
    """A hook whose HTTP requests each use a fresh connection.

    The devnet's server (``http.server``, unbuffered) writes headers and body in two TCP segments;
    on a kept-alive connection Nagle's algorithm then waits for the client's delayed ACK, ~40 ms per
    request, which real bitcoind (libevent) does not do. A connection per request sidesteps that for
    both paths (at ~0.1 ms per local TCP connect), so the figures measure the sync, not the test double.
    """
    from tributary.bitcoin.hook import BitcoinCoreHook

    hook = BitcoinCoreHook(wallet=wallet)
    hook.session = FreshConnections(hook.get_conn())
    return hook


class FreshConnections:
    """Stands in for the hook's ``requests.Session``: same headers, a new connection per POST."""

    def __init__(self, template: Any) -> None:
        self.headers = dict(template.headers)
        template.close()

    def post(self, url: str, **kwargs: Any) -> Any:
        import requests

        with requests.Session() as session:
            session.headers.update(self.headers)
            return session.post(url, **kwargs)


def populate(hook: Any, payer: Any, sink: Any, blocks: int, txs: int) -> int:
    """Mine 120 blocks to the payer, then ``blocks`` more (to the sink) with ``txs`` payments each from
    the payer to the sink; returns the tip height. Paying and mining away from the payer keeps its
    wallet small, so the devnet builds the chain in linear time."""
    hook.call("generatetoaddress", 120, payer.call("getnewaddress"))
    targets = sink.batch([("getnewaddress", [])] * 64)
    miner = targets[0]
    hook.call("unloadwallet", "sink")  # an unloaded wallet is not updated (and rewritten) at every block
    started = time.perf_counter()
    for n in range(blocks):
        if txs:
            payments = [("sendtoaddress", [targets[(n * txs + i) % len(targets)], Decimal("0.01") * (1 + (n + i) % 7)])
                        for i in range(txs)]
            payer.batch(payments, retry=False)
        hook.call("generatetoaddress", 1, miner)
        if (n + 1) % 250 == 0:
            print(f"  mined {n + 1}/{blocks} blocks with transactions ({time.perf_counter() - started:.1f} s)",
                  flush=True)
    return int(hook.call("getblockcount"))


def rows_of(parsed: Any) -> int:
    return 1 + len(parsed.transactions) + len(parsed.inputs) + len(parsed.outputs)


def batched_sync(conn: Any, hook: Any, chain: str, tip: int, batch: int, rpc_batch: int) -> dict[str, float]:
    from tributary.bitcoin import sync

    started = time.perf_counter()
    result = sync.sync_range(conn, hook, chain=chain, network="regtest", start=0, stop=tip, batch_size=batch,
                             rpc_batch_size=rpc_batch)
    loaded = time.perf_counter()
    sync.fill_missing_fees(conn, chain=chain)
    sync.advance_checkpoint(conn, chain=chain, conn_id="bench")
    done = time.perf_counter()
    return {"blocks": result.blocks, "rows": result.rows, "seconds": done - started, "load_s": loaded - started,
            "finalize_s": done - loaded}


def _insert(cur: Any, table: str, columns: tuple[str, ...], values: tuple[Any, ...]) -> None:
    marks = ", ".join(["%s"] * len(columns))
    cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING", values)


def naive_sync(conn: Any, hook: Any, chain: str, tip: int) -> dict[str, float]:
    from tributary.bitcoin import store
    from tributary.bitcoin.parse import PrevoutCache, parse_block

    lookup = store.stored_prevouts(conn, chain=chain)
    known = PrevoutCache()
    rows = 0
    started = time.perf_counter()
    for height in range(tip + 1):
        block_hash = hook.call("getblockhash", height, wallet="")
        raw = bytes.fromhex(hook.call("getblock", block_hash, 0, wallet=""))
        parsed = parse_block(raw, height=height, network="regtest", known=known, lookup=lookup)
        with conn.cursor() as cur:
            b = parsed.block
            _insert(cur, "btc_blocks", store.BLOCK_COLUMNS,
                    (chain, *b._replace(time=datetime.fromtimestamp(b.time, UTC))))  # type: ignore[arg-type]
            for t in parsed.transactions:
                _insert(cur, "btc_transactions", store.TRANSACTION_COLUMNS, (chain, *t))
            for i in parsed.inputs:
                _insert(cur, "btc_inputs", store.INPUT_COLUMNS,
                        (chain, *i._replace(witness=list(i.witness) if i.witness is not None else None)))
            for o in parsed.outputs:
                _insert(cur, "btc_outputs", store.OUTPUT_COLUMNS, (chain, *o))
        conn.commit()
        rows += rows_of(parsed)
    return {"blocks": tip + 1, "rows": rows, "seconds": time.perf_counter() - started}


def stored(conn: Any, chain: str) -> dict[str, Any]:
    with conn.cursor() as cur:
        out: dict[str, Any] = {}
        for table in TABLES:
            cur.execute(f"SELECT count(*) FROM {table} WHERE chain = %s", (chain,))
            out[table] = cur.fetchone()[0]
        cur.execute("SELECT coalesce(sum(fee), 0), count(fee) FROM btc_transactions WHERE chain = %s", (chain,))
        out["fees"] = tuple(cur.fetchone())
    conn.rollback()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=600, help="blocks with transactions above the first 120")
    parser.add_argument("--txs", type=int, default=4, help="wallet payments per block")
    parser.add_argument("--batch", type=int, default=200, help="blocks per load transaction (batch_size)")
    parser.add_argument("--rpc-batch", type=int, default=50, help="getblock calls per HTTP request")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-btc-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sys.path.insert(0, str(ROOT))
    import psycopg

    from devnets.bitcoin.process import start_devnet
    from tributary.storage.embedded import drop_database, provision, stop_embedded
    from tributary.storage.warehouse import apply_migrations

    failures: list[str] = []
    location = provision(root / "state", database=f"tributary_bench_btc_{uuid.uuid4().hex[:8]}")
    try:
        with start_devnet(root / "devnet") as node:
            os.environ["AIRFLOW_CONN_TRIBUTARY_BITCOIN"] = json.dumps({
                "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": node.port,
                "extra": {"cookie_file": str(node.cookie_path), "network": "regtest"}})
            hook = node_hook()
            hook.call("createwallet", "payer")
            hook.call("createwallet", "sink")
            started = time.perf_counter()
            tip = populate(hook, node_hook("payer"), node_hook("sink"), args.blocks, args.txs)
            print(f"devnet: {tip + 1} blocks (heights 0..{tip}), {args.txs} payments per block above 120,"
                  f" built in {time.perf_counter() - started:.1f} s; warehouse {location.kind} database"
                  f" {location.database}", flush=True)
            with psycopg.connect(location.dsn()) as conn:
                apply_migrations(conn)
                fast = batched_sync(conn, node_hook(), "bench_batched", tip, args.batch, args.rpc_batch)
                slow = naive_sync(conn, node_hook(), "bench_naive", tip)
                a, b = stored(conn, "bench_batched"), stored(conn, "bench_naive")
        if a != b:
            failures.append(f"stored rows differ: batched {a}, naive {b}")
        print(f"stored per path: {a['btc_blocks']:,} blocks, {a['btc_transactions']:,} transactions,"
              f" {a['btc_inputs']:,} inputs, {a['btc_outputs']:,} outputs; {a['fees'][1]:,} fees"
              f" (same in both: {a == b})")
        for name, fig in (("batched RPC + COPY", fast), ("naive row-by-row", slow)):
            extra = (f" (load {fig['load_s']:.2f} s, fee fill + checkpoint {fig['finalize_s']:.2f} s)"
                     if "load_s" in fig else "")
            print(f"{name}: {fig['blocks'] / fig['seconds']:,.0f} blocks/s, {fig['rows'] / fig['seconds']:,.0f} rows/s,"
                  f" {fig['seconds']:.2f} s for {fig['blocks']:,} blocks / {fig['rows']:,} rows{extra}")
        ratio = slow["seconds"] / fast["seconds"]
        print(f"bitcoin sync {tip + 1} blocks: batched {fast['blocks'] / fast['seconds']:,.0f} blocks/s vs naive"
              f" {slow['blocks'] / slow['seconds']:,.0f} blocks/s (ratio {ratio:.1f}x, target >= {RATIO_TARGET:g}x)")
        if ratio < RATIO_TARGET:
            failures.append(f"ratio {ratio:.1f}x below the target {RATIO_TARGET:g}x")
    finally:
        try:
            drop_database(location)
        finally:
            stop_embedded()
            shutil.rmtree(root, ignore_errors=True)
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
