"""One idempotency key, one mined transaction, whatever fails (issue 11 §1).

A fault proxy between the hook and anvil drops the node's answer to a send it forwarded, answers
null to transaction lookups for a while; the nonce row is held locked past the (shortened) takeover
timeout; several attempts run with one key at once. The ledger must match the chain.
The 200-run figure: ``.venv/bin/python bench/bench_evm_faults.py`` (docs/evm.md).
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.evm import _fault_runs
from tributary.evm.transactions import TxRequest

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

SINK = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture(scope="module")
def faulty(evm_env, anvil):
    """``tributary_evm_faulty`` (a fresh funded account through a FaultProxy), ``tributary_evm_clean``."""
    key = _fault_runs.fresh_account(anvil.url)
    name, value, proxy = _fault_runs.proxy_env("tributary_evm_faulty", anvil.url, key)
    env = {name: value, "AIRFLOW_CONN_TRIBUTARY_EVM_CLEAN": _fault_runs.conn_json(anvil.url, key),
           "TRIBUTARY_FAULTS_KEY": key}
    os.environ.update(env)
    yield proxy
    for k in env:
        os.environ.pop(k, None)
    proxy.stop()


def _sender(conn_id: str = "tributary_evm_faulty", takeover: float = 0.6):
    from tributary.evm.hook import EvmHook
    from tributary.evm.transactions import TransactionSender
    from tributary.storage.warehouse import WarehouseHook

    return TransactionSender(EvmHook(conn_id), WarehouseHook().get_conn, preparing_timeout=takeover)


def _transfer(key: str) -> TxRequest:
    return TxRequest(idempotency_key=key, kind="transfer", data="0x" + key.encode().hex(), to=SINK, value=1)


def test_an_ambiguous_send_keeps_the_signed_bytes_and_the_retry_resends_them(faulty) -> None:
    from tributary.core.errors import TransientError

    sender = _sender()
    key = f"once:{uuid.uuid4().hex}"
    from tributary.evm.transactions import SEND_ATTEMPTS

    # anvil gets (and mines) the bytes, the hook sees a reset, every time it tries within the attempt;
    # and the node "does not know" the transaction for a while
    faulty.drop_sends = SEND_ATTEMPTS
    faulty.null_lookups(5.0)
    with pytest.raises(TransientError):
        sender.submit(_transfer(key))
    row = sender.ledger.get(31337, key)
    assert row["status"] == "signed" and row["nonce"] is not None and row["raw_tx"]
    faulty.reset()
    again = sender.submit(_transfer(key))
    assert (again["tx_hash"], again["nonce"], again["status"]) == (row["tx_hash"], row["nonce"], "sent")
    assert sender.wait(again)["status"] == "confirmed"
    sender.nonces.close()


def test_a_superseded_attempt_stops_before_it_signs(faulty) -> None:
    """Attempt 1 waits on the nonce row past the takeover timeout; attempt 2 takes the row over:
    only one of them signs and sends."""
    import random

    first, second = _sender(), _sender()
    key = f"once:{uuid.uuid4().hex}"
    faulty.reset()
    from tributary.evm.transactions import Superseded

    outcomes = _fault_runs._lock_takeover(first, second, key, _transfer, 0.6, faulty, random.Random(1))
    assert sorted(type(o).__name__ for o in outcomes) == ["Superseded", "dict"], outcomes
    assert isinstance(next(o for o in outcomes if not isinstance(o, dict)), Superseded)
    faulty.reset()
    clean = _sender("tributary_evm_clean")
    row = clean.submit(_transfer(key))
    row = clean.wait(row)
    assert row["status"] == "confirmed" and row["generation"] >= 2
    sent = [tx for tx in _sent_by(clean, key)]
    assert len(sent) == 1 and sent[0]["hash"] == row["tx_hash"]
    for s in (first, second, clean):
        s.nonces.close()


def test_a_dropped_transaction_that_was_mined_is_not_signed_again(faulty) -> None:
    """The trigger reports the transaction dropped (the node answers null); the re-broadcast meets
    "nonce too low" while lookups still answer null: the chain shows it is ours, no new signature."""
    from tributary.evm import execution

    sender = _sender()
    key = f"once:{uuid.uuid4().hex}"
    row = sender.submit(_transfer(key))
    faulty.null_lookups(5.0)
    again = execution.rebroadcast_dropped(sender, sender.ledger.get(31337, key))
    faulty.reset()
    assert (again["tx_hash"], again["nonce"], again["superseded_tx_hashes"]) == (row["tx_hash"], row["nonce"], [])
    assert len(_sent_by(sender, key)) == 1
    sender.nonces.close()


def test_a_signed_transaction_is_signed_again_only_once_its_nonce_is_used_by_another(faulty, anvil) -> None:
    from eth_account import Account

    from tributary.core.errors import TransientError
    from tributary.evm.transactions import SEND_ATTEMPTS

    sender = _sender()
    key = f"once:{uuid.uuid4().hex}"
    faulty.lose_sends = SEND_ATTEMPTS  # the bytes never reach the node, the hook cannot know it
    with pytest.raises(TransientError):
        sender.submit(_transfer(key))
    faulty.reset()
    signed = sender.ledger.get(31337, key)
    assert signed["status"] == "signed"
    # Another wallet with the same key takes the nonce (and it is mined, 1 confirmation deep).
    account = Account.from_key(os.environ["TRIBUTARY_FAULTS_KEY"])
    fees = sender.hook.fees()
    other = account.sign_transaction({"type": 2, "chainId": 31337, "nonce": signed["nonce"], "gas": 21000,
                                      "maxFeePerGas": fees.max_fee_per_gas,
                                      "maxPriorityFeePerGas": fees.max_priority_fee_per_gas, "to": SINK,
                                      "value": 2, "data": b""})
    sender.hook.rpc("eth_sendRawTransaction", ["0x" + other.raw_transaction.hex()])
    row = sender.submit(_transfer(key))
    assert row["status"] == "sent" and row["nonce"] == signed["nonce"] + 1
    assert row["superseded_tx_hashes"] == [signed["tx_hash"]] and row["generation"] == signed["generation"] + 1
    assert [tx["hash"] for tx in _sent_by(sender, key)] == [row["tx_hash"]]
    sender.wait(row)
    sender.nonces.close()


def _sent_by(sender, key: str) -> list[dict]:
    hook = sender.hook
    data = "0x" + key.encode().hex()
    head = hook.block_number()
    return [tx for n in range(max(0, head - 20), head + 1) for tx in hook.get_block(n, full=True)["transactions"]
            if tx["input"] == data]


def test_thirty_randomized_fault_runs_mine_exactly_one_transaction_per_key(faulty, anvil) -> None:
    figure = _fault_runs.run_campaign(faulty_conn="tributary_evm_faulty", clean_conn="tributary_evm_clean",
                                      runs=30, seed=int(os.environ.get("EVM_FAULT_SEED", "11")), takeover=0.6)
    print(figure.line())
    assert figure.problems == []
    assert (figure.keys, figure.mined, figure.duplicates, figure.ledger_matches_chain) == (30, 30, 0, True)
