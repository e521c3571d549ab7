"""Nonce-managed, idempotent transactions on anvil: concurrency across threads and processes,
no nonce consumed by invalid or reverting calls, released nonces reused without gaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.evm.conftest import make_sender
from tributary.evm.contracts import encode_call, load_artifact
from tributary.evm.errors import ContractReverted
from tributary.evm.transactions import TxRequest

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

ROOT = Path(__file__).resolve().parents[2]


def _increment(address: str, key: str) -> TxRequest:
    entry = load_artifact("Registry").function("increment", [])
    return TxRequest(idempotency_key=key, kind="call", data=encode_call(entry, [], "increment"), to=address,
                     contract_name="Registry", function_name="increment")


def test_the_same_idempotency_key_never_sends_twice(evm_env, registry) -> None:
    sender = make_sender()
    key = f"test:{uuid.uuid4().hex}"
    first = sender.submit(_increment(registry, key))
    again = sender.submit(_increment(registry, key))
    assert again["tx_hash"] == first["tx_hash"] and again["nonce"] == first["nonce"]
    confirmed = sender.wait(first)
    assert confirmed["status"] == "confirmed" and confirmed["receipt_status"] == 1
    assert sender.submit(_increment(registry, key))["status"] == "confirmed"


def test_a_key_reused_for_another_transaction_is_refused(evm_env, registry) -> None:
    from tributary.core.errors import PermanentError

    sender = make_sender()
    key = f"test:{uuid.uuid4().hex}"
    sender.wait(sender.submit(_increment(registry, key)))
    other = TxRequest(idempotency_key=key, kind="call", data="0x", to=registry)
    with pytest.raises(PermanentError, match="different transaction"):
        sender.submit(other)


def test_a_reverting_call_is_rejected_before_a_nonce_is_used(evm_env, registry) -> None:
    sender = make_sender("tributary_evm_2")
    before = sender.hook.pending_nonce(sender.hook.address)
    entry = load_artifact("Registry").function("record", ["0x" + "11" * 32, ""])
    request = TxRequest(idempotency_key=f"test:{uuid.uuid4().hex}", kind="call", to=registry,
                        data=encode_call(entry, ["0x" + "11" * 32, ""], "record"))
    with pytest.raises(ContractReverted, match="Registry: empty value"):
        sender.submit(request)
    assert sender.ledger.get(31337, request.idempotency_key)["status"] == "rejected"
    # The next transaction takes the very next nonce: nothing was leased or burnt.
    row = sender.submit(_increment(registry, f"test:{uuid.uuid4().hex}"))
    assert row["nonce"] == before
    sender.wait(row)


def test_a_nonce_released_after_a_failed_send_is_reused(evm_env, registry, db) -> None:
    sender = make_sender("tributary_evm_2")
    address = sender.hook.address
    lease = sender.nonces.allocate(31337, address)
    lease.release()  # the send "failed before reaching the node"
    again = sender.nonces.allocate(31337, address)
    assert (again.nonce, again.reused) == (lease.nonce, True)
    again.release()
    row = sender.submit(_increment(registry, f"test:{uuid.uuid4().hex}"))
    assert row["nonce"] == lease.nonce
    assert sender.wait(row)["status"] == "confirmed"


def test_fifty_concurrent_transactions_from_threads_and_processes_get_consecutive_nonces(
        evm_env, registry, anvil) -> None:
    sender = make_sender("tributary_evm_1")
    address = sender.hook.address
    start = sender.hook.pending_nonce(address)
    prefix = f"conc:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    children = [subprocess.Popen([sys.executable, str(ROOT / "tests/evm/_concurrent_sender.py"), "tributary_evm_1",
                                  registry, f"{prefix}:p{i}", "10", "4"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for i in range(2)]

    def send(i: int) -> dict:
        return sender.submit(_increment(registry, f"{prefix}:t:{i}"), gas=100_000)

    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(send, range(30)))
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-3000:]
        rows += json.loads(out.strip().splitlines()[-1])
    assert len(rows) == 50
    nonces = sorted(r["nonce"] for r in rows)
    assert nonces == list(range(start, start + 50))
    receipts = [sender.hook.get_receipt(r["tx_hash"]) for r in rows]
    assert all(r is not None and r["status"] == "0x1" for r in receipts)
    assert sender.hook.pending_nonce(address) == start + 50


def test_a_lease_abandoned_by_a_dead_holder_is_taken_over_after_its_ttl(evm_env, registry, db) -> None:
    sender = make_sender("tributary_evm_2")
    address = sender.hook.address
    abandoned = sender.nonces.allocate(31337, address)  # the holder "dies": never commits or releases
    fresh = sender.nonces.allocate(31337, address)
    assert fresh.nonce == abandoned.nonce + 1
    fresh.release()
    with db.cursor() as cur:
        cur.execute("UPDATE evm_nonce_leases SET leased_at = now() - interval '1 hour'"
                    " WHERE chain_id = 31337 AND address = %s AND nonce = %s", (address, abandoned.nonce))
    db.commit()
    taken = sender.nonces.allocate(31337, address)
    assert (taken.nonce, taken.reused) == (abandoned.nonce, True)
    taken.release()
    rows = [sender.submit(_increment(registry, f"test:{uuid.uuid4().hex}")) for _ in range(2)]
    assert [r["nonce"] for r in rows] == [abandoned.nonce, abandoned.nonce + 1]
    assert all(sender.wait(r)["status"] == "confirmed" for r in rows)


def test_nonce_too_low_from_an_outside_sender_is_absorbed_by_the_nonce_manager(evm_env, registry, db, anvil) -> None:
    sender = make_sender("tributary_evm_2")
    address = sender.hook.address
    start = sender.hook.pending_nonce(address)
    # Another wallet holding the same key sends behind the manager's back...
    anvil.rpc("eth_sendTransaction", [{"from": address, "to": anvil.accounts[0].address, "value": "0x1"}])
    # ...and the manager's first look at the node is stale (as in a race with that wallet).
    with db.cursor() as cur:
        cur.execute("UPDATE evm_nonces SET next_nonce = %s WHERE chain_id = 31337 AND address = %s", (start, address))
    db.commit()
    real = sender.nonces._pending_count
    answers = iter([start])
    sender.nonces._pending_count = lambda a: next(answers, None) or real(a)
    row = sender.submit(_increment(registry, f"test:{uuid.uuid4().hex}"))
    assert row["nonce"] == start + 1 and row["status"] == "sent"
    assert sender.wait(row)["status"] == "confirmed"
