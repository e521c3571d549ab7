"""BitcoinCoreHook against answers the regtest devnet cannot give on demand, and what needs no node.

The hook's normal conversation with a node (auth, wallets, batches, Core's errors, chain checks) is
tested against the devnet in ``test_bitcoin_hook_devnet.py``. Here the fake node of
``bitcoin_fake_node.py`` plays a node that misbehaves or is not the devnet's version of Core:
malformed or bodiless answers, pre-v28 envelopes, batch answers out of order, warm-up errors in a
scripted sequence, late answers, other Core versions' reject messages, a block other than the one
asked for.
"""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal

import pytest
from bitcoin.core import CTransaction, b2lx
from bitcoin_fake_node import RpcFault, fails

from tests._shared import SHARED
from tributary.bitcoin.amounts import btc_to_sats, sats_to_btc
from tributary.bitcoin.hook import BitcoinCoreHook, BitcoinRpcError
from tributary.bitcoin.parse import iter_block_file
from tributary.core.errors import DataError, ErrorClass, PermanentError, TransientError, classify
from tributary.core.retry import RetryPolicy

pytestmark = pytest.mark.unit

DATA = SHARED / "data" / "bitcoin"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
GENESIS_RAW = next(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
# The fully signed transaction of the BIP341 wallet vectors: any well-formed transaction will do.
SIGNED_TX = json.loads((DATA / "bip341-wallet-test-vectors.json").read_text())[
    "keyPathSpending"][0]["auxiliary"]["fullySignedTx"]


def _hook(**kwargs) -> BitcoinCoreHook:
    return BitcoinCoreHook(retry_policy=FAST, **kwargs)


def test_batch_results_follow_the_request_order_even_when_answers_do_not(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.reverse_batches = True
    node.methods["getblockhash"] = lambda p, w: f"hash-{p[0]}"
    hook = _hook()
    assert hook.batch([("getblockhash", [h]) for h in range(5)]) == [f"hash-{h}" for h in range(5)]
    assert len(node.requests) == 1


def test_a_warming_up_node_is_transient_and_reads_are_retried(node, bitcoin_conn) -> None:
    bitcoin_conn()
    answers = iter([RpcFault(-28, "Loading block index…"), RpcFault(-28, "Verifying blocks…"), 101])

    def getblockcount(params, wallet):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    node.methods["getblockcount"] = getblockcount
    assert _hook().get_block_count() == 101
    assert len(node.requests) == 3
    node.methods["getblockcount"] = fails(-28, "Loading wallet…")
    with pytest.raises(BitcoinRpcError) as info:
        _hook().get_block_count()
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


# How Core versions word "already known" (the devnet answers one of them: test_bitcoin_hook_devnet.py).
@pytest.mark.parametrize(("code", "message"), [
    (-27, "Transaction already in block chain"),
    (-27, "Transaction outputs already in utxo set"),
    (-26, "txn-already-known"),
])
def test_a_transaction_the_node_already_has_counts_as_sent(node, bitcoin_conn, code, message) -> None:
    bitcoin_conn()
    node.methods["sendrawtransaction"] = fails(code, message)
    txid = b2lx(CTransaction.deserialize(bytes.fromhex(SIGNED_TX)).GetTxid())
    assert _hook().send_raw_transaction(SIGNED_TX) == txid


def test_a_broadcast_whose_answer_timed_out_is_retried_safely(node, bitcoin_conn) -> None:
    bitcoin_conn(timeout=0.3)
    txid = b2lx(CTransaction.deserialize(bytes.fromhex(SIGNED_TX)).GetTxid())
    seen: list[str] = []

    def sendrawtransaction(params, wallet):
        seen.append(params[0])
        if len(seen) == 1:
            time.sleep(0.6)  # the node takes the transaction but answers after the client gave up
            return txid
        raise RpcFault(-27, "Transaction already in block chain")

    node.methods["sendrawtransaction"] = sendrawtransaction
    assert _hook().send_raw_transaction(SIGNED_TX) == txid
    assert len(seen) == 2


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b"<html>proxy</html>", DataError),
    (200, b'{"jsonrpc": "2.0", "id": 1}', DataError),  # neither result nor error
    (200, b'{"jsonrpc": "2.0", "id": 999, "result": 5}', DataError),  # wrong id
    (200, b'"just a string"', DataError),
    (200, b'{"id": 1, "error": {"message": "no code"}}', DataError),
    (503, b"Work queue depth exceeded", TransientError),
    (502, b"", TransientError),
    (404, b"Not Found", PermanentError),
])
def test_malformed_or_bodiless_answers_are_classified(node, bitcoin_conn, status, body, expected) -> None:
    bitcoin_conn()
    node.raw = (status, body)
    with pytest.raises(expected):
        _hook().call("getblockcount", retry=False)


def test_malformed_batch_answers_are_data_errors(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.raw = (200, b'[{"jsonrpc": "2.0", "id": 12345, "result": 1}]')
    with pytest.raises(DataError, match="batch"):
        _hook().batch([("getblockhash", [0]), ("getblockhash", [1])])


def test_connection_refused_is_transient_and_retried(bitcoin_conn) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bitcoin_conn(url=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError, match="unreachable") as info:
        _hook().get_block_count()
    assert classify(info.value).retryable


def test_a_per_call_timeout_is_transient(node, bitcoin_conn) -> None:
    bitcoin_conn(timeout=5)
    node.methods["getblockcount"] = lambda p, w: 1
    node.delay = 0.5
    with pytest.raises(TransientError, match=r"within 0\.1s"):
        _hook().call("getblockcount", timeout=0.1, retry=False)


def test_host_and_port_build_the_url_with_a_default_port_per_network(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(
        {"conn_type": "tributary_bitcoin", "host": "node.internal", "extra": {"network": "signet"}}))
    assert BitcoinCoreHook().base_url == "http://node.internal:38332"
    assert BitcoinCoreHook(wallet="w").endpoint() == "http://node.internal:38332/wallet/w"
    assert BitcoinCoreHook(wallet="w").endpoint("") == "http://node.internal:38332"


def test_get_block_raw_refuses_a_block_other_than_the_one_asked_for(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.methods["getblock"] = lambda p, w: GENESIS_RAW.hex() if p[1] == 0 else {}  # whatever the hash
    assert b2lx(_hook().get_block_raw(GENESIS).GetHash()) == GENESIS
    with pytest.raises(DataError, match="answered block"):
        _hook().get_block_raw("00" * 32)


def test_satoshi_conversion_is_exact() -> None:
    assert btc_to_sats(Decimal("20999999.97690000")) == 2_099_999_997_690_000
    assert btc_to_sats("0.00000001") == 1 and btc_to_sats(2) == 200_000_000
    assert sats_to_btc(141) == Decimal("0.00000141")
    with pytest.raises(ValueError, match="whole number"):
        btc_to_sats(Decimal("0.000000001"))
    with pytest.raises(TypeError):
        btc_to_sats(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "body", "error_class"), [
    (500, b'{"result": null, "error": {"code": -28, "message": "Loading block index..."}, "id": 1}',
     ErrorClass.TRANSIENT),
    (404, b'{"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": 1}',
     ErrorClass.PERMANENT),
    (500, b'{"result": null, "error": {"code": -5, "message": "Block not found"}, "id": 1}', ErrorClass.PERMANENT),
])
def test_pre_v28_answers_with_http_errors_and_json_bodies_are_read_as_rpc_errors(node, bitcoin_conn, status, body,
                                                                                 error_class) -> None:
    bitcoin_conn()
    node.raw = (status, body)
    with pytest.raises(BitcoinRpcError) as info:
        _hook().call("getblock", "00" * 32, retry=False)
    assert classify(info.value).error_class is error_class


def test_pre_v28_success_answers_carry_a_null_error(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.raw = (200, b'{"result": 42, "error": null, "id": 1}')
    assert _hook().call("getblockcount", retry=False) == 42


def test_the_connection_form_declares_the_bitcoin_extras() -> None:
    from tributary.provider_info import connection_type

    entry = connection_type("tributary_bitcoin")
    assert set(entry["conn-fields"]) == {"network", "wallet", "cookie_file", "timeout"}
    assert BitcoinCoreHook.get_ui_field_behaviour()["relabeling"]["host"] == "RPC host or URL"
