"""StacksHook against the devnet: deploy, read, call, confirmation, and the node's rejections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tributary.core.errors import ErrorClass, PermanentError, TransientError, classify
from tributary.core.retry import RetryPolicy
from tributary.stacks.clarity import CV
from tributary.stacks.hook import StacksHook, StacksRejection
from tributary.stacks.transactions import SignedTransaction

pytestmark = pytest.mark.devnet

ROOT = Path(__file__).resolve().parents[2]
COUNTER = (ROOT / "include" / "contracts" / "counter.clar").read_text()
TOKEN = (ROOT / "include" / "contracts" / "token.clar").read_text()


def _deploy(hook: StacksHook, name: str, source: str) -> str:
    tx = hook.build_contract_deploy(name, source, nonce=hook.get_nonce())
    txid = hook.broadcast(tx)
    assert txid == tx.txid
    outcome = hook.wait_for_transaction(txid, timeout=10, poll_interval=0.2)
    assert outcome.succeeded, outcome
    return txid


def test_test_connection_reports_network_peer_version_and_tips(stacks_conn: dict[str, str]) -> None:
    ok, message = StacksHook(stacks_conn["conn_id"]).test_connection()
    assert ok, message
    assert "testnet node, peer version 4207599105" in message
    assert "burn height" in message and "stacks tip height" in message


def test_test_connection_fails_when_the_node_is_on_another_network(stacks_devnet: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_STACKS_MAINNET_TEST", f'{{"conn_type": "tributary_stacks", '
                       f'"host": "{stacks_devnet.url}", "extra": {{"network": "mainnet"}}}}')
    ok, message = StacksHook("stacks_mainnet_test").test_connection()
    assert not ok and "network_id 2147483648" in message


def test_deploy_then_read_then_call_is_confirmed_and_changes_state(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    address = stacks_conn["address"]
    assert hook.sender_address == address
    assert hook.get_account(address).nonce == 0
    _deploy(hook, "counter", COUNTER)
    assert hook.get_nonce() == 1

    interface = hook.get_contract_interface(address, "counter")
    access = {f["name"]: f["access"] for f in interface["functions"]}
    assert access["increment"] == "public" and access["get-count"] == "read_only"
    assert hook.call_read(address, "counter", "get-count") == CV.uint(0)

    call = hook.build_contract_call(address, "counter", "increment", [CV.uint(5)], nonce=hook.get_nonce(), fee=777)
    txid = hook.broadcast(call)
    outcome = hook.wait_for_transaction(txid, timeout=10, poll_interval=0.2)
    assert outcome.succeeded and outcome.tx_status == "success"
    assert outcome.result == CV.ok(CV.uint(5))
    assert outcome.result_repr == "(ok u5)" and len(outcome.index_block_hash) == 64
    assert hook.call_read(address, "counter", "get-count") == CV.uint(5)
    assert hook.call_read(address, "counter", "get-increments", [CV.principal(address)]) == CV.uint(5)
    assert hook.get_nonce() == 2


def test_a_contract_error_is_mined_as_abort_by_response(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    _deploy(hook, "counter", COUNTER)
    call = hook.build_contract_call(stacks_conn["address"], "counter", "increment", [CV.uint(0)],
                                    nonce=hook.get_nonce())
    outcome = hook.wait_for_transaction(hook.broadcast(call), timeout=10, poll_interval=0.2)
    assert outcome.tx_status == "abort_by_response" and not outcome.succeeded
    assert outcome.result == CV.err(CV.uint(100))
    assert hook.get_nonce() == 2  # an aborted transaction still uses its nonce


def test_token_mint_and_transfer(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    me = stacks_conn["address"]
    other = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
    _deploy(hook, "token", TOKEN)
    for function, args in (("mint", [CV.uint(1000), CV.principal(me)]),
                           ("transfer", [CV.uint(250), CV.principal(me), CV.principal(other), CV.none()])):
        tx = hook.build_contract_call(me, "token", function, args, nonce=hook.get_nonce())
        assert hook.wait_for_transaction(hook.broadcast(tx), timeout=10, poll_interval=0.2).succeeded
    assert hook.call_read(me, "token", "get-balance", [CV.principal(other)]) == CV.ok(CV.uint(250))
    assert hook.call_read(me, "token", "get-total-supply") == CV.ok(CV.uint(1000))


def test_a_wrong_nonce_is_rejected_with_the_specs_bad_nonce_error(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    tx = hook.build_contract_deploy("counter", COUNTER, nonce=4)
    with pytest.raises(StacksRejection) as caught:
        hook.broadcast(tx)
    exc = caught.value
    assert exc.node_reason == "BadNonce" and exc.reason == "rejected:BadNonce"
    assert exc.reason_data == {"actual": 4, "expected": 0, "is_origin": True, "principal": stacks_conn["address"]}
    assert exc.txid == tx.txid
    assert classify(exc).error_class is ErrorClass.PERMANENT
    assert "BadNonce" in str(exc) and '"expected": 0' in str(exc)
    assert hook.get_transaction(tx.txid) is None


def test_a_bad_signature_is_rejected_and_nothing_is_executed(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    tx = hook.build_contract_deploy("counter", COUNTER, nonce=0)
    sig = bytearray(tx.signature)
    sig[40] ^= 0x01
    forged = SignedTransaction(tx.unsigned, bytes(sig))
    with pytest.raises(StacksRejection) as caught:
        hook.broadcast(forged)
    assert caught.value.node_reason == "SignatureValidation"
    assert classify(caught.value).error_class is ErrorClass.SECURITY
    assert hook.get_contract_interface(stacks_conn["address"], "counter") is None
    assert hook.get_nonce() == 0


def test_rebroadcasting_a_mined_transaction_answers_its_txid(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    tx = hook.build_contract_deploy("counter", COUNTER, nonce=0)
    assert hook.broadcast(tx) == hook.broadcast(tx.raw) == tx.txid
    assert hook.get_nonce() == 1


def test_read_failures_and_unknowns_are_classified(stacks_conn: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    assert hook.get_contract_interface(stacks_conn["address"], "missing") is None
    with pytest.raises(PermanentError, match="no contract"):
        hook.call_read(stacks_conn["address"], "missing", "get-count")
    _deploy(hook, "counter", COUNTER)
    with pytest.raises(PermanentError, match=r"read-only call counter\.nope failed"):
        hook.call_read(stacks_conn["address"], "counter", "nope")
    assert hook.get_transaction("00" * 32) is None
    with pytest.raises(TransientError, match="not in a block"):
        hook.wait_for_transaction("00" * 32, timeout=0.3, poll_interval=0.1)
    monkeypatch.setenv("AIRFLOW_CONN_STACKS_DOWN", '{"conn_type": "tributary_stacks", "host": "http://127.0.0.1:9"}')
    down = StacksHook("stacks_down", timeout=1, retry_policy=RetryPolicy(attempts=2, base_delay=0.01))
    with pytest.raises(TransientError, match="unreachable"):
        down.get_info()


def test_the_devnet_accepts_the_specs_json_body_and_refuses_garbage(stacks_conn: dict[str, str]) -> None:
    import requests

    hook = StacksHook(stacks_conn["conn_id"])
    tx = hook.build_contract_deploy("counter", COUNTER, nonce=0)
    answer = requests.post(f"{stacks_conn['url']}/v2/transactions", json={"tx": tx.raw.hex()}, timeout=10)
    assert answer.status_code == 200 and answer.json() == tx.txid
    garbage = requests.post(f"{stacks_conn['url']}/v2/transactions", data=b"\x00\x01",
                            headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert garbage.status_code == 400 and garbage.text.startswith("Failed to decode transaction")
    with pytest.raises(PermanentError, match="HTTP 400"):
        hook.broadcast(b"\x00\x01")
    account = requests.get(f"{stacks_conn['url']}/v2/accounts/{stacks_conn['address']}?proof=0", timeout=10).json()
    assert account == {"balance": "0x" + "0" * 32, "locked": "0x" + "0" * 32, "unlock_height": 0, "nonce": 1}


def test_the_private_key_is_masked_and_never_in_results(stacks_conn: dict[str, str]) -> None:
    hook = StacksHook(stacks_conn["conn_id"])
    tx = hook.build_contract_deploy("counter", COUNTER, nonce=0)
    outcome = hook.wait_for_transaction(hook.broadcast(tx), timeout=10, poll_interval=0.2)
    secret = stacks_conn["key"]
    assert secret[:64] not in repr(hook._key) and secret[:64] not in repr(outcome.as_dict())
