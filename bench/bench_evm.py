"""Benchmark: EVM transactions/s through Tributary's hook vs a plain web3.py loop, and event indexing.

Starts anvil (automine, ``devnets/evm``) and a private warehouse database, deploys ``Registry``, then:

1. **plain web3.py**: ``get_transaction_count`` + ``build_transaction`` (gas and fees from the node)
   -> ``sign_transaction`` -> ``send_raw_transaction`` -> ``wait_for_transaction_receipt``, one at a time (account 1);
2. **Tributary, sequential**: ``TransactionSender.submit`` (idempotency ledger row, PostgreSQL nonce
   lease, gas estimate, EIP-1559 fees, local signing) -> ``wait`` for the receipt (account 0);
3. **Tributary, 4 threads** on the same account (what the nonce manager makes safe);
4. **indexing**: 10,000 ``Incremented`` events (``bump(1000)`` x 10) pulled with ``eth_getLogs`` in
   chunks, decoded and loaded (COPY + upsert) by ``tributary.evm.indexer.index_range``.

    .venv/bin/python bench/bench_evm.py [--txs 200] [--events 10000]

Prints the figures and ``evm tx/s: tributary X, plain Y, ratio R (target >= 0.8)``; exits non-zero
when the sequential ratio misses the target or the indexer stores fewer logs than were emitted.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.8
MIN_LOGS_PER_SECOND = 2_000


def conn_json(url: str, key: str) -> str:
    return json.dumps({"conn_type": "tributary_evm", "host": url, "password": key,
                       "extra": {"chain_id": 31337, "fee_cache_seconds": 1}})


def plain_web3(url: str, key: str, address: str, abi: list, count: int) -> float:
    from eth_account import Account
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(url))
    account = Account.from_key(key)
    contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
    started = time.perf_counter()
    for _ in range(count):
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        tx = contract.functions.increment().build_transaction({"from": account.address, "nonce": nonce})
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
    return count / (time.perf_counter() - started)


def tributary_path(address: str, count: int, threads: int, prefix: str) -> float:
    from tributary.evm.contracts import encode_call, load_artifact
    from tributary.evm.hook import EvmHook
    from tributary.evm.transactions import TransactionSender, TxRequest
    from tributary.storage.warehouse import WarehouseHook

    data = encode_call(load_artifact("Registry").function("increment", []), [], "increment")
    sender = TransactionSender(EvmHook("tributary_evm"), WarehouseHook().get_conn)

    def one(i: int) -> None:
        row = sender.submit(TxRequest(idempotency_key=f"{prefix}:{i}", kind="call", data=data, to=address,
                                      contract_name="Registry", function_name="increment"))
        assert sender.wait(row, poll=0.002)["status"] == "confirmed"

    sender.hook.check_chain()
    started = time.perf_counter()
    if threads == 1:
        for i in range(count):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=200, help="transactions per path")
    parser.add_argument("--events", type=int, default=10_000, help="events to index (multiple of 1000)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-evm-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sys.path.insert(0, str(ROOT))
    from devnets.evm.anvil import start_anvil
    from tributary.storage.embedded import drop_database, provision, stop_embedded

    failures: list[str] = []
    location = provision(root / "state", database=f"tributary_bench_evm_{uuid.uuid4().hex[:8]}")
    os.environ.update(location.connection_env())
    node = start_anvil()
    try:
        os.environ["AIRFLOW_CONN_TRIBUTARY_EVM"] = conn_json(node.url, node.accounts[0].private_key)
        from tributary.evm.contracts import encode_call, load_artifact
        from tributary.evm.hook import EvmHook
        from tributary.evm.indexer import IndexSpec, index_range
        from tributary.evm.transactions import TransactionSender, TxRequest
        from tributary.storage.warehouse import WarehouseHook

        artifact = load_artifact("Registry")
        sender = TransactionSender(EvmHook("tributary_evm"), WarehouseHook().get_conn)
        deployed = sender.wait(sender.submit(TxRequest(idempotency_key="bench:deploy", kind="deploy",
                                                       data=artifact.bytecode, contract_name="Registry")))
        address = deployed["contract_address"]
        print(f"anvil {node.url}, Registry at {address}; warehouse {location.kind} database {location.database}")

        # Warm-up (imports, connections, first fee lookups) for both paths.
        plain_web3(node.url, node.accounts[1].private_key, address, artifact.abi, 5)
        tributary_path(address, 5, 1, "bench:warm")
        plain = plain_web3(node.url, node.accounts[1].private_key, address, artifact.abi, args.txs)
        ours = tributary_path(address, args.txs, 1, "bench:seq")
        concurrent = tributary_path(address, args.txs, 4, "bench:par")
        ratio = ours / plain
        print(f"plain web3.py send-and-wait: {plain:,.1f} tx/s ({args.txs} txs)")
        print(f"tributary hook sequential:   {ours:,.1f} tx/s (ledger + PostgreSQL nonce lease + local signing)")
        print(f"tributary hook 4 threads:    {concurrent:,.1f} tx/s (one account; ratio vs plain"
              f" {concurrent / plain:.2f})")
        print(f"evm tx/s: tributary {ours:,.1f}, plain {plain:,.1f}, ratio {ratio:.2f} (target >= {TARGET_RATIO})")
        if ratio < TARGET_RATIO:
            failures.append(f"tx ratio {ratio:.2f} below {TARGET_RATIO}")

        # Indexing: emit the events, then index them from the deployment block.
        bump = artifact.function("bump", [1000])
        first = deployed["block_number"]
        for i in range(args.events // 1000):
            row = sender.submit(TxRequest(idempotency_key=f"bench:bump:{i}", kind="call", to=address,
                                          data=encode_call(bump, [1000], "bump"), contract_name="Registry",
                                          function_name="bump"))
            sender.wait(row)
        hook = EvmHook("tributary_evm")
        spec = IndexSpec(indexer="bench", chain_id=31337, addresses=[address], start_block=first, chunk_size=2000)
        with WarehouseHook().session() as conn:
            result = index_range(conn, hook, spec)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM evm_event_logs"
                            " WHERE indexer = 'bench' AND event_name = 'Incremented'")
                stored = cur.fetchone()[0]
        expected = args.events + 3 * args.txs + 10  # bumps + one event per increment (3 paths, 2 warm-ups)
        rate = result.logs / result.seconds
        print(f"evm indexing: {result.logs:,} logs in {result.seconds:.2f} s = {rate:,.0f} logs/s"
              f" ({result.chunks} chunks, {stored:,} Incremented rows; target >= {MIN_LOGS_PER_SECOND:,} logs/s)")
        if stored != expected:
            failures.append(f"indexed {stored} Incremented events, expected {expected}")
        if rate < MIN_LOGS_PER_SECOND:
            failures.append(f"indexing {rate:,.0f} logs/s below {MIN_LOGS_PER_SECOND:,}")
    finally:
        node.stop()
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
