"""Fixtures of the Bitcoin tests: the regtest devnet, their Bitcoin peer, and the Connection pointing at it;
the fake node (``bitcoin_fake_node.py``) for the answers the devnet cannot give (see its docstring)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from bitcoin_fake_node import FakeNode


@pytest.fixture
def node() -> Iterator[FakeNode]:
    """The fake node: malformed or scripted answers only."""
    fake = FakeNode()
    yield fake
    fake.close()


@pytest.fixture
def bitcoin_conn(node: FakeNode, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Configure ``AIRFLOW_CONN_TRIBUTARY_BITCOIN``; returns the conn id."""

    def configure(*, login: str | None = "alice", password: str | None = "correct horse",
                  url: str | None = None, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "tributary_bitcoin", "host": url or node.url, "extra": extra}
        if login is not None:
            conn["login"] = login
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(conn))
        return "tributary_bitcoin"

    return configure


# --------------------------------------------------------------------------- the regtest devnet
@dataclass
class Regtest:
    """A running devnet (``devnets/bitcoin``) with a funded wallet, and the Connection pointing at it."""

    handle: Any
    conn: dict[str, Any]
    wallet: str
    mining_address: str

    def rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(wallet=wallet).call(method, *params)

    def mine(self, blocks: int = 1) -> list[str]:
        return self.rpc("generatetoaddress", blocks, self.mining_address)


@pytest.fixture(scope="session")
def regtest_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One devnet process for the whole session (cookie auth, like a local bitcoind)."""
    from devnets.bitcoin.process import start_devnet

    with start_devnet(tmp_path_factory.mktemp("regtest")) as handle:
        yield handle


@pytest.fixture
def regtest(regtest_node: Any, monkeypatch: pytest.MonkeyPatch) -> Regtest:
    """The session devnet as ``AIRFLOW_CONN_TRIBUTARY_BITCOIN`` (wallet ``tributary``), 101+ blocks mined.

    Tests share the chain: read heights and balances relative to what you find, never absolute.
    """
    conn = {"conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": regtest_node.port,
            "extra": {"cookie_file": str(regtest_node.cookie_path), "network": "regtest", "wallet": "tributary"}}
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(conn))
    from tributary.bitcoin.hook import BitcoinCoreHook

    node = BitcoinCoreHook(wallet="")
    if "tributary" not in node.call("listwallets"):
        try:
            node.call("loadwallet", "tributary")
        except Exception:
            node.call("createwallet", "tributary")
    wallet = BitcoinCoreHook()
    address = wallet.call("getnewaddress")
    if node.call("getblockcount") < 101:
        node.call("generatetoaddress", 101, address)
    return Regtest(regtest_node, conn, "tributary", address)
