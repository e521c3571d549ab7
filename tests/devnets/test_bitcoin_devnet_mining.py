"""The devnet's periodic miner: a deployment whose devnet nobody mines by hand still confirms."""

from __future__ import annotations

import time

import pytest
import requests

from devnets.bitcoin.process import start_devnet

pytestmark = pytest.mark.devnet


def _rpc(node, method: str, *params, wallet: str | None = None):
    url = node.url + (f"/wallet/{wallet}" if wallet else "/")
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    answer = requests.post(url, json=body, auth=node.auth, timeout=10).json()
    assert answer.get("error") is None, answer
    return answer["result"]


def test_mine_every_mines_to_the_loaded_wallet_and_confirms_a_payment(tmp_path) -> None:
    with start_devnet(tmp_path / "mining", mine_every=0.3) as node:
        time.sleep(1.0)
        assert _rpc(node, "getblockcount") == 0  # no wallet loaded yet: nothing to mine to
        _rpc(node, "createwallet", "tributary")
        funding = _rpc(node, "getnewaddress", wallet="tributary")
        _rpc(node, "generatetoaddress", 101, funding)  # mature coins, as the run command's bootstrap does
        txid = _rpc(node, "sendtoaddress", _rpc(node, "getnewaddress", wallet="tributary"), 1.0, wallet="tributary")
        deadline = time.monotonic() + 20
        while _rpc(node, "gettransaction", txid, wallet="tributary")["confirmations"] < 2:
            assert time.monotonic() < deadline, "the periodic miner did not confirm the payment"
            time.sleep(0.2)
        assert _rpc(node, "getblockcount") >= 103


def test_without_mine_every_the_chain_only_moves_when_asked(tmp_path) -> None:
    with start_devnet(tmp_path / "still") as node:
        _rpc(node, "createwallet", "tributary")
        time.sleep(1.0)
        assert _rpc(node, "getblockcount") == 0
