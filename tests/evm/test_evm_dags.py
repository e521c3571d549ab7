"""The EVM DAGs end to end with ``dag.test(run_conf=...)`` on anvil: deploy (twice: a no-op), view
call, transaction awaited by the deferrable trigger (also across a reorg), ABI-invalid args failing
before signing, and event indexing emitting its Asset."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = [ROOT / "dags/evm/evm_contract_execution.py", ROOT / "dags/evm/evm_event_indexing.py"]


@pytest.fixture(scope="module")
def dag_folder(evm_env: Any, private_dag_bundle: Any) -> Path:
    return private_dag_bundle(*DAG_FILES)


def _dag(folder: Path, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def _result(run: Any, dag_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:  # what GET .../taskInstances/<task>/xcomEntries/return_value serves
        row = session.scalars(XComModel.get_many(run_id=run.run_id, key="return_value", task_ids=task_id,
                                                 dag_ids=dag_id)).first()
        return XComModel.deserialize_value(row) if row is not None else None


def _execute(folder: Path, **conf: Any) -> tuple[str, Any]:
    dag = _dag(folder, "evm_contract_execution")
    run = dag.test(run_conf=conf)
    return str(run.state), _result(run, "evm_contract_execution", "execute")


def test_deploy_call_and_transact_through_the_dag(dag_folder, anvil) -> None:
    state, deployed = _execute(dag_folder, contract="TributaryToken", action="deploy",
                               args=["Tributary", "TRIB", "1000000000000000000000000"], conn_id="tributary_evm")
    assert state == "success" and deployed["already_deployed"] is False, deployed
    address = deployed["address"]
    assert len(_code(anvil, address)) > 2

    state, again = _execute(dag_folder, contract="TributaryToken", action="deploy",
                            args=["Tributary", "TRIB", "1000000000000000000000000"])
    assert state == "success" and again["already_deployed"] is True and again["address"] == address

    state, supply = _execute(dag_folder, contract="TributaryToken", function="totalSupply", args=[])
    assert state == "success" and supply["result"] == "1000000000000000000000000" and supply["read_only"]

    recipient = anvil.accounts[3].address
    state, sent = _execute(dag_folder, contract="TributaryToken", function="transfer",
                           args=[recipient, "2500"], idempotency_key=f"t-{uuid.uuid4().hex}", confirmations=1)
    assert state == "success", sent
    assert sent["status"] == "confirmed" and sent["block_number"] and "private" not in json.dumps(sent).lower()
    assert sent["events"] == [{"event": "Transfer", "log_index": 0,
                               "args": {"from": anvil.accounts[0].address, "to": recipient, "value": 2500}}]
    state, balance = _execute(dag_folder, contract="TributaryToken", function="balanceOf", args=[recipient])
    assert balance["result"] == 2500

    # The same idempotency key again: the ledger answers, nothing is signed.
    nonce = int(anvil.rpc("eth_getTransactionCount", [anvil.accounts[0].address, "pending"]), 16)
    state, repeat = _execute(dag_folder, contract="TributaryToken", function="transfer", args=[recipient, "2500"],
                             idempotency_key=sent["idempotency_key"])
    assert state == "success" and repeat["tx_hash"] == sent["tx_hash"]
    assert int(anvil.rpc("eth_getTransactionCount", [anvil.accounts[0].address, "pending"]), 16) == nonce


def _code(anvil: Any, address: str) -> str:
    return anvil.rpc("eth_getCode", [address, "latest"])


def test_payable_call_with_value(dag_folder, anvil) -> None:
    state, _ = _execute(dag_folder, contract="Registry", action="deploy", args=[])
    assert state == "success"
    state, paid = _execute(dag_folder, contract="Registry", function="pay", args=["tip"], value_wei="12345")
    assert state == "success" and paid["events"][0]["args"] == {"from": anvil.accounts[0].address,
                                                                "amount": 12345, "memo": "tip"}
    state, balance = _execute(dag_folder, contract="Registry", function="balance", args=[])
    assert balance["result"] >= 12345


def test_abi_invalid_args_fail_before_anything_is_signed(dag_folder, anvil) -> None:
    nonce = int(anvil.rpc("eth_getTransactionCount", [anvil.accounts[0].address, "pending"]), 16)
    dag = _dag(dag_folder, "evm_contract_execution")
    run = dag.test(run_conf={"contract": "TributaryToken", "function": "transfer", "args": ["0xnope", "1"]})
    assert str(run.state) == "failed"
    ti = run.get_task_instance("execute")
    assert str(ti.state) == "failed" and ti.try_number == 1  # permanent: not retried
    assert int(anvil.rpc("eth_getTransactionCount", [anvil.accounts[0].address, "pending"]), 16) == nonce


def test_a_receipt_lost_in_a_reorg_is_confirmed_again_with_the_same_signed_bytes(dag_folder, anvil, db) -> None:
    _execute(dag_folder, contract="Registry", action="deploy", args=[])
    start = int(anvil.rpc("eth_blockNumber"), 16)
    stop = threading.Event()

    def chain_activity() -> None:
        # Wait for the transaction's block, let the trigger see the receipt, then orphan that block
        # and keep producing blocks so the re-broadcast transaction gathers its confirmations.
        while int(anvil.rpc("eth_blockNumber"), 16) == start and not stop.is_set():
            time.sleep(0.02)
        time.sleep(0.5)
        anvil.rpc("anvil_reorg", [1, []])
        while not stop.is_set():
            time.sleep(0.3)
            anvil.rpc("evm_mine")

    worker = threading.Thread(target=chain_activity, daemon=True)
    worker.start()
    try:
        key = f"reorg-{uuid.uuid4().hex}"
        state, result = _execute(dag_folder, contract="Registry", function="increment", args=[],
                                 idempotency_key=key, confirmations=2)
    finally:
        stop.set()
        worker.join(10)
    assert state == "success", result
    assert result["reorgs"] >= 1 and result["broadcasts"] == 2 and result["confirmations"] >= 2
    receipt = anvil.rpc("eth_getTransactionReceipt", [result["tx_hash"]])
    assert receipt["blockHash"] == result["block_hash"] and receipt["status"] == "0x1"


def test_event_indexing_dag_stores_logs_and_emits_its_asset(dag_folder, anvil, db) -> None:
    _execute(dag_folder, contract="Registry", action="deploy", args=[])
    _execute(dag_folder, contract="Registry", function="record", args=["0x" + "cd" * 32, "from-dag"])
    indexer = f"dag-{uuid.uuid4().hex[:6]}"
    dag = _dag(dag_folder, "evm_event_indexing")
    run = dag.test(run_conf={"indexer": indexer, "chunk_size": 50})
    assert str(run.state) == "success"
    published = _result(run, "evm_event_indexing", "publish")
    assert published["logs"] > 0 and published["indexer"] == indexer
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM evm_event_logs WHERE indexer = %s AND event_name = 'Recorded'"
                    " AND args->>'value' = 'from-dag'", (indexer,))
        assert cur.fetchone()[0] == 1
    db.commit()
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if (e.extra or {}).get("indexer") == indexer]
    assert len(events) == 1 and events[0].extra["logs"] == published["logs"]
    idle = dag.test(run_conf={"indexer": indexer})
    assert str(idle.get_task_instance("publish").state) == "skipped"
