"""REST callers pick only the Connections a DAG may use (issue 11 §6): the policy, its wiring into every
task of every DAG, and a real run that is refused in its first task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tributary.core.conn_policy import ALLOWED_CONNECTIONS_VARIABLE, check_params, check_run_connections
from tributary.core.errors import SecurityError
from tributary.core.failfast import ClassifiedFailure

ROOT = Path(__file__).resolve().parents[2]
VAR_ENV = "AIRFLOW_VAR_" + ALLOWED_CONNECTIONS_VARIABLE.upper()


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _selectors(dag) -> list[str]:
    from tributary.core.conn_policy import connection_selectors

    return [".".join(path) for name in dag.params
            for path, _ in connection_selectors(dag.params.get_param(name).schema,
                                                dag.params.get_param(name).value, (name,))]


@pytest.mark.unit
def test_every_connection_choosing_param_is_checked_before_every_task(dagbag) -> None:
    """Every param named like a Connection is marked for the policy, and every task runs the check first."""
    guarded = {}
    for dag_id, dag in dagbag.dags.items():
        selectors = _selectors(dag)
        for name in dag.params:
            # integration_health's ``connections`` only narrows which discovered Connections are pinged
            if "conn" in name and dag_id != "integration_health":
                assert name in selectors, f"{dag_id}: param {name} chooses a Connection but is not conn_id_param"
        if selectors:
            guarded[dag_id] = selectors
            for task in dag.tasks:
                hook = (task.partial_kwargs.get("pre_execute") if hasattr(task, "partial_kwargs")
                        else task._pre_execute_hook)  # a mapped task gets it when it is expanded
                assert hook is check_run_connections, f"{dag_id}.{task.task_id}"
    # the signing keys and the ML source's nested conn_id are all covered
    for dag_id in ("evm_contract_execution", "stacks_contract_execution", "did_issuance", "dwn_data_replication",
                   "identity_verification", "ml_train_register", "ml_batch_score"):
        assert dag_id in guarded, dag_id
    assert "source.conn_id" in guarded["ml_batch_score"]
    assert set(guarded["did_issuance"]) == {"did_conn_id", "dwn_conn_id"}


@pytest.mark.unit
def test_only_the_default_connection_unless_allowed(dagbag, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR_ENV, raising=False)
    dag = dagbag.dags["evm_contract_execution"]
    check_params(dag.dag_id, dag.params, {"conn_id": "tributary_evm"})  # the default: always
    with pytest.raises(SecurityError, match="may not use Connection 'team_b_signer'"):
        check_params(dag.dag_id, dag.params, {"conn_id": "team_b_signer"})

    # the documented Variable allows it for this DAG only
    monkeypatch.setenv(VAR_ENV, json.dumps({"evm_contract_execution": ["team_b_signer"]}))
    check_params(dag.dag_id, dag.params, {"conn_id": "team_b_signer"})
    other = dagbag.dags["evm_event_indexing"]
    with pytest.raises(SecurityError):
        check_params(other.dag_id, other.params, {"conn_id": "team_b_signer"})

    # or the Connection's own extra
    monkeypatch.delenv(VAR_ENV)
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_B_SIGNER", json.dumps(
        {"conn_type": "tributary_evm", "host": "127.0.0.1", "extra": {"allowed_dags": ["evm_event_indexing"]}}))
    check_params(other.dag_id, other.params, {"conn_id": "team_b_signer"})
    with pytest.raises(SecurityError):
        check_params(dag.dag_id, dag.params, {"conn_id": "team_b_signer"})

    # a malformed Variable allows nothing beyond the defaults
    monkeypatch.setenv(VAR_ENV, json.dumps(["team_b_signer"]))
    with pytest.raises(SecurityError, match="must be"):
        check_params(dag.dag_id, dag.params, {"conn_id": "other"})


@pytest.mark.unit
def test_nested_and_secondary_connections(dagbag, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR_ENV, raising=False)
    score = dagbag.dags["ml_batch_score"]
    check_params(score.dag_id, score.params, {"source": {"kind": "postgres", "table": "t"}})
    check_params(score.dag_id, score.params, {"source": {"kind": "postgres", "table": "t",
                                                          "conn_id": "tributary_warehouse"}})
    with pytest.raises(SecurityError, match="'billing_db'"):
        check_params(score.dag_id, score.params, {"source": {"kind": "postgres", "table": "t",
                                                              "conn_id": "billing_db"}})
    issuance = dagbag.dags["did_issuance"]
    with pytest.raises(SecurityError, match="'other_dwn'"):
        check_params(issuance.dag_id, issuance.params,
                     {"did_conn_id": "tributary_did", "dwn_conn_id": "other_dwn"})


@pytest.mark.unit
def test_pre_execute_fails_without_retry(dagbag, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR_ENV, raising=False)
    dag = dagbag.dags["stacks_contract_execution"]
    with pytest.raises(ClassifiedFailure, match=r"\[security\]"):
        check_run_connections({"dag": dag, "params": {"conn_id": "team_b_stacks_key"}})


@pytest.mark.unit
def test_a_run_pointed_at_a_foreign_connection_fails_in_its_first_task(project_dags, monkeypatch) -> None:
    """Through Airflow's task runner: the first task fails on its first try, nothing reaches the node."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv(VAR_ENV, raising=False)
    # The foreign Connection exists (another team's node): the refusal is the policy, not a lookup failure.
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_B_EVM", json.dumps({"conn_type": "tributary_evm", "host": "192.0.2.1"}))
    dag = DagBag(dag_folder=str(project_dags / "evm" / "evm_event_indexing.py"),
                 ).dags["evm_event_indexing"]
    run = dag.test(run_conf={"conn_id": "team_b_evm"})
    assert run.state == "failed"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    first = tis["index_logs"]
    assert first.state == "failed" and first.try_number == 1
