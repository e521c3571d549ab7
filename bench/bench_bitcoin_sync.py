"""Benchmark: the chain sync's batched RPC + COPY path against a naive row-by-row sync, on big blocks.

A private regtest devnet (``devnets/bitcoin``) gets ``--blocks`` blocks of ``--txs`` transactions each
(default 10 x 2,000), built without a wallet: coinbases mined to one key are fanned out to thousands of
P2WPKH outputs in a few transactions, then every block's transactions (one input, a payment and a
change output each) are signed here with python-bitcoinlib, sent with batched ``sendrawtransaction``
and mined with ``generatetoaddress``. The heights below the big blocks (the funding) are synced by both
paths first, untimed. Then the big blocks are synced by both paths into a dedicated warehouse
database, under two ``chain`` labels, ``--repeat`` times each (rolled back in between; the fastest run
counts, because the VM is shared):

* **batched** (what ``bitcoin_chain_sync`` runs): ``tributary.bitcoin.sync.sync_range`` (``getblockhash``
  in batches, ``getblock <hash> 0`` in batches of ``--rpc-batch`` per HTTP request with the next batch
  downloaded while the current one is parsed, parsing by ``tributary.bitcoin.parse``, COPY into staging
  tables + upsert, one transaction per ``--batch`` blocks), then the DAG's ``finalize`` work (fee fill,
  checkpoint).
* **naive** (the baseline): per block ``getblockhash`` and ``getblock <hash> 2`` (decoded JSON), rows
  mapped from the JSON, one ``INSERT`` per row, a commit per block. Spent-output values come from the
  run's own outputs, then one warehouse query per block, as in the batched path.

Both must store the same rows (compared column by column, per table). Prints blocks/s, transactions/s
and rows/s of both and their ratio, the batched path's stages timed one after the other, and the parse
rate of a real 1 MB mainnet block (``block413567.raw``); exits non-zero when the ratio is below the
target (5x) or the rows differ.

    .venv/bin/python bench/bench_bitcoin_sync.py [--blocks 10] [--txs 2000] [--batch 10] [--rpc-batch 5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# shared/ (public chain data) beside the checkout, or where TRIBUTARY_SHARED_DIR says
SHARED = Path(os.environ.get("TRIBUTARY_SHARED_DIR") or ROOT.parent / "shared")
MAINNET_BLOCK = SHARED / "data" / "bitcoin" / "block413567.raw"
RATIO_TARGET = 5.0
TABLES = ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs")
FANOUT_OUTPUTS = 2_500  # outputs per funding transaction: ~80 kvB, below Core's 100 kvB standard size
SPEND_FEE = 200  # sats for a 1-in 2-out P2WPKH spend (141 vB): above the 1 sat/vB relay floor
# Core's output type names (getblock verbosity 2) -> the warehouse's (tributary.bitcoin.parse.script_type)
CORE_TYPES = {"witness_v0_keyhash": "p2wpkh", "witness_v0_scripthash": "p2wsh", "witness_v1_taproot": "p2tr",
              "pubkeyhash": "p2pkh", "scripthash": "p2sh", "pubkey": "p2pk", "multisig": "multisig",
              "nulldata": "nulldata", "anchor": "anchor", "witness_unknown": "witness_unknown",
              "nonstandard": "nonstandard"}


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


# --------------------------------------------------------------------------- building big blocks
class Spender:
    """One P2WPKH key: signs spends of its outputs locally (BIP143), no wallet involved."""

    def __init__(self, seed: bytes = b"tributary bench") -> None:
        from bitcoin.core import Hash160
        from bitcoin.core.script import CScript
        from bitcoin.wallet import CKey

        from tributary.bitcoin.parse import script_address

        self.key = CKey(hashlib.sha256(seed).digest())
        self.keyhash = Hash160(self.key.pub)
        self.script_pubkey = CScript([0, self.keyhash])
        self.script_code = CScript(b"\x76\xa9\x14" + self.keyhash + b"\x88\xac")  # BIP143 P2WPKH scriptCode
        self.address = script_address(bytes(self.script_pubkey), "regtest")

    def spend(self, outpoint: tuple[str, int], value: int, amounts: list[int]) -> str:
        """Raw hex of a transaction spending ``outpoint`` (worth ``value``) to ``amounts`` at this key."""
        from bitcoin.core import COutPoint, CTransaction, CTxIn, CTxInWitness, CTxOut, CTxWitness, lx
        from bitcoin.core.script import SIGHASH_ALL, SIGVERSION_WITNESS_V0, CScriptWitness, SignatureHash

        txin = CTxIn(COutPoint(lx(outpoint[0]), outpoint[1]), nSequence=0xFFFFFFFD)
        outs = [CTxOut(amount, self.script_pubkey) for amount in amounts]
        unsigned = CTransaction([txin], outs, 0, 2)
        digest = SignatureHash(self.script_code, unsigned, 0, SIGHASH_ALL, amount=value,
                               sigversion=SIGVERSION_WITNESS_V0)
        signature = self.key.sign(digest) + bytes([SIGHASH_ALL])
        witness = CTxWitness([CTxInWitness(CScriptWitness([signature, self.key.pub]))])
        return CTransaction([txin], outs, 0, 2, witness).serialize().hex()


def populate(hook: Any, blocks: int, txs: int) -> tuple[int, int, dict[str, float]]:
    """Mine the funding, then ``blocks`` blocks of ``txs`` spends each; returns (first big height, tip,
    seconds per build step)."""
    from bitcoin.core import CTransaction, b2lx

    spender = Spender()
    steps = {"funding": 0.0, "signing": 0.0, "submitting": 0.0, "mining": 0.0}
    started = time.perf_counter()
    needed = blocks * txs
    fanouts = -(-needed // FANOUT_OUTPUTS)
    coinbases = hook.call("generatetoaddress", fanouts, spender.address)
    hook.call("generatetoaddress", 100, spender.address)  # coinbase maturity
    coins: list[tuple[tuple[str, int], int]] = []
    for block_hash in coinbases:
        coinbase = hook.call("getblock", block_hash, 2)["tx"][0]
        value = round(coinbase["vout"][0]["value"] * 100_000_000)
        count = min(FANOUT_OUTPUTS, needed - len(coins))
        fee = 2 * (11 + 68 + 31 * count)  # 2 sat/vB over a generous size estimate
        each = (value - fee) // count
        raw = spender.spend((coinbase["txid"], 0), value, [each] * count)
        txid = b2lx(CTransaction.deserialize(bytes.fromhex(raw)).GetTxid())
        hook.call("sendrawtransaction", raw)
        coins += [((txid, n), each) for n in range(count)]
    hook.call("generatetoaddress", 1, spender.address)
    first = int(hook.call("getblockcount")) + 1
    steps["funding"] = time.perf_counter() - started
    for n in range(blocks):
        began = time.perf_counter()
        raws = []
        for outpoint, value in coins[n * txs:(n + 1) * txs]:
            payment = 1_000 + (len(raws) * 7919) % 50_000
            raws.append(spender.spend(outpoint, value, [payment, value - payment - SPEND_FEE]))
        signed = time.perf_counter()
        for chunk in hook.iter_batches((("sendrawtransaction", [raw]) for raw in raws), chunk_size=500,
                                       retry=False):
            assert len(chunk) > 0
        submitted = time.perf_counter()
        block_hash = hook.call("generatetoaddress", 1, spender.address)[0]
        mined = time.perf_counter()
        steps["signing"] += signed - began
        steps["submitting"] += submitted - signed
        steps["mining"] += mined - submitted
        tx_count = len(hook.call("getblock", block_hash, 1)["tx"])
        if tx_count != txs + 1:
            raise RuntimeError(f"block {block_hash} holds {tx_count} transactions, not {txs + 1}")
    return first, int(hook.call("getblockcount")), steps


# --------------------------------------------------------------------------- the two paths
def batched_sync(conn: Any, hook: Any, chain: str, start: int, stop: int, batch: int,
                 rpc_batch: int) -> dict[str, float]:
    from tributary.bitcoin import sync

    started = time.perf_counter()
    result = sync.sync_range(conn, hook, chain=chain, network="regtest", start=start, stop=stop, batch_size=batch,
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


class NaiveSync:
    """The baseline: ``getblock`` verbosity 2 per block, rows mapped from the JSON, INSERT row by row.

    Input values (verbosity 2 has the fee, not the spent outputs) are resolved as the batched path
    resolves them: outputs seen earlier in the run, then one warehouse query per block
    (``store.stored_prevouts``) for the rest.
    """

    def __init__(self, conn: Any, hook: Any, chain: str) -> None:
        from tributary.bitcoin import store

        self.conn, self.hook, self.chain = conn, hook, chain
        self.lookup = store.stored_prevouts(conn, chain=chain)
        self.values: dict[tuple[str, int], int] = {}  # outputs seen by this run
        self.rpc_s = 0.0

    def run(self, start: int, stop: int) -> dict[str, float]:
        from tributary.bitcoin import store
        from tributary.bitcoin.amounts import btc_to_sats

        rows = txs = 0
        started = time.perf_counter()
        for height in range(start, stop + 1):
            began = time.perf_counter()
            block = self.hook.call("getblock", self.hook.call("getblockhash", height), 2)
            self.rpc_s += time.perf_counter() - began
            block_hash = block["hash"]
            created = {(tx["txid"], out["n"]) for tx in block["tx"] for out in tx["vout"]}
            wanted = [(vin["txid"], vin["vout"]) for tx in block["tx"] for vin in tx["vin"] if "txid" in vin]
            self.values.update(self.lookup([o for o in wanted if o not in self.values and o not in created]))
            with self.conn.cursor() as cur:
                _insert(cur, "btc_blocks", store.BLOCK_COLUMNS, (
                    self.chain, block_hash, height, block.get("previousblockhash", "0" * 64), block["merkleroot"],
                    datetime.fromtimestamp(block["time"], UTC), block["version"], int(block["bits"], 16),
                    block["nonce"], block["size"], block["strippedsize"], block["weight"], block["nTx"]))
                rows += 1
                for index, tx in enumerate(block["tx"]):
                    txid, coinbase = tx["txid"], "coinbase" in tx["vin"][0]
                    witness = any("txinwitness" in vin for vin in tx["vin"])
                    values = []
                    for n, vin in enumerate(tx["vin"]):
                        if coinbase:
                            prev, script_sig, value = (None, None), vin["coinbase"], None
                        else:
                            prev, script_sig = (vin["txid"], vin["vout"]), vin["scriptSig"]["hex"]
                            value = self.values.get(prev)
                        values.append(value)
                        _insert(cur, "btc_inputs", store.INPUT_COLUMNS, (
                            self.chain, block_hash, txid, n, *prev, script_sig,
                            list(vin.get("txinwitness", [])) if witness else None, vin["sequence"], value))
                    output_value = 0
                    for vout in tx["vout"]:
                        sats = btc_to_sats(vout["value"])
                        output_value += sats
                        self.values[(txid, vout["n"])] = sats
                        script = vout["scriptPubKey"]
                        _insert(cur, "btc_outputs", store.OUTPUT_COLUMNS, (
                            self.chain, block_hash, txid, vout["n"], sats, script["hex"], CORE_TYPES[script["type"]],
                            script.get("address")))
                    fee = None if coinbase or None in values else sum(values) - output_value
                    _insert(cur, "btc_transactions", store.TRANSACTION_COLUMNS, (
                        self.chain, block_hash, txid, tx["hash"], index, coinbase, witness, tx["version"],
                        tx["locktime"], tx["size"], tx["vsize"], tx["weight"], len(tx["vin"]), len(tx["vout"]),
                        output_value, fee))
                    rows += 1 + len(tx["vin"]) + len(tx["vout"])
                    txs += 1
            self.conn.commit()
        return {"blocks": stop - start + 1, "txs": txs, "rows": rows, "seconds": time.perf_counter() - started,
                "rpc_s": self.rpc_s}


def batched_stages(conn: Any, hook: Any, start: int, stop: int, rpc_batch: int) -> dict[str, float]:
    """The batched path's stages one after the other (sync_range overlaps the download with the rest)."""
    from tributary.bitcoin import store
    from tributary.bitcoin.parse import parse_blocks

    began = time.perf_counter()
    raws = hook.get_blocks_bytes(hook.get_block_hashes(start, stop), chunk_size=rpc_batch)
    fetched = time.perf_counter()
    parsed = list(parse_blocks(raws, first_height=start, network="regtest",
                               lookup=store.stored_prevouts(conn, chain="bench_batched")))
    done = time.perf_counter()
    store.load_blocks(conn, parsed, chain="bench_stages")
    loaded = time.perf_counter()
    store.delete_from_height(conn, 0, chain="bench_stages")
    return {"fetch": fetched - began, "parse": done - fetched, "load": loaded - done}


# --------------------------------------------------------------------------- checks
_FINGERPRINT_ORDER = {"btc_blocks": "height", "btc_transactions": "block_hash, idx",
                      "btc_inputs": "block_hash, txid, idx", "btc_outputs": "block_hash, txid, idx"}


def stored(conn: Any, chain: str) -> dict[str, Any]:
    """Per table: the row count and an md5 over every column but ``chain`` (so two labels compare)."""
    from tributary.bitcoin import store

    columns = {"btc_blocks": store.BLOCK_COLUMNS, "btc_transactions": store.TRANSACTION_COLUMNS,
               "btc_inputs": store.INPUT_COLUMNS, "btc_outputs": store.OUTPUT_COLUMNS}
    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        for table in TABLES:
            fields = ", ".join(f"coalesce({c}::text, '~')" for c in columns[table][1:])
            cur.execute(f"SELECT count(*), md5(string_agg(concat_ws('|', {fields}), E'\\n'"
                        f" ORDER BY {_FINGERPRINT_ORDER[table]})) FROM {table} WHERE chain = %s", (chain,))
            out[table] = tuple(cur.fetchone())
        cur.execute("SELECT coalesce(sum(fee), 0), count(fee) FROM btc_transactions WHERE chain = %s", (chain,))
        out["fees"] = tuple(cur.fetchone())
    conn.rollback()
    return out


def parse_rate(path: Path, runs: int = 3) -> tuple[int, float] | None:
    """(transactions, best seconds) to parse a raw mainnet block; None when the file is not there."""
    from tributary.bitcoin.parse import parse_block, read_block

    if not path.exists():
        return None
    raw = read_block(path)
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        parsed = parse_block(raw, height=413567, network="main")
        best = min(best, time.perf_counter() - began)
    return len(parsed.transactions), best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=10, help="big blocks to build and sync")
    parser.add_argument("--txs", type=int, default=2000, help="transactions per big block (plus the coinbase)")
    parser.add_argument("--batch", type=int, default=10, help="blocks per load transaction (batch_size)")
    parser.add_argument("--rpc-batch", type=int, default=5, help="getblock calls per HTTP request")
    parser.add_argument("--repeat", type=int, default=2, help="timed syncs per path; the fastest counts")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-btc-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sys.path.insert(0, str(ROOT))
    import psycopg

    from devnets.bitcoin.process import start_devnet
    from tributary.bitcoin import store
    from tributary.storage.embedded import drop_database, provision, stop_embedded
    from tributary.storage.warehouse import apply_migrations

    logging.getLogger("tributary").setLevel(logging.WARNING)  # the per-batch progress lines, not the figures
    failures: list[str] = []
    whole = time.perf_counter()
    rate = parse_rate(MAINNET_BLOCK)
    location = provision(root / "state", database=f"tributary_bench_btc_{uuid.uuid4().hex[:8]}")
    try:
        with start_devnet(root / "devnet") as node:
            os.environ["AIRFLOW_CONN_TRIBUTARY_BITCOIN"] = json.dumps({
                "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": node.port,
                "extra": {"cookie_file": str(node.cookie_path), "network": "regtest", "timeout": 300}})
            started = time.perf_counter()
            first, tip, steps = populate(node_hook(), args.blocks, args.txs)
            print(f"devnet: {args.blocks} blocks of {args.txs:,} transactions + coinbase (heights {first}..{tip}) on"
                  f" {first} funding blocks, built in {time.perf_counter() - started:.1f} s ("
                  + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
                  + f"); warehouse {location.kind} database {location.database}", flush=True)
            with psycopg.connect(location.dsn()) as conn:
                apply_migrations(conn)
                batched_sync(conn, node_hook(), "bench_batched", 0, first - 1, args.batch, args.rpc_batch)
                NaiveSync(conn, node_hook(), "bench_naive").run(0, first - 1)
                runs: dict[str, list[dict[str, float]]] = {"batched": [], "naive": []}
                for repeat in range(args.repeat):  # best of: the VM is shared, a neighbour's burst hits one run
                    if repeat:
                        for chain in ("bench_batched", "bench_naive"):
                            store.delete_from_height(conn, first, chain=chain)
                    runs["batched"].append(batched_sync(conn, node_hook(), "bench_batched", first, tip, args.batch,
                                                        args.rpc_batch))
                    runs["naive"].append(NaiveSync(conn, node_hook(), "bench_naive").run(first, tip))
                fast = min(runs["batched"], key=lambda fig: fig["seconds"])
                slow = min(runs["naive"], key=lambda fig: fig["seconds"])
                a, b = stored(conn, "bench_batched"), stored(conn, "bench_naive")
                stages = batched_stages(conn, node_hook(), first, tip, args.rpc_batch)
        if a != b:
            failures.append(f"stored rows differ: batched {a}, naive {b}")
        counts = {t: a[t][0] for t in TABLES}
        print(f"stored per path (heights 0..{tip}): {counts['btc_blocks']:,} blocks, {counts['btc_transactions']:,}"
              f" transactions, {counts['btc_inputs']:,} inputs, {counts['btc_outputs']:,} outputs; {a['fees'][1]:,}"
              f" fees (identical in both, column by column: {a == b})")
        fast["txs"] = slow["txs"]
        for name, fig in (("batched RPC + COPY", fast), ("naive getblock 2 + row-by-row INSERT", slow)):
            extra = (f" (load {fig['load_s']:.2f} s, fee fill + checkpoint {fig['finalize_s']:.2f} s)"
                     if "load_s" in fig else f" (getblock RPC {fig['rpc_s']:.2f} s of it)")
            print(f"{name}: {fig['blocks'] / fig['seconds']:,.2f} blocks/s, {fig['txs'] / fig['seconds']:,.0f} tx/s,"
                  f" {fig['rows'] / fig['seconds']:,.0f} rows/s; {fig['seconds']:.2f} s for {fig['blocks']:,} blocks"
                  f" / {fig['txs']:,} transactions / {fig['rows']:,} rows{extra}")
        times = {path: ", ".join(f"{fig['seconds']:.2f}" for fig in figs) for path, figs in runs.items()}
        print(f"batched stages run apart: getblock {stages['fetch']:.2f} s, parse + prevout query"
              f" {stages['parse']:.2f} s, COPY + upsert {stages['load']:.2f} s; times of the {args.repeat} runs"
              f" (best counts): batched {times['batched']} s, naive {times['naive']} s")
        if rate is None:
            print(f"parse {MAINNET_BLOCK.name}: skipped (file not found)")
        else:
            print(f"parse {MAINNET_BLOCK.name}: {rate[0] / rate[1]:,.0f} tx/s ({rate[0]:,} transactions in"
                  f" {rate[1]:.3f} s)")
        ratio = slow["seconds"] / fast["seconds"]
        print(f"bitcoin sync {fast['blocks']} blocks x {args.txs:,} tx: batched {fast['blocks'] / fast['seconds']:,.2f}"
              f" blocks/s, {fast['txs'] / fast['seconds']:,.0f} tx/s vs naive {slow['blocks'] / slow['seconds']:,.2f}"
              f" blocks/s, {slow['txs'] / slow['seconds']:,.0f} tx/s (ratio {ratio:.1f}x, target >= {RATIO_TARGET:g}x;"
              f" whole bench {time.perf_counter() - whole:.0f} s)")
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
