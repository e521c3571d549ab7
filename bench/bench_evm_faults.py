"""Exactly-once EVM sends under faults (issue 11 §1): N randomized fault runs, one idempotency key each.

Starts anvil (automine) and a private warehouse database, puts a fault proxy
(``tests/evm/_fault_runs.py``) between the hook and anvil, and runs each key through one of: the
node's answer to a forwarded send dropped (1-3 times), the same plus null answers to transaction
lookups for a while, three attempts with the key at once, the nonce row held locked past the
takeover timeout (a second attempt takes the stale row over), a re-broadcast answered "nonce too
low" while lookups answer null, or no fault. Then every key is driven to a final state through a
fault-free hook and the chain is read block by block.

    .venv/bin/python bench/bench_evm_faults.py [--runs 200] [--seed 11] [--takeover 0.6]

Prints ``N fault runs, N keys, N mined, 0 duplicates, ledger == chain``; exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="fault runs (one idempotency key each)")
    parser.add_argument("--seed", type=int, default=11, help="random seed of the fault choices")
    parser.add_argument("--takeover", type=float, default=0.6, help="seconds before a 'preparing' row is stale")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-evm-faults-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sys.path.insert(0, str(ROOT))
    from devnets.evm.anvil import start_anvil
    from tests.evm import _fault_runs
    from tributary.storage.embedded import drop_database, provision, stop_embedded

    location = provision(root / "state", database=f"tributary_bench_evm_faults_{uuid.uuid4().hex[:8]}")
    os.environ.update(location.connection_env())
    node = start_anvil()
    proxy = None
    try:
        key = _fault_runs.fresh_account(node.url)
        name, value, proxy = _fault_runs.proxy_env("tributary_evm_faulty", node.url, key)
        os.environ[name] = value
        os.environ["AIRFLOW_CONN_TRIBUTARY_EVM_CLEAN"] = _fault_runs.conn_json(node.url, key)
        print(f"anvil {node.url}, fault proxy {proxy.url}; warehouse {location.kind} database {location.database}")
        figure = _fault_runs.run_campaign(faulty_conn="tributary_evm_faulty", clean_conn="tributary_evm_clean",
                                          runs=args.runs, seed=args.seed, takeover=args.takeover, log=print)
        print(f"faults injected: {proxy.dropped} answers dropped after forwarding, {proxy.nulled} lookups nulled")
        for problem in figure.problems[:20]:
            print(f"FAIL: {problem}")
        print(figure.line())
        ok = figure.ledger_matches_chain and figure.duplicates == 0 and figure.mined == figure.keys == args.runs
        return 0 if ok else 1
    finally:
        if proxy is not None:
            proxy.stop()
        node.stop()
        try:
            drop_database(location)
        finally:
            stop_embedded()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
