"""A fresh deployment's devnets are ready for the DAGs' defaults: the Stacks devnet starts with the
example contracts deployed from the Connection's sender (``stacks_contract_execution`` reads
``counter`` by default), and the Bitcoin devnet the run command starts mines on its own."""

from __future__ import annotations

import pytest
import requests

from tributary.cli.devnets import BITCOIN_BLOCK_INTERVAL, STACKS_DEVNET_KEY, BitcoinDevnet, LocalDevnets, StacksDevnet


@pytest.mark.devnet
def test_the_stacks_devnet_gets_every_example_contract_once() -> None:
    from devnets.stacks.process import installed, start_devnet
    from tributary.stacks.transactions import PrivateKey

    if not installed():
        pytest.fail("devnets/stacks has no node_modules: run ./scripts/bootstrap.sh")
    with start_devnet() as node:
        devnet = StacksDevnet(int(node.url.rsplit(":", 1)[1]))
        sender = PrivateKey.from_hex(STACKS_DEVNET_KEY).address("testnet")
        first = devnet.deploy_examples()
        assert sorted(first) == [f"{sender}.counter", f"{sender}.token"]
        for name in ("counter", "token"):
            interface = requests.get(f"{devnet.url}/v2/contracts/interface/{sender}/{name}", timeout=10)
            assert interface.status_code == 200 and interface.json()["functions"]
        assert devnet.deploy_examples() == []  # a restart of the run command deploys nothing twice


@pytest.mark.unit
def test_the_run_commands_bitcoin_devnet_mines_by_default(tmp_path) -> None:
    devnets = LocalDevnets.plan(tmp_path, {}, bitcoin_port=18999, stacks_port=20999, evm_port=8999,
                                did_ports=(8998, 8997), dwn_ports=(3998, 3997))
    assert isinstance(devnets.bitcoin, BitcoinDevnet) and devnets.bitcoin.mine_every == BITCOIN_BLOCK_INTERVAL > 0
    command = devnets.commands()["bitcoin-devnet"]
    assert command[command.index("--mine-every") + 1] == str(BITCOIN_BLOCK_INTERVAL)
    still = LocalDevnets.plan(tmp_path, {}, bitcoin_port=18999, stacks_port=20999, evm_port=8999,
                              did_ports=(8998, 8997), dwn_ports=(3998, 3997), bitcoin_block_interval=0)
    assert still.commands()["bitcoin-devnet"][-1] == "0"
