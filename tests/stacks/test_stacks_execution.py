"""The execution steps behind the DAG: validation, reads, and exactly-once submission after a crash."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tributary.core.errors import PermanentError
from tributary.stacks import execution, ledger
from tributary.stacks.hook import StacksHook, StacksRejection

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]


def _request(conn_id: str, **params: Any) -> execution.ExecutionRequest:
    return execution.ExecutionRequest.from_params({"conn_id": conn_id, "poll_interval": 0.1, "wait_timeout": 10,
                                                   **params})


def _deploy_counter(conn_id: str, conn: Any) -> None:
    hook = StacksHook(conn_id)
    request = _request(conn_id, action="deploy", contract="counter")
    record = execution.submit(execution.validate(request, hook), request, hook, conn,
                              request_id=f"deploy-{uuid.uuid4().hex[:8]}")
    assert execution.await_outcome(record, request, hook, conn)["status"] == "confirmed"


def test_read_returns_typed_plain_and_repr_values(stacks_conn: dict[str, str], stacks_ledger: Any) -> None:
    conn_id, address = stacks_conn["conn_id"], stacks_conn["address"]
    _deploy_counter(conn_id, stacks_ledger)
    hook = StacksHook(conn_id)
    request = _request(conn_id, action="read", contract="counter", function="get-increments",
                       args=[{"type": "principal", "value": address}])
    result = execution.read(execution.validate(request, hook), hook)
    assert result == {"action": "read", "contract_id": f"{address}.counter", "function": "get-increments",
                      "result": {"type": "uint", "value": "0"}, "value": 0, "result_repr": "u0"}


@pytest.mark.parametrize(("params", "message"), [
    ({"action": "call", "function": "get-count"}, "is read_only"),
    ({"action": "read", "function": "increment", "args": [{"type": "uint", "value": "1"}]}, "is public"),
    ({"action": "call", "function": "increment", "args": []}, "takes 1 argument"),
    ({"action": "call", "function": "increment", "args": [{"type": "uint", "value": "x"}]}, "not a decimal integer"),
    ({"action": "call", "function": "increment", "contract": "missing"}, "no contract"),
    ({"action": "deploy", "contract": "nosuchsource"}, "no contract source"),
    ({"action": "deploy", "contract": "counter", "source_file": "../secret.clar"}, "source_file must be"),
    ({"action": "call"}, "needs a function"),
    ({"action": "transfer"}, "action must be"),
])
def test_invalid_requests_fail_permanently(stacks_conn: dict[str, str], stacks_ledger: Any, params: dict[str, Any],
                                           message: str) -> None:
    conn_id = stacks_conn["conn_id"]
    if params.get("action") != "deploy":
        _deploy_counter(conn_id, stacks_ledger)
    with pytest.raises(PermanentError, match=message):
        execution.validate(_request(conn_id, **{"contract": "counter", **params}), StacksHook(conn_id))


def test_a_retry_after_a_crash_between_signing_and_broadcast_sends_the_same_transaction(
        stacks_conn: dict[str, str], stacks_ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = stacks_conn["conn_id"]
    _deploy_counter(conn_id, stacks_ledger)
    hook = StacksHook(conn_id)
    request = _request(conn_id, action="call", contract="counter", function="increment",
                       args=[{"type": "uint", "value": "2"}])
    plan = execution.validate(request, hook)
    request_id = f"crash-{uuid.uuid4().hex[:8]}"

    def crash(raw: bytes) -> str:
        raise ConnectionError("worker died")

    monkeypatch.setattr(hook, "broadcast", crash)
    with pytest.raises(ConnectionError):
        execution.submit(plan, request, hook, stacks_ledger, request_id=request_id)
    signed = ledger.get(stacks_ledger, request_id)
    assert signed["status"] == "signed" and signed["nonce"] == 1

    retry_hook = StacksHook(conn_id)
    record = execution.submit(plan, request, retry_hook, stacks_ledger, request_id=request_id)
    assert record["txid"] == signed["txid"] and record["status"] == "broadcast" and "raw_tx" not in record
    final = execution.await_outcome(record, request, retry_hook, stacks_ledger)
    assert final["status"] == "confirmed" and final["result_repr"] == "(ok u2)"
    assert retry_hook.get_nonce() == 2

    # a third attempt finds the final state and sends nothing
    assert execution.submit(plan, request, retry_hook, stacks_ledger, request_id=request_id)["status"] == "confirmed"
    assert retry_hook.get_nonce() == 2

    other = _request(conn_id, action="call", contract="counter", function="reset")
    with pytest.raises(PermanentError, match="already used"):
        execution.submit(execution.validate(other, retry_hook), other, retry_hook, stacks_ledger,
                         request_id=request_id)


def test_a_rejected_broadcast_is_recorded(stacks_conn: dict[str, str], stacks_ledger: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = stacks_conn["conn_id"]
    hook = StacksHook(conn_id)
    monkeypatch.setattr(hook, "get_nonce", lambda principal=None: 9)  # a stale or wrong nonce source
    request = _request(conn_id, action="deploy", contract="counter")
    request_id = f"nonce-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StacksRejection, match="BadNonce"):
        execution.submit(execution.validate(request, hook), request, hook, stacks_ledger, request_id=request_id)
    row = ledger.get(stacks_ledger, request_id)
    assert row["status"] == "rejected" and "BadNonce" in row["error"]
    with pytest.raises(PermanentError, match="rejected by the node"):
        execution.await_outcome(row, request, hook, stacks_ledger)


def test_the_trigger_yields_confirmed_or_timeout_and_serializes_its_arguments(stacks_conn: dict[str, str],
                                                                          stacks_ledger: Any) -> None:
    import asyncio

    from tributary.stacks.triggers import StacksTransactionTrigger

    conn_id = stacks_conn["conn_id"]
    hook = StacksHook(conn_id)
    txid = hook.broadcast(hook.build_contract_deploy("counter", "(define-read-only (one) u1)", nonce=0))

    async def first_event(trigger: StacksTransactionTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    confirmed = asyncio.run(first_event(StacksTransactionTrigger(conn_id, txid, poll_interval=0.1, timeout=5)))
    assert confirmed["status"] == "confirmed" and confirmed["outcome"]["tx_status"] == "success"
    assert confirmed["outcome"]["result"] == {"type": "bool", "value": True}
    waiting = StacksTransactionTrigger(conn_id, "ab" * 32, poll_interval=0.1, timeout=0.3)
    assert asyncio.run(first_event(waiting)) == {"status": "timeout", "txid": "ab" * 32}
    classpath, kwargs = waiting.serialize()
    assert classpath == "tributary.stacks.triggers.StacksTransactionTrigger"
    assert StacksTransactionTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_the_operator_defers_while_the_transaction_is_not_in_a_block(stacks_conn: dict[str, str],
                                                                     stacks_ledger: Any) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from tributary.core.errors import TransientError
    from tributary.core.failfast import ClassifiedFailure
    from tributary.stacks.operators import AwaitStacksTransactionOperator

    conn_id = stacks_conn["conn_id"]
    hook = StacksHook(conn_id)
    request = _request(conn_id, action="deploy", contract="counter")
    unsent = hook.build_contract_deploy("counter", "(define-read-only (one) u1)", nonce=0)
    request_id = f"defer-{uuid.uuid4().hex[:8]}"
    row = ledger.insert_signed(stacks_ledger, {
        "request_id": request_id, "action": "deploy", "network": "testnet", "sender": stacks_conn["address"],
        "contract_id": f"{stacks_conn['address']}.counter", "function_name": None, "args": [], "nonce": 0,
        "fee": unsent.unsigned.fee, "txid": unsent.txid, "raw_tx": unsent.raw})
    params = {"conn_id": conn_id, "wait": True, "wait_timeout": 7, "action": "deploy", "contract": "counter"}
    op = AwaitStacksTransactionOperator(task_id="await_confirmation", outcome=ledger.summary(row))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"params": params})
    assert deferred.value.trigger.serialize()[1]["txid"] == unsent.txid
    assert deferred.value.trigger.deadline == pytest.approx(time.time() + 7, abs=5)  # wait_timeout from now

    with pytest.raises(TransientError, match="not in a block"):
        op.execute_complete({"params": params}, {"status": "timeout", "txid": unsent.txid})
    with pytest.raises(ClassifiedFailure, match="HTTP 401"):
        op.execute_complete({"params": params}, {"status": "error", "txid": unsent.txid, "message": "HTTP 401",
                                                 "reason": "http:401:credentials"})
    hook.broadcast(unsent.raw)
    final = op.execute_complete({"params": params}, {"status": "confirmed", "txid": unsent.txid})
    assert final["status"] == "confirmed" and final["result_repr"] == "true"
    assert request.wait  # the request the params describe waits
