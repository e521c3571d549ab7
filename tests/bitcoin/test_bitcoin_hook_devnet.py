"""BitcoinCoreHook against the regtest devnet (``devnets/bitcoin``): every answer Bitcoin Core gives.

The devnet is the Bitcoin peer of the tests. What the hook put on the wire is read from ``requests``'
own response hook (:class:`Sent`), since the devnet does not echo requests. Answers the devnet cannot
give on demand (malformed bodies, older Core versions' envelopes and messages, answers out of order or
too late) are in ``test_bitcoin_hook.py``, against ``bitcoin_fake_node.py``.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from bitcoin.core import CBlock, b2lx

from tributary.bitcoin.amounts import btc_to_sats, sats_to_btc
from tributary.bitcoin.hook import BitcoinCoreHook, BitcoinRpcError
from tributary.core.errors import ErrorClass, PermanentError, classify
from tributary.core.masking import mask_text
from tributary.core.retry import RetryPolicy

pytestmark = pytest.mark.devnet

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


class Sent:
    """The HTTP requests ``hook`` sent that got an answer, in order."""

    def __init__(self, hook: BitcoinCoreHook) -> None:
        self.requests: list[requests.PreparedRequest] = []
        hook.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.requests.append(response.request)

    def bodies(self) -> list[Any]:
        return [json.loads(r.body) for r in self.requests]


def _hook(**kwargs: Any) -> BitcoinCoreHook:
    return BitcoinCoreHook(retry_policy=FAST, **kwargs)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _connect(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(conn))


def _password_conn(regtest: Any, **extra: Any) -> dict[str, Any]:
    """The devnet with login/password (its cookie's pair) instead of the cookie file."""
    user, password = regtest.handle.auth
    return {"conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": regtest.handle.port, "login": user,
            "password": password, "extra": {"network": "regtest", **extra}}


def _wallet(regtest: Any, name: str) -> str:
    """Wallet ``name`` on the session devnet, created once."""
    node = BitcoinCoreHook(wallet="")
    if name not in node.call("listwallets"):
        try:
            node.call("loadwallet", name)
        except BitcoinRpcError:
            node.call("createwallet", name)
    return name


def test_calls_send_basic_auth_and_amounts_come_back_as_decimal(regtest, monkeypatch) -> None:
    _connect(monkeypatch, _password_conn(regtest))
    hook = _hook()
    sent = Sent(hook)
    answer = hook.estimate_smart_fee(6)
    # The node's own digits, read as text: the hook's Decimal must be exactly them (no float on the way).
    user, password = regtest.handle.auth
    raw = requests.post(regtest.handle.url, json={"method": "estimatesmartfee", "params": [6, "conservative"],
                                                  "id": 1}, auth=(user, password), timeout=10)
    feerate = Decimal(raw.json(parse_float=str)["result"]["feerate"])
    assert answer["feerate"] == feerate and isinstance(answer["feerate"], Decimal)
    assert answer["feerate_sat_vb"] == feerate * 100_000
    assert sent.requests[-1].headers["Authorization"] == _basic(user, password)
    assert sent.bodies()[-1]["method"] == "estimatesmartfee" and sent.bodies()[-1]["params"] == [6, "conservative"]


def test_decimal_params_are_sent_as_exact_json_numbers(regtest, monkeypatch) -> None:
    wallet = _wallet(regtest, "payouts")
    payouts = BitcoinCoreHook(wallet=wallet)
    regtest.rpc("sendtoaddress", payouts.get_new_address(), Decimal("1"), wallet=regtest.wallet)
    regtest.mine(1)
    _connect(monkeypatch, {**regtest.conn, "extra": {**regtest.conn["extra"], "wallet": wallet}})
    hook = _hook()
    sent = Sent(hook)
    address = BitcoinCoreHook(wallet=regtest.wallet).get_new_address()
    answer = hook.wallet_create_funded_psbt([], [{address: sats_to_btc(12_345_678)}])
    assert answer["fee_sats"] == btc_to_sats(answer["fee"]) > 0
    assert f'"{address}":0.12345678'.encode() in sent.requests[-1].body
    assert sent.requests[-1].path_url == "/wallet/payouts"
    outputs = regtest.rpc("decodepsbt", answer["psbt"])["tx"]["vout"]
    assert any(o["value"] == Decimal("0.12345678") and o["scriptPubKey"].get("address") == address for o in outputs)


def test_cookie_file_is_read_again_after_a_401(tmp_path: Path, monkeypatch) -> None:
    from devnets.bitcoin.process import start_devnet

    first = start_devnet(tmp_path)
    port, cookie = first.port, first.cookie_path
    _connect(monkeypatch, {"conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": port,
                           "extra": {"cookie_file": str(cookie), "network": "regtest"}})
    hook = _hook()
    sent = Sent(hook)
    try:
        height = hook.get_block_count()
        old = cookie.read_text().strip().partition(":")
    finally:
        first.stop()
    with start_devnet(tmp_path, port=port):  # bitcoind restarts: a new cookie on disk, the old one rejected
        new = cookie.read_text().strip().partition(":")
        assert new[2] != old[2]
        assert hook.get_block_count() == height
    assert [r.headers["Authorization"] for r in sent.requests[-2:]] == [_basic(old[0], old[2]),
                                                                        _basic(new[0], new[2])]
    assert mask_text(f"auth failed for {new[2]}") == "auth failed for ***"


def test_wrong_credentials_are_permanent_and_not_retried(regtest, monkeypatch) -> None:
    _connect(monkeypatch, {**_password_conn(regtest), "password": "wrong"})
    hook = _hook()
    sent = Sent(hook)
    with pytest.raises(PermanentError, match="HTTP 401") as info:
        hook.get_block_count()
    assert classify(info.value).reason == "http:401:credentials"
    assert len(sent.requests) == 1


def test_wallet_endpoint_is_the_default_with_a_per_call_override(regtest, monkeypatch) -> None:
    hot, cold = _wallet(regtest, "hot wallet"), _wallet(regtest, "cold")
    _connect(monkeypatch, {**regtest.conn, "extra": {**regtest.conn["extra"], "wallet": hot}})
    hook = _hook()
    sent = Sent(hook)
    from_hot = hook.get_new_address()
    from_cold = hook.get_new_address(wallet=cold)
    hook.get_block_count()
    assert [r.path_url for r in sent.requests] == ["/wallet/hot%20wallet", "/wallet/cold", "/"]
    assert BitcoinCoreHook(wallet=hot).call("getaddressinfo", from_hot)["ismine"] is True
    assert BitcoinCoreHook(wallet=cold).call("getaddressinfo", from_cold)["ismine"] is True
    assert BitcoinCoreHook(wallet=cold).call("getaddressinfo", from_hot)["ismine"] is False


def test_large_batches_are_sent_in_chunks(regtest) -> None:
    hook = _hook()
    sent = Sent(hook)
    hashes = hook.get_block_hashes(10, 34, chunk_size=10)
    assert [len(body) for body in sent.bodies()] == [10, 10, 5]
    assert hashes == [hook.get_block_hash(h) for h in range(10, 35)]


def test_batch_item_errors_are_raised_or_returned_classified(regtest) -> None:
    hook = _hook()
    tip = hook.get_block_count()
    calls = [("getblockhash", [h]) for h in range(tip - 2, tip + 3)]  # the last two are above the tip
    with pytest.raises(BitcoinRpcError, match="out of range") as info:
        hook.batch(calls)
    assert classify(info.value).error_class is ErrorClass.PERMANENT
    results = hook.batch(calls, raise_errors=False)
    assert results[:3] == [hook.get_block_hash(h) for h in range(tip - 2, tip + 1)]
    assert all(isinstance(r, BitcoinRpcError) and r.code == -8 for r in results[3:])


def _signed_payment(regtest: Any, *, fee_sats: int | None = None) -> str:
    """A signed payment of the devnet wallet; ``fee_sats`` pays that fee instead of the wallet's."""
    from embit.psbt import PSBT

    wallet = BitcoinCoreHook(wallet=regtest.wallet)
    funded = wallet.wallet_create_funded_psbt([], [{wallet.get_new_address(): Decimal("0.1")}], 0, {"fee_rate": 1})
    psbt = funded["psbt"]
    if fee_sats is not None:
        unsigned = PSBT.from_string(psbt)  # the payment takes what the fee gives up; signed after that
        unsigned.outputs[1 - int(funded["changepos"])].value += funded["fee_sats"] - fee_sats
        psbt = unsigned.to_string()
    return wallet.wallet_process_psbt(psbt)["hex"]


def test_a_rejected_transaction_is_permanent_and_carries_the_reason(regtest) -> None:
    below_relay_fee = _signed_payment(regtest, fee_sats=1)
    hook = _hook()
    sent = Sent(hook)
    with pytest.raises(BitcoinRpcError) as info:
        hook.send_raw_transaction(below_relay_fee)
    classification = classify(info.value)
    assert classification.error_class is ErrorClass.PERMANENT
    assert classification.reason == "jsonrpc:-26:min relay fee not met"
    assert len(sent.requests) == 1  # never retried


def test_a_transaction_the_node_already_has_counts_as_sent(regtest) -> None:
    raw = _signed_payment(regtest)
    hook = _hook()
    txid = hook.send_raw_transaction(raw)
    assert hook.send_raw_transaction(raw) == txid  # in the mempool: the node answers the txid again
    regtest.mine(1)
    assert hook.send_raw_transaction(raw) == txid  # mined: -27, which counts as sent


def test_test_connection_reports_chain_height_and_tip(regtest) -> None:
    hook = _hook()
    height, best = hook.get_block_count(), hook.get_best_block_hash()
    assert hook.test_connection() == (True, f"chain regtest, height {height}, best {best}")
    assert hook.chain_name() == "regtest"


def test_test_connection_fails_when_the_node_is_on_another_chain(regtest, monkeypatch) -> None:
    _connect(monkeypatch, {**regtest.conn, "extra": {**regtest.conn["extra"], "network": "mainnet"}})
    ok, message = _hook().test_connection()
    assert not ok and message.startswith("[permanent]") and "expects 'main'" in message
    with pytest.raises(PermanentError, match="on chain 'regtest'"):
        _hook().check_chain()
    with pytest.raises(PermanentError, match="on chain 'regtest'"):
        _hook().chain_name()


def test_get_block_raw_returns_a_checked_cblock(regtest) -> None:
    hook = _hook()
    best = hook.get_best_block_hash()
    raw = bytes.fromhex(hook.call("getblock", best, 0))
    block = hook.get_block_raw(best)
    assert isinstance(block, CBlock) and b2lx(block.GetHash()) == best
    assert hook.get_blocks_bytes([best, best]) == [raw, raw]


def test_wallet_reads_convert_amounts_to_satoshis(regtest) -> None:
    hook = _hook(wallet=regtest.wallet)
    sent = Sent(hook)
    utxos = hook.list_unspent()
    assert utxos and all(isinstance(u["amount"], Decimal) for u in utxos)
    assert all(u["amount_sats"] == int(u["amount"] * 100_000_000) for u in utxos)
    assert sent.bodies()[-1]["params"] == [1, 9_999_999, []]
