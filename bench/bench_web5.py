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
Then :func:`bench_did_vc` prints DID create+resolve ops/s per method and VC-JWT issue/verify ops/s
(``--did-vc-only`` runs just that part, without DWN servers or a database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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


def _rate(operation: Callable[[], object], seconds: float = 1.0, min_ops: int = 20) -> float:
    """Operations per second of ``operation`` run back to back for ``seconds`` (and at least ``min_ops`` times)."""
    done, started = 0, time.perf_counter()
    while True:
        operation()
        done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= min_ops:
            return done / elapsed


def bench_did_vc(seconds: float = 1.0) -> list[str]:
    """DID create+resolve ops/s per method and VC-JWT issue / verify ops/s, one thread; returns failures.

    did:key and did:jwk are pure computation; did:web writes ``did.json`` into the document root of the
    local HTTPS test server (devnets/did) and resolves it over TLS; did:dht PUTs a signed Pkarr payload
    to the local relay and GETs + checks it back. VC verification includes resolving the issuer (over
    HTTPS for did:web); no status list.
    """
    from devnets.did.pkarr import PkarrRelay
    from devnets.did.web import DidWebServer
    from tributary.did.resolver import ResolverConfig, create_did, resolve
    from tributary.vc.vcjwt import create_credential, issue_vc, verify_vc

    failures: list[str] = []
    state = Path(tempfile.mkdtemp(prefix="tributary-bench-did-"))
    relay = PkarrRelay(data_dir=state / "pkarr").start()
    web = DidWebServer(state / "www", state / "tls").start()
    # loopback allow-listed (the devnet's address); no cache, so verify ops/s still include the did:web fetch
    config = ResolverConfig(pkarr_url=relay.url, ca_bundle=web.ca_bundle, timeout=10, allow_networks=("127.0.0.1/32",),
                            cache_ttl=0)
    counter = iter(range(10**9))

    def create_and_resolve(method: str, crv: str) -> Callable[[], object]:
        def run() -> None:
            if method == "web":
                portable = create_did("web", crv=crv, host=web.did_host, path=f"bench/{next(counter)}",
                                      document_root=web.document_root)
            else:
                portable = create_did(method, crv=crv, config=config)
            result = resolve(portable.uri, config)
            if result["didResolutionMetadata"].get("error") or result["didDocument"]["id"] != portable.uri:
                raise AssertionError(f"{portable.uri}: {result['didResolutionMetadata']}")
        return run

    try:
        for method, crv in (("key", "Ed25519"), ("key", "secp256k1"), ("jwk", "Ed25519"), ("jwk", "P-256"),
                            ("web", "Ed25519"), ("dht", "Ed25519")):
            try:
                rate = _rate(create_and_resolve(method, crv), seconds)
                print(f"did:{method} {crv} create+resolve ops/s: {rate:,.0f}")
            except Exception as exc:  # a failing method is reported, the others still run
                failures.append(f"did:{method} {crv} create+resolve: {type(exc).__name__}: {exc}")
        for method, crv in (("key", "Ed25519"), ("jwk", "secp256k1"), ("web", "Ed25519")):
            issuer = create_did(method, crv=crv, host=web.did_host, path="bench/issuer",
                                document_root=web.document_root)
            credential = create_credential(issuer.uri, {"id": "did:example:holder", "name": "Ada"},
                                           types=["BenchCredential"])
            token = issue_vc(issuer, credential)
            if verify_vc(token, config=config).issuer != issuer.uri:
                failures.append(f"VC by did:{method} {crv} does not verify")
                continue
            issue_rate = _rate(lambda issuer=issuer, credential=credential: issue_vc(issuer, credential), seconds)
            verify_rate = _rate(lambda token=token: verify_vc(token, config=config), seconds)
            print(f"VC-JWT by did:{method} {crv}: issue ops/s {issue_rate:,.0f}, verify ops/s {verify_rate:,.0f}")
    finally:
        relay.stop()
        web.stop()
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--did-vc-only", action="store_true", help="only the DID/VC operations/s")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.did_vc_only:
        failures = bench_did_vc()
        for failure in failures:
            print(f"FAIL: {failure}")
        return 1 if failures else 0

    root = Path(tempfile.mkdtemp(prefix="tributary-bench-web5-"))
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from devnets.dwn.process import start_peers
    from tributary.storage.embedded import drop_database, provision, stop_embedded

    failures: list[str] = []
    location = provision(root / "state", database=f"tributary_bench_web5_{uuid.uuid4().hex[:8]}")
    os.environ.update(location.connection_env())
    servers = start_peers(3, root / "dwn")
    try:
        from tributary.dwn import messages as m
        from tributary.dwn.hook import DwnHook
        from tributary.dwn.identity import DidKey
        from tributary.dwn.replication import replicate, snapshot
        from tributary.storage.warehouse import WarehouseHook

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

        conn = WarehouseHook().get_conn()
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
