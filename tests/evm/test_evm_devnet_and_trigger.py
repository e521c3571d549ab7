"""The anvil helper (deterministic accounts, ready detection, stop) and the receipt trigger."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from devnets.evm.anvil import ANVIL_ACCOUNTS, MNEMONIC, start_anvil
from tests.evm.conftest import make_sender
from tributary.evm.triggers import EvmReceiptTrigger


@pytest.mark.unit
def test_the_listed_dev_accounts_are_the_ones_the_mnemonic_derives() -> None:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    for i, account in enumerate(ANVIL_ACCOUNTS):
        derived = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert (derived.address, "0x" + derived.key.hex().removeprefix("0x")) == (account.address, account.private_key)


@pytest.mark.devnet
def test_anvil_starts_on_a_free_port_with_chain_31337_and_stops(anvil) -> None:
    node = start_anvil()
    try:
        assert node.port != anvil.port
        assert int(node.rpc("eth_chainId"), 16) == 31337
        assert int(node.rpc("eth_getBalance", [ANVIL_ACCOUNTS[0].address, "latest"]), 16) == 10_000 * 10**18
    finally:
        node.stop()
    assert not node.alive()


@pytest.mark.unit
def test_trigger_serializes_to_its_own_arguments() -> None:
    trigger = EvmReceiptTrigger("c", "0xabc", confirmations=3, poll_interval=0.5, timeout=10, reorgs=1)
    path, kwargs = trigger.serialize()
    assert path == "tributary.evm.triggers.EvmReceiptTrigger"
    assert EvmReceiptTrigger(**kwargs).serialize() == (path, kwargs)


def _first_event(trigger: EvmReceiptTrigger) -> dict:
    async def run() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(run())


@pytest.mark.postgres
@pytest.mark.devnet
def test_trigger_waits_for_the_confirmation_depth(evm_env, registry, anvil) -> None:
    from tests.evm.test_evm_transactions import _increment

    row = make_sender().submit(_increment(registry, f"trig:{uuid.uuid4().hex}"))
    anvil.rpc("anvil_mine", ["0x2"])
    event = _first_event(EvmReceiptTrigger("tributary_evm", row["tx_hash"], confirmations=3, poll_interval=0.05))
    assert event["status"] == "confirmed" and event["confirmations"] >= 3
    assert event["receipt"]["transactionHash"] == row["tx_hash"]


@pytest.mark.postgres
@pytest.mark.devnet
def test_trigger_reports_an_unknown_transaction_as_dropped(evm_env) -> None:
    event = _first_event(EvmReceiptTrigger("tributary_evm", "0x" + "12" * 32, poll_interval=0.05, dropped_after=0.2))
    assert event["status"] == "dropped"


@pytest.mark.postgres
@pytest.mark.devnet
def test_trigger_times_out_without_side_effects(evm_env, registry) -> None:
    from tests.evm.test_evm_transactions import _increment

    row = make_sender().submit(_increment(registry, f"trig:{uuid.uuid4().hex}"))
    event = _first_event(EvmReceiptTrigger("tributary_evm", row["tx_hash"], confirmations=50, poll_interval=0.05,
                                           timeout=0.3))
    assert event["status"] == "timeout"


def _conn_env(monkeypatch, conn_id: str, host: str) -> None:
    import json

    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       json.dumps({"conn_type": "tributary_evm", "host": host, "extra": {"timeout": 1}}))


@pytest.mark.unit
@pytest.mark.unit
def test_trigger_keeps_polling_through_transient_errors_until_the_deadline(monkeypatch) -> None:
    _conn_env(monkeypatch, "tributary_evm_down", "http://127.0.0.1:1")  # nothing listens: node down
    event = _first_event(EvmReceiptTrigger("tributary_evm_down", "0x" + "34" * 32, poll_interval=0.05, timeout=0.5))
    assert event == {"status": "timeout", "txid": "0x" + "34" * 32, "reorgs": 0}


@pytest.mark.unit
@pytest.mark.unit
def test_trigger_ends_with_a_classified_error_event_the_operator_raises(monkeypatch) -> None:
    from tributary.core.failfast import ClassifiedFailure
    from tributary.evm.operators import EvmContractOperator

    _conn_env(monkeypatch, "tributary_evm_nohost", "")  # a permanent configuration error
    event = _first_event(EvmReceiptTrigger("tributary_evm_nohost", "0x" + "56" * 32, poll_interval=0.05, timeout=30))
    assert event["status"] == "error" and event["error_class"] == "permanent" and event["reason"] == "config:host"
    assert event["txid"] == "0x" + "56" * 32
    operator = EvmContractOperator(task_id="t", contract="Registry", function="increment",
                                   conn_id="tributary_evm_nohost")
    with pytest.raises(ClassifiedFailure, match="no host"):
        operator.execute_complete({}, event)
