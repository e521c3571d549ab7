"""Randomized fault runs against the EVM transaction ledger (issue 11 §1), shared by
``tests/evm/test_evm_exactly_once.py`` (~30 runs) and ``bench/bench_evm_faults.py`` (200 runs).

A :class:`FaultProxy` sits between the hook and anvil (a local JSON-RPC HTTP proxy) and can:

* forward ``eth_sendRawTransaction`` to anvil, then close the connection without an answer (the node
  has the bytes, the caller sees a connection reset: an ambiguous send);
* answer ``null`` to ``eth_getTransactionByHash`` / ``eth_getTransactionReceipt`` for a while (a
  lagging or load-balanced node);

and the runs add the database faults: the nonce row of the sender held locked past the takeover
timeout (so a second attempt takes a stale ``preparing`` row over while the first one still waits),
and several attempts with one key at once.

Each run is one idempotency key: a plain transfer whose calldata is the key, so every transaction on
chain names its key. After the runs every key is driven to a final state through a fault-free hook,
and the chain is read block by block: exactly one mined transaction per key, and the ledger's hash,
nonce and status for each key are the chain's.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NULLED = ("eth_getTransactionByHash", "eth_getTransactionReceipt")


class FaultProxy:
    """A JSON-RPC HTTP proxy on 127.0.0.1 in front of ``upstream`` with switchable faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self.drop_sends = 0          # next N eth_sendRawTransaction: forward, then reset (no answer)
        self.lose_sends = 0          # next N eth_sendRawTransaction: reset without forwarding
        self.null_until = 0.0        # time.monotonic() before which tx lookups answer null
        self.dropped = 0
        self.nulled = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls = json.loads(body)
                batch = calls if isinstance(calls, list) else [calls]
                methods = [c.get("method") for c in batch]
                drop = False
                with proxy._lock:
                    if "eth_sendRawTransaction" in methods and proxy.lose_sends > 0:
                        proxy.lose_sends -= 1
                        self.close_connection = True
                        self.connection.close()
                        return
                    if "eth_sendRawTransaction" in methods and proxy.drop_sends > 0:
                        proxy.drop_sends -= 1
                        proxy.dropped += 1
                        drop = True
                    nulling = time.monotonic() < proxy.null_until
                request = urllib.request.Request(proxy.upstream, data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                if drop:  # the node has the bytes; the caller never hears it
                    self.close_connection = True
                    self.connection.close()
                    return
                if nulling:
                    answers = answer if isinstance(answer, list) else [answer]
                    nulled_ids = {c.get("id") for c in batch if c.get("method") in NULLED}
                    for item in answers:
                        if isinstance(item, dict) and item.get("id") in nulled_ids and "result" in item:
                            item["result"] = None
                            with proxy._lock:
                                proxy.nulled += 1
                out = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def null_lookups(self, seconds: float) -> None:
        self.null_until = time.monotonic() + seconds

    def reset(self) -> None:
        with self._lock:
            self.drop_sends = self.lose_sends = 0
            self.null_until = 0.0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def conn_json(url: str, private_key: str, **extra: Any) -> str:
    return json.dumps({"conn_type": "tributary_evm", "host": url, "password": private_key,
                       "extra": {"chain_id": 31337, "poll_interval": 0.05, "fee_cache_seconds": 0.5,
                                 "timeout": 5, **extra}})


@dataclass
class Figure:
    runs: int
    keys: int
    mined: int
    duplicates: int
    ledger_matches_chain: bool
    scenarios: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fenced: int = 0       # keys whose row was taken over or re-signed (generation > 1)
    resigned: int = 0     # keys with a superseded signature (nonce proven used by another transaction)

    def line(self) -> str:
        return (f"{self.runs} fault runs, {self.keys} keys, {self.mined} mined, {self.duplicates} duplicates, "
                f"ledger {'==' if self.ledger_matches_chain else '!='} chain ({self.seconds:.1f} s;"
                f" {self.fenced} keys with a newer generation, {self.resigned} re-signed;"
                f" {', '.join(f'{k} {v}' for k, v in sorted(self.scenarios.items()))})")


def fresh_account(anvil_url: str) -> str:
    """A new private key, funded on anvil with 1,000 ETH (anvil_setBalance): its transactions are
    only the runs' own."""
    import secrets

    from eth_account import Account

    key = "0x" + secrets.token_hex(32)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                       "params": [Account.from_key(key).address, hex(10**21)]}).encode()
    urllib.request.urlopen(urllib.request.Request(anvil_url, data=body,
                                                  headers={"Content-Type": "application/json"}), timeout=10).read()
    return key


def run_campaign(*, faulty_conn: str, clean_conn: str, runs: int, seed: int,
                 takeover: float = 0.6, log: Callable[[str], None] = lambda _m: None) -> Figure:
    """``runs`` randomized fault runs; the Connections
    ``faulty_conn`` (through a FaultProxy: the caller sets its URL, see :func:`proxy_env`) and
    ``clean_conn`` (straight to anvil) must exist. Returns the figure."""
    from tributary.core.errors import TributaryError
    from tributary.evm.hook import EvmHook
    from tributary.evm.transactions import TransactionSender, TxRequest
    from tributary.storage.warehouse import WarehouseHook

    rng = random.Random(seed)
    proxy = _PROXIES[faulty_conn]
    clean = EvmHook(clean_conn)
    address = clean.address
    sink = "0x000000000000000000000000000000000000dEaD"
    prefix = f"faults:{seed}:{int(time.time() * 1000)}"
    start_block = clean.block_number()
    started = time.monotonic()
    scenarios: Counter = Counter()
    keys: list[str] = []

    def new_sender(conn: str = faulty_conn) -> Any:
        return TransactionSender(EvmHook(conn), WarehouseHook().get_conn, preparing_timeout=takeover)

    def request(key: str) -> TxRequest:
        return TxRequest(idempotency_key=key, kind="transfer", data="0x" + key.encode().hex(), to=sink, value=1)

    def attempt(sender: Any, key: str) -> dict[str, Any] | None:
        """One task try: the row, or None when it raised (the task would be retried)."""
        try:
            return sender.submit(request(key))
        except TributaryError:
            return None
        except Exception as exc:
            scenarios[f"unclassified {type(exc).__name__}"] += 1
            return None

    def settle(sender: Any, key: str, tries: int = 40) -> None:
        """Retry like Airflow would until the ledger holds a broadcast transaction."""
        for _ in range(tries):
            row = attempt(sender, key)
            if row is not None and row["status"] in ("sent", "mined", "confirmed"):
                return
            time.sleep(0.02)

    pool: list[Any] = [new_sender() for _ in range(3)]
    for run in range(runs):
        key = f"{prefix}:{run}"
        keys.append(key)
        scenario = rng.choice(["drop", "drop_null", "concurrent", "lock_takeover", "rebroadcast", "plain"])
        scenarios[scenario] += 1
        proxy.reset()
        if scenario in ("drop", "drop_null"):
            proxy.drop_sends = rng.randint(1, 3)
            if scenario == "drop_null":
                proxy.null_lookups(rng.uniform(0.05, 0.4))
            settle(pool[0], key)
        elif scenario == "concurrent":
            proxy.drop_sends = rng.randint(0, 2)
            proxy.null_lookups(rng.uniform(0.0, 0.3))
            threads = [threading.Thread(target=settle, args=(pool[i], key, 10)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif scenario == "lock_takeover":
            _lock_takeover(pool[0], pool[1], key, request, takeover, proxy, rng)
        elif scenario == "rebroadcast":
            row = attempt(pool[0], key)
            if row is not None and row.get("raw_tx"):
                # The trigger saw the transaction "dropped"; the node now answers null to lookups
                # and "nonce too low" to the re-send (the bytes are mined already).
                proxy.null_lookups(rng.uniform(0.05, 0.3))
                try:
                    pool[1].rebroadcast(pool[1].ledger.get(31337, key))
                except TributaryError:
                    pass
                except Exception as exc:
                    scenarios[f"unclassified {type(exc).__name__}"] += 1
        settle(pool[2], key)
        if (run + 1) % 25 == 0:
            log(f"  {run + 1}/{runs} runs ({time.monotonic() - started:.1f} s)")
    proxy.reset()

    # Drive every key to a final state through a fault-free hook, then compare with the chain.
    final = new_sender(clean_conn)
    ledger: dict[str, dict[str, Any]] = {}
    for key in keys:
        settle(final, key)
        row = final.ledger.get(31337, key)
        if row is not None and row["status"] in ("sent", "mined"):
            with contextlib.suppress(TributaryError):
                row = final.wait(row, timeout=10)
        ledger[key] = row or {}
    on_chain: dict[str, list[dict[str, Any]]] = {}
    for number in range(start_block + 1, clean.block_number() + 1):
        for tx in clean.get_block(number, full=True)["transactions"]:
            if tx["from"].lower() != address.lower():
                continue
            key = bytes.fromhex(tx["input"][2:]).decode(errors="replace")
            on_chain.setdefault(key, []).append(tx)
    problems = []
    for key in keys:
        mined = on_chain.get(key, [])
        row = ledger[key]
        if len(mined) != 1:
            problems.append(f"{key}: {len(mined)} transactions on chain, ledger {row.get('status')}")
            continue
        tx = mined[0]
        if (row.get("tx_hash"), row.get("nonce"), row.get("status")) != (tx["hash"], int(tx["nonce"], 16),
                                                                          "confirmed"):
            problems.append(f"{key}: ledger {row.get('tx_hash')} nonce {row.get('nonce')} {row.get('status')},"
                            f" chain {tx['hash']} nonce {int(tx['nonce'], 16)}")
    strangers = set(on_chain) - set(keys)
    problems += [f"unexpected transaction for {k!r}" for k in strangers]
    for sender in [*pool, final]:
        sender.nonces.close()
    return Figure(runs=runs, keys=len(keys), mined=sum(len(on_chain.get(k, [])) for k in keys),
                  duplicates=sum(max(0, len(on_chain.get(k, [])) - 1) for k in keys),
                  ledger_matches_chain=not problems, scenarios=scenarios, problems=problems,
                  seconds=time.monotonic() - started,
                  fenced=sum(1 for k in keys if (ledger[k].get("generation") or 1) > 1),
                  resigned=sum(1 for k in keys if ledger[k].get("superseded_tx_hashes")))


def _lock_takeover(first: Any, second: Any, key: str, request: Callable[[str], Any], takeover: float,
                   proxy: FaultProxy, rng: random.Random) -> list[Any]:
    """Hold the sender's nonce row locked while attempt 1 waits on it past the takeover timeout,
    start attempt 2 (it takes the stale ``preparing`` row over), then let both go. The outcomes."""
    from tributary.core.errors import TributaryError
    from tributary.storage.warehouse import WarehouseHook

    address = first.hook.address
    blocker = WarehouseHook().get_conn()
    outcomes: list[Any] = []

    def go(sender: Any) -> None:
        try:
            outcomes.append(sender.submit(request(key)))
        except TributaryError as exc:
            outcomes.append(exc)

    try:
        with blocker.cursor() as cur:
            cur.execute("INSERT INTO evm_nonces (chain_id, address, next_nonce) VALUES (31337, %s, 0)"
                        " ON CONFLICT DO NOTHING", (address,))
            blocker.commit()
            cur.execute("SELECT 1 FROM evm_nonces WHERE chain_id = 31337 AND address = %s FOR UPDATE", (address,))
        a = threading.Thread(target=go, args=(first,))
        a.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # attempt 1 has claimed the key (then waits on the lock)
            with blocker.cursor() as cur:  # READ COMMITTED: each statement sees the latest commits
                cur.execute("SELECT 1 FROM evm_transactions WHERE idempotency_key = %s", (key,))
                if cur.fetchone():
                    break
            time.sleep(0.01)
        time.sleep(takeover + 0.15)  # attempt 1's 'preparing' row is now stale
        b = threading.Thread(target=go, args=(second,))
        b.start()
        time.sleep(rng.uniform(0.05, 0.2))
        if rng.random() < 0.5:
            proxy.drop_sends = 1
    finally:
        blocker.rollback()
        blocker.close()
    a.join(30)
    b.join(30)
    return outcomes  # rows or the errors the two attempts ended with


# conn_id -> its proxy (set by proxy_env)
_PROXIES: dict[str, FaultProxy] = {}


def proxy_env(conn_id: str, anvil_url: str, private_key: str, **extra: Any) -> tuple[str, str, FaultProxy]:
    """(env var, value, proxy) for a Connection ``conn_id`` that reaches ``anvil_url`` through a new proxy."""
    proxy = FaultProxy(anvil_url)
    _PROXIES[conn_id] = proxy
    return f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(proxy.url, private_key, **extra), proxy
