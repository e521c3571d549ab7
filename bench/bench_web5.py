"""Benchmark: DWN replication throughput vs writing the same records one by one.

Starts three real ``@web5/dwn-server`` 0.6.1 peers (devnets/dwn) and a private warehouse database,
writes ``--records`` signed protocol records (JSON, ~100 bytes each) to the source, then:

1. **plain loop**: the same signed messages + data POSTed one at a time (``dwn.processMessage``,
   data in the body) to an empty peer with ``requests``: no reads, no verification, no checkpoint;
2. **Tributary replication**: ``tributary.dwn.replication.replicate`` source -> another empty peer:
   event-log query, ``MessagesRead`` of every message with its data, EdDSA + descriptor-CID + data-CID
   verification of **every** message, send as is, checkpoint after every batch of 100.

    .venv/bin/python bench/bench_web5.py [--records 1000] [--workers 4]

Prints ``dwn replication records/s: tributary X, plain Y, ratio R (target >= 1.0)`` and exits non-zero
when the ratio misses the target or the target does not equal the source afterwards.
DID/VC operations/s: see :func:`bench_did_vc` (to be filled by the DID/VC work).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.0
PROTOCOL = "https://tributary.example/protocols/bench-notes"


def conn_json(url: str, key: object) -> str:
    return json.dumps({"conn_type": "tributary_dwn", "host": url, "password": key.seed_hex(),  # type: ignore[attr-defined]
                       "extra": {"tenant": key.did, "timeout": 30}})  # type: ignore[attr-defined]


def plain_loop(url: str, tenant: str, messages: list[tuple[dict, bytes]]) -> float:
    import requests

    session = requests.Session()
    started = time.perf_counter()
    for message, data in messages:
        request = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "dwn.processMessage",
                   "params": {"target": tenant, "message": message}}
        response = session.post(url + "/", data=data, headers={"dwn-request": json.dumps(request),
                                                               "content-type": "application/octet-stream"})
        status = response.json()["result"]["reply"]["status"]["code"]
        assert status in (202, 204), status
    return len(messages) / (time.perf_counter() - started)


def bench_did_vc() -> list[str]:
    """Extension point for DID/VC operations/s (did:key/did:jwk resolve, VC-JWT sign/verify).

    The DID/VC package is built separately; its benchmark lines are added here. Returns failures.
    """
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-web5-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sys.path.insert(0, str(ROOT))
    from devnets.dwn.process import start_peers
    from tributary.storage.embedded import drop_database, provision, stop_embedded

    failures: list[str] = []
    location = provision(root / "state", database=f"tributary_bench_web5_{uuid.uuid4().hex[:8]}")
    os.environ.update(location.connection_env())
    servers = start_peers(3, root / "dwn")
    try:
        from tributary.dwn import messages as m
        from tributary.dwn.hooks import DwnHook
        from tributary.dwn.identity import DidKey
        from tributary.dwn.replication import replicate, snapshot
        from tributary.storage.warehouse import connect, ensure_schema

        key = DidKey.generate()
        for name, server in zip(("SOURCE", "TARGET", "PLAIN"), servers, strict=True):
            os.environ[f"AIRFLOW_CONN_DWN_{name}"] = conn_json(server.url, key)
        source, target = DwnHook("dwn_source"), DwnHook("dwn_target")
        configure = source.configure_protocol(m.flat_protocol(PROTOCOL))
        payloads = [json.dumps({"note": i, "text": "x" * 80}).encode() for i in range(args.records)]
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            written = list(pool.map(lambda d: source.write_record(d, protocol=PROTOCOL, protocol_path="record"),
                                    payloads))
        print(f"{len(servers)} dwn-server peers; source populated with {args.records} records in "
              f"{time.perf_counter() - started:.1f} s; warehouse {location.kind} database {location.database}")

        plain_hook = DwnHook("dwn_plain")
        plain_hook.send(configure)
        plain = plain_loop(servers[2].url, key.did, list(zip(written, payloads, strict=True)))

        conn = connect()
        ensure_schema(conn)
        started = time.perf_counter()
        counts = replicate(source, target, conn, tenant=key.did, protocol=PROTOCOL, batch_size=100,
                           run_id="bench", workers=args.workers)
        elapsed = time.perf_counter() - started
        conn.close()
        ours = counts.written / elapsed
        print(f"replication: {counts.scanned} messages read + verified, {counts.written} written in "
              f"{elapsed:.2f} s ({counts.batches} checkpoints, {args.workers} workers)")
        converged = snapshot(target, PROTOCOL) == snapshot(source, PROTOCOL)
        if not converged:
            failures.append("target differs from source after replication")
        ratio = ours / plain
        print(f"dwn replication records/s: tributary {ours:.0f}, plain {plain:.0f}, ratio {ratio:.2f} "
              f"(target >= {TARGET_RATIO})")
        if ratio < TARGET_RATIO:
            failures.append(f"replication ratio {ratio:.2f} < {TARGET_RATIO}")
        failures += bench_did_vc()
    finally:
        for server in servers:
            server.stop()
        drop_database(location)
        stop_embedded()
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
