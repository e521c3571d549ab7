"""dwn_data_replication end to end with ``dag.test()``: two real DWN servers, the warehouse checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tributary.dwn import messages as m
from tributary.dwn.hook import DwnHook
from tributary.dwn.replication import StateKey, load_state, snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "https://tributary.example/protocols/dag-notes"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "web5" / "dwn_data_replication.py"))
    assert bag.import_errors == {}
    return bag.get_dag("dwn_data_replication")


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_dag_replicates_in_limited_runs_then_converges(tenant, project_dags: Path, pg: Any) -> None:
    source, target = DwnHook(tenant.source_conn), DwnHook(tenant.target_conn)
    source.configure_protocol(m.flat_protocol(PROTOCOL))
    notes = [source.write_record(f'{{"n": {i}}}'.encode(), protocol=PROTOCOL, protocol_path="record")
             for i in range(25)]
    source.delete_record(notes[3]["recordId"])
    conf = {"source_conn_id": tenant.source_conn, "target_conn_id": tenant.target_conn, "tenant": tenant.did,
            "protocol": PROTOCOL, "batch_size": 10}
    dag = _dag()

    first = dag.test(run_conf={**conf, "max_batches": 1})  # stops after one batch: a checkpoint mid-log
    assert first.state == "success", _states(first)
    state = load_state(pg, StateKey(tenant.did, PROTOCOL, source.base_url, target.base_url))
    assert state["resume_after"] is not None

    # dag.test() keeps the previous run's conf in dag.params: pass every param that differs
    second = _dag().test(run_conf={**conf, "max_batches": None})
    assert second.state == "success", _states(second)
    assert snapshot(target, PROTOCOL) == snapshot(source, PROTOCOL)
    assert len(snapshot(target, PROTOCOL)) == 24

    stranger = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
    wrong = _dag().test(run_conf={**conf, "max_batches": None, "tenant": stranger})
    assert wrong.state == "failed" and _states(wrong)["check_peers"] == "failed"
