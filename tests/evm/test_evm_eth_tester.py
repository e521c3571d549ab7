"""Fast, in-process checks of the ABI layer on eth-tester (py-evm): no anvil, no network.

The committed artifact is deployed into an in-memory chain; calldata comes from
``contracts.encode_call`` and results and logs are decoded with ``decode_output`` / ``decode_log``,
so the encoding the DAGs sign is checked against a real EVM executing it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tributary.evm.contracts import decode_log, decode_output, encode_call, load_artifact

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def chain() -> Any:
    from web3 import EthereumTesterProvider, Web3

    return Web3(EthereumTesterProvider())


def _send(w3: Any, sender: str, to: str | None, data: str) -> Any:
    tx = {"from": sender, "data": data, "gas": 3_000_000}
    if to:
        tx["to"] = to
    return w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))


def test_token_calls_encode_execute_and_decode_on_a_real_evm(chain: Any) -> None:
    token = load_artifact("TributaryToken")
    owner, alice = chain.eth.accounts[:2]
    constructor = encode_call(token.constructor(), ["Tributary", "TRB", 1_000], "constructor")
    receipt = _send(chain, owner, None, token.bytecode + constructor[2:])
    assert receipt.status == 1
    address = receipt.contractAddress

    transfer = token.function("transfer", [alice, 250])
    receipt = _send(chain, owner, address, encode_call(transfer, [alice, 250], "transfer"))
    assert receipt.status == 1
    [log] = receipt.logs
    event = token.events()["0x" + log.topics[0].hex().removeprefix("0x")]
    decoded = decode_log(event, ["0x" + t.hex().removeprefix("0x") for t in log.topics], "0x" + log.data.hex())
    assert event["name"] == "Transfer"
    assert decoded == {"from": owner, "to": alice, "value": 250}

    balance_of = token.function("balanceOf", [alice])
    raw = chain.eth.call({"to": address, "data": encode_call(balance_of, [alice], "balanceOf")})
    assert decode_output(balance_of, "0x" + raw.hex()) == 250


def test_a_transfer_beyond_the_balance_reverts_on_the_evm(chain: Any) -> None:
    token = load_artifact("TributaryToken")
    owner, alice, bob = chain.eth.accounts[:3]
    receipt = _send(chain, owner, None,
                    token.bytecode + encode_call(token.constructor(), ["T", "T", 10], "constructor")[2:])
    transfer = token.function("transfer", [bob, 1])
    with pytest.raises(Exception, match="TributaryToken: insufficient balance"):  # the contract's revert reason
        chain.eth.call({"from": alice, "to": receipt.contractAddress,
                        "data": encode_call(transfer, [bob, 1], "transfer")})
