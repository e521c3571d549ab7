"""Child process of the concurrency test: send N `increment` transactions with T threads.

Usage: python tests/evm/_concurrent_sender.py <conn_id> <registry address> <key prefix> <count> <threads>
Prints one JSON line: the ledger rows (key, nonce, tx_hash) it sent.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    conn_id, address, prefix, count, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    from tributary.evm.contracts import encode_call, load_artifact
    from tributary.evm.hook import EvmHook
    from tributary.evm.transactions import TransactionSender, TxRequest
    from tributary.storage.warehouse import WarehouseHook

    entry = load_artifact("Registry").function("increment", [])
    data = encode_call(entry, [], "increment")
    sender = TransactionSender(EvmHook(conn_id), WarehouseHook().get_conn)

    def send(i: int) -> dict:
        row = sender.submit(TxRequest(idempotency_key=f"{prefix}:{i}", kind="call", data=data, to=address,
                                      contract_name="Registry", function_name="increment"), gas=100_000)
        return {"key": row["idempotency_key"], "nonce": row["nonce"], "tx_hash": row["tx_hash"]}

    with ThreadPoolExecutor(threads) as pool:
        rows = list(pool.map(send, range(count)))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
