"""EvmHook against a real anvil: connection test, chain check, fees, classified errors, secrets."""

from __future__ import annotations

import json

import pytest

from tributary.core.errors import ErrorClass, PermanentError, TransientError, classify
from tributary.core.retry import RetryPolicy
from tributary.evm.errors import ChainMismatch, ContractReverted
from tributary.evm.hook import EvmHook

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]


def test_test_connection_reports_chain_id_block_and_sender(evm_env, anvil) -> None:
    ok, message = EvmHook("tributary_evm").test_connection()
    assert ok, message
    assert "chain id 31337 at block" in message and anvil.accounts[0].address in message
    assert anvil.accounts[0].private_key[2:] not in message


def test_a_node_on_another_chain_is_a_permanent_configuration_error(evm_env, anvil, monkeypatch) -> None:
    from tests.evm.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_WRONG", conn_json(anvil.url, None, chain_id=1))
    with pytest.raises(ChainMismatch, match="expects chain id 1, the node is on 31337"):
        EvmHook("tributary_evm_wrong").check_chain()
    ok, message = EvmHook("tributary_evm_wrong").test_connection()
    assert not ok and message.startswith("[permanent]")


def test_an_unreachable_node_is_retried_then_fails_as_transient(evm_env, monkeypatch) -> None:
    from devnets.evm.anvil import free_port
    from tests.evm.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_DOWN", conn_json(f"http://127.0.0.1:{free_port()}", None))
    hook = EvmHook("tributary_evm_down", retry_policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02))
    calls = []
    original = hook.rpc
    hook.rpc = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    with pytest.raises(Exception) as info:
        hook.block_number()
    assert len(calls) == 3
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


def test_eip1559_fees_come_from_the_base_fee_and_the_tip(evm_env) -> None:
    hook = EvmHook("tributary_evm")
    fees = hook.fees()
    assert fees.base_fee > 0
    assert fees.max_fee_per_gas == fees.base_fee * 2 + fees.max_priority_fee_per_gas


def test_a_fee_above_the_cap_is_transient(evm_env, anvil, monkeypatch) -> None:
    from tests.evm.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_CAP", conn_json(anvil.url, None, max_fee_cap_wei=1))
    with pytest.raises(TransientError, match="above the configured cap"):
        EvmHook("tributary_evm_cap").fees()


def test_a_revert_is_permanent_and_carries_the_reason(evm_env, registry) -> None:
    from tributary.evm.contracts import encode_call, load_artifact

    hook = EvmHook("tributary_evm")
    entry = load_artifact("Registry").function("record", ["0x" + "00" * 32, ""])
    data = encode_call(entry, ["0x" + "00" * 32, ""], "record")
    with pytest.raises(ContractReverted) as info:
        hook.estimate_gas({"from": hook.address, "to": registry, "data": data})
    assert info.value.revert_reason == "Registry: empty value"
    assert classify(info.value).error_class is ErrorClass.PERMANENT


def test_insufficient_funds_is_permanent_and_the_nonce_is_given_back(evm_env, anvil) -> None:
    import uuid

    from tests.evm.conftest import make_sender
    from tributary.evm.transactions import TxRequest

    sender = make_sender("tributary_evm_2")
    before = sender.hook.pending_nonce(sender.hook.address)
    request = TxRequest(idempotency_key=f"test:{uuid.uuid4().hex}", kind="transfer", data="0x",
                        to=anvil.accounts[3].address, value=10**30)
    with pytest.raises(PermanentError) as info:
        sender.submit(request, gas=21_000)
    assert info.value.reason == "evm:insufficient_funds"
    assert classify(info.value).error_class is ErrorClass.PERMANENT
    lease = sender.nonces.allocate(31337, sender.hook.address)
    assert (lease.nonce, lease.reused) == (before, True)
    lease.release()


def test_a_bad_private_key_never_appears_in_the_error(evm_env, anvil, monkeypatch) -> None:
    secret = "0x" + "zz" * 32
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_BADKEY", json.dumps(
        {"conn_type": "tributary_evm", "host": anvil.url, "password": secret}))
    with pytest.raises(PermanentError) as info:
        _ = EvmHook("tributary_evm_badkey").account
    assert secret not in str(info.value) and info.value.__cause__ is None


def test_the_operator_turns_an_unreachable_node_into_a_retryable_failure(evm_env, monkeypatch) -> None:
    from devnets.evm.anvil import free_port
    from tests.evm.conftest import conn_json
    from tributary.core.failfast import ClassifiedFailure
    from tributary.evm.operators import EvmContractOperator

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_DOWN", conn_json(f"http://127.0.0.1:{free_port()}", None))
    operator = EvmContractOperator(task_id="t", contract="Registry", function="count", args=[],
                                   address="0x5FbDB2315678afecb367f032d93F642f64180aa3", conn_id="tributary_evm_down")
    with pytest.raises(TransientError) as info:
        operator.execute({})
    assert not isinstance(info.value, ClassifiedFailure)
    assert classify(info.value).error_class is ErrorClass.TRANSIENT

    invalid = EvmContractOperator(task_id="u", contract="Registry", function="add", args=[1],
                                  conn_id="tributary_evm_down")
    with pytest.raises(ClassifiedFailure, match="takes 2 arguments"):
        invalid.execute({})
