"""stacks_contract_execution end to end with ``dag.test()``: devnet, warehouse ledger, real task execution."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tributary.stacks import ledger
from tributary.stacks.clarity import CV
from tributary.stacks.hook import StacksHook

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

ROOT = Path(__file__).resolve().parents[2]


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "stacks" / "stacks_contract_execution.py"))
    assert bag.import_errors == {}
    return bag.get_dag("stacks_contract_execution")


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_deploy_call_and_read_through_the_dag_once_per_request_id(stacks_conn: dict[str, str], project_dags: Path,
                                                                   stacks_ledger: Any) -> None:
    conn_id, address = stacks_conn["conn_id"], stacks_conn["address"]
    hook = StacksHook(conn_id)
    dag = _dag()

    deploy_id = f"deploy-{uuid.uuid4().hex[:8]}"
    run = dag.test(run_conf={"action": "deploy", "contract": "counter", "conn_id": conn_id, "request_id": deploy_id})
    assert run.state == "success", _states(run)
    row = ledger.get(stacks_ledger, deploy_id)
    assert row["status"] == "confirmed" and row["action"] == "deploy" and row["nonce"] == 0
    assert row["contract_id"] == f"{address}.counter" and row["tx_status"] == "success"
    assert hook.get_contract_interface(address, "counter") is not None

    call_id = f"call-{uuid.uuid4().hex[:8]}"
    conf = {"action": "call", "contract": "counter", "function": "increment",
            "args": [{"type": "uint", "value": "5"}], "conn_id": conn_id, "request_id": call_id}
    run = dag.test(run_conf=conf)
    assert run.state == "success", _states(run)
    row = ledger.get(stacks_ledger, call_id)
    assert row["status"] == "confirmed" and row["nonce"] == 1
    assert row["result"] == {"type": "ok", "value": {"type": "uint", "value": "5"}} and row["result_repr"] == "(ok u5)"
    assert row["args"] == [{"type": "uint", "value": "5"}]

    # The same request id again: no second transaction, the recorded outcome is returned.
    run = dag.test(run_conf=conf)
    assert run.state == "success", _states(run)
    assert ledger.get(stacks_ledger, call_id)["txid"] == row["txid"]
    assert hook.get_nonce() == 2
    assert hook.call_read(address, "counter", "get-count") == CV.uint(5)

    run = dag.test(run_conf={"action": "read", "contract": f"{address}.counter", "function": "get-increments",
                             "args": [{"type": "principal", "value": address}], "conn_id": conn_id})
    assert run.state == "success", _states(run)
    assert _states(run) == {"validate_request": "success", "execute": "success", "await_confirmation": "success"}


def test_invalid_arguments_fail_before_anything_is_signed(stacks_conn: dict[str, str], project_dags: Path,
                                                          stacks_ledger: Any) -> None:
    conn_id = stacks_conn["conn_id"]
    dag = _dag()
    assert dag.test(run_conf={"action": "deploy", "contract": "counter", "conn_id": conn_id}).state == "success"
    request_id = f"bad-{uuid.uuid4().hex[:8]}"
    run = dag.test(run_conf={"action": "call", "contract": "counter", "function": "increment",
                             "args": [{"type": "int", "value": "5"}], "conn_id": conn_id, "request_id": request_id})
    assert run.state == "failed"
    assert _states(run)["validate_request"] == "failed"
    assert ledger.get(stacks_ledger, request_id) is None
    assert StacksHook(conn_id).get_nonce() == 1


def test_an_aborted_call_is_recorded_and_fails_the_run(stacks_conn: dict[str, str], project_dags: Path,
                                                       stacks_ledger: Any) -> None:
    conn_id = stacks_conn["conn_id"]
    dag = _dag()
    assert dag.test(run_conf={"action": "deploy", "contract": "counter", "conn_id": conn_id}).state == "success"
    request_id = f"zero-{uuid.uuid4().hex[:8]}"
    run = dag.test(run_conf={"action": "call", "contract": "counter", "function": "increment",
                             "args": [{"type": "uint", "value": "0"}], "conn_id": conn_id, "request_id": request_id})
    assert run.state == "failed"
    assert _states(run) == {"validate_request": "success", "execute": "success", "await_confirmation": "failed"}
    row = ledger.get(stacks_ledger, request_id)
    assert row["status"] == "failed" and row["tx_status"] == "abort_by_response" and row["result_repr"] == "(err u100)"
