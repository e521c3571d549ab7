"""BitcoinCoreHook against a local JSON-RPC server that answers like Bitcoin Core."""

from __future__ import annotations

import base64
import json
import socket
import time
from decimal import Decimal

import pytest
from bitcoin.core import CBlock, CTransaction, b2lx
from bitcoin_fake_node import RpcFault, fails

from tests._shared import SHARED
from tributary.bitcoin.hook import BitcoinCoreHook, BitcoinRpcError, btc_to_sats, sats_to_btc
from tributary.bitcoin.parse import iter_block_file
from tributary.core.errors import DataError, ErrorClass, PermanentError, TransientError, classify
from tributary.core.masking import mask_text
from tributary.core.retry import RetryPolicy

DATA = SHARED / "data" / "bitcoin"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
GENESIS_RAW = next(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
# The fully signed transaction of the BIP341 wallet vectors: any well-formed transaction will do.
SIGNED_TX = json.loads((DATA / "bip341-wallet-test-vectors.json").read_text())[
    "keyPathSpending"][0]["auxiliary"]["fullySignedTx"]


def _hook(**kwargs) -> BitcoinCoreHook:
    return BitcoinCoreHook(retry_policy=FAST, **kwargs)


def _chain_info(chain: str = "regtest"):
    return lambda params, wallet: {"chain": chain, "blocks": 101, "bestblockhash": "ab" * 32,
                                   "verificationprogress": Decimal("1.0")}


def test_calls_send_basic_auth_and_amounts_come_back_as_decimal(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.methods["estimatesmartfee"] = lambda p, w: {"feerate": Decimal("0.00012345"), "blocks": p[0]}
    answer = _hook().estimate_smart_fee(6)
    assert answer["feerate"] == Decimal("0.00012345") and isinstance(answer["feerate"], Decimal)
    assert answer["feerate_sat_vb"] == Decimal("12.345")
    request = node.requests[-1]
    assert request["auth"] == "Basic " + base64.b64encode(b"alice:correct horse").decode()
    assert node.posted()[-1]["method"] == "estimatesmartfee" and node.posted()[-1]["params"] == [6, "conservative"]


def test_decimal_params_are_sent_as_exact_json_numbers(node, bitcoin_conn) -> None:
    bitcoin_conn(wallet="payouts")
    node.methods["walletcreatefundedpsbt"] = lambda p, w: {"psbt": "cHNidP8=", "fee": Decimal("0.00000141"),
                                                           "changepos": 1}
    answer = _hook().wallet_create_funded_psbt([], [{"bcrt1qexample": sats_to_btc(12_345_678)}])
    assert answer["fee_sats"] == 141
    assert b'"bcrt1qexample":0.12345678' in node.requests[-1]["body"]
    assert node.requests[-1]["path"] == "/wallet/payouts"


def test_cookie_file_is_read_again_after_a_401(node, bitcoin_conn, tmp_path) -> None:
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:first-secret")
    node.user, node.password = "__cookie__", "first-secret"
    bitcoin_conn(login=None, password=None, cookie_file=str(cookie))
    node.methods["getblockcount"] = lambda p, w: 7
    hook = _hook()
    assert hook.get_block_count() == 7
    # bitcoind restarts: a new cookie on disk, the old one rejected
    node.password = "second-secret"
    cookie.write_text("__cookie__:second-secret")
    assert hook.get_block_count() == 7
    assert [r["auth"] for r in node.requests[-2:]] == [
        "Basic " + base64.b64encode(b"__cookie__:first-secret").decode(),
        "Basic " + base64.b64encode(b"__cookie__:second-secret").decode()]
    assert mask_text("auth failed for second-secret") == "auth failed for ***"


def test_wrong_credentials_are_permanent_and_not_retried(node, bitcoin_conn) -> None:
    bitcoin_conn(password="wrong")
    node.methods["getblockcount"] = lambda p, w: 7
    with pytest.raises(PermanentError, match="HTTP 401") as info:
        _hook().get_block_count()
    assert classify(info.value).reason == "http:401:credentials"
    assert len(node.requests) == 1


def test_wallet_endpoint_is_the_default_with_a_per_call_override(node, bitcoin_conn) -> None:
    bitcoin_conn(wallet="hot wallet")
    node.methods["getnewaddress"] = lambda p, w: f"addr-from-{w}"
    node.methods["getblockcount"] = lambda p, w: 1
    hook = _hook()
    assert hook.get_new_address() == "addr-from-hot%20wallet"
    assert hook.get_new_address(wallet="cold") == "addr-from-cold"
    hook.get_block_count()
    assert [r["path"] for r in node.requests] == ["/wallet/hot%20wallet", "/wallet/cold", "/"]


def test_batch_results_follow_the_request_order_even_when_answers_do_not(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.reverse_batches = True
    node.methods["getblockhash"] = lambda p, w: f"hash-{p[0]}"
    hook = _hook()
    assert hook.batch([("getblockhash", [h]) for h in range(5)]) == [f"hash-{h}" for h in range(5)]
    assert len(node.requests) == 1


def test_large_batches_are_sent_in_chunks(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.methods["getblockhash"] = lambda p, w: f"hash-{p[0]}"
    assert _hook().get_block_hashes(10, 34, chunk_size=10) == [f"hash-{h}" for h in range(10, 35)]
    assert [len(body) for body in node.posted()] == [10, 10, 5]


def test_batch_item_errors_are_raised_or_returned_classified(node, bitcoin_conn) -> None:
    bitcoin_conn()

    def getblockhash(params, wallet):
        if params[0] > 2:
            raise RpcFault(-8, "Block height out of range")
        return f"hash-{params[0]}"

    node.methods["getblockhash"] = getblockhash
    hook = _hook()
    calls = [("getblockhash", [h]) for h in range(5)]
    with pytest.raises(BitcoinRpcError, match="out of range") as info:
        hook.batch(calls)
    assert classify(info.value).error_class is ErrorClass.PERMANENT
    results = hook.batch(calls, raise_errors=False)
    assert results[:3] == ["hash-0", "hash-1", "hash-2"]
    assert all(isinstance(r, BitcoinRpcError) and r.code == -8 for r in results[3:])


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


def test_a_rejected_transaction_is_permanent_and_carries_the_reason(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.methods["sendrawtransaction"] = fails(-26, "min relay fee not met, 100 < 141")
    with pytest.raises(BitcoinRpcError) as info:
        _hook().send_raw_transaction(SIGNED_TX)
    classification = classify(info.value)
    assert classification.error_class is ErrorClass.PERMANENT
    assert classification.reason == "jsonrpc:-26:min relay fee not met"
    assert len(node.requests) == 1  # never retried


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


def test_test_connection_reports_chain_height_and_tip(node, bitcoin_conn) -> None:
    bitcoin_conn(network="regtest")
    node.methods["getblockchaininfo"] = _chain_info("regtest")
    assert _hook().test_connection() == (True, f"chain regtest, height 101, best {'ab' * 32}")


def test_test_connection_fails_when_the_node_is_on_another_chain(node, bitcoin_conn) -> None:
    bitcoin_conn(network="mainnet")
    node.methods["getblockchaininfo"] = _chain_info("regtest")
    ok, message = _hook().test_connection()
    assert not ok and message.startswith("[permanent]") and "expects 'main'" in message
    with pytest.raises(PermanentError, match="on chain 'regtest'"):
        _hook().check_chain()


def test_host_and_port_build_the_url_with_a_default_port_per_network(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(
        {"conn_type": "tributary_bitcoin", "host": "node.internal", "extra": {"network": "signet"}}))
    assert BitcoinCoreHook().base_url == "http://node.internal:38332"
    assert BitcoinCoreHook(wallet="w").endpoint() == "http://node.internal:38332/wallet/w"
    assert BitcoinCoreHook(wallet="w").endpoint("") == "http://node.internal:38332"


def test_get_block_raw_returns_a_checked_cblock(node, bitcoin_conn) -> None:
    bitcoin_conn()
    node.methods["getblock"] = lambda p, w: GENESIS_RAW.hex() if p[1] == 0 else {}
    block = _hook().get_block_raw(GENESIS)
    assert isinstance(block, CBlock) and b2lx(block.GetHash()) == GENESIS
    assert _hook().get_blocks_bytes([GENESIS, GENESIS]) == [GENESIS_RAW, GENESIS_RAW]
    with pytest.raises(DataError, match="answered block"):
        _hook().get_block_raw("00" * 32)


def test_wallet_reads_convert_amounts_to_satoshis(node, bitcoin_conn) -> None:
    bitcoin_conn(wallet="w")
    node.methods["listunspent"] = lambda p, w: [{"txid": "aa" * 32, "vout": 0, "amount": Decimal("0.5"),
                                                 "confirmations": 3}]
    [utxo] = _hook().list_unspent()
    assert utxo["amount_sats"] == 50_000_000
    assert node.posted()[-1]["params"] == [1, 9_999_999, []]


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
