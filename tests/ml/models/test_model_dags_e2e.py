"""The ml_* DAGs end to end with ``dag.test()``: real Airflow task execution, MLflow, PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[3]
# The DAGs default to the pipeline's table (tests/e2e covers that chain); these runs use sklearn's copy.
SKLEARN = {"kind": "sklearn", "dataset": "breast_cancer"}


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "ml" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def _task_states(run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}


def test_train_register_then_batch_score_run_end_to_end(lifecycle, project_dags, client, pg) -> None:
    from tributary.ml.models.registry import aliases, version_tags

    name = lifecycle.unique_name("e2e")
    run = _dag("ml_train_register").test(run_conf={"model_name": name, "source": SKLEARN, "grid": {"C": [0.5, 2.0]}})

    assert _task_states(run) == {("resolve_source", -1): "success", ("open_training_run", -1): "success",
                                 ("expand_grid", -1): "success", ("train", 0): "success", ("train", 1): "success",
                                 ("gate_and_register", -1): "success", ("announce_champion", -1): "success",
                                 ("announce_challenger", -1): "skipped"}
    assert run.state == "success"
    assert sorted(ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "train") == [
        'logistic_regression {"C": 0.5}', 'logistic_regression {"C": 2.0}']
    assert aliases(client, name) == {"champion": "1"}
    tags = version_tags(client, name, "1")
    assert tags["tributary.gate.decision"] == "champion"
    assert tags["tributary.dag_run_id"] == run.run_id
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["tributary.role"] for r in runs) == ["candidate", "candidate", "training"]
    with pg.cursor() as cur:
        cur.execute("SELECT task_id, count(*) FROM ml_metrics WHERE run_id = %s GROUP BY task_id ORDER BY task_id",
                    (run.run_id,))
        counts = dict(cur.fetchall())
    assert counts["gate_and_register"] >= 5
    assert counts["train"] == 2 * 9  # two grid points, cv mean/std + holdout for three metrics

    scored = _dag("ml_batch_score").test(run_conf={"model_name": name, "source": SKLEARN, "score_date": "2026-02-02"})
    assert scored.state == "success"
    with pg.cursor() as cur:
        cur.execute("SELECT count(*), min(model_version), max(run_id) FROM ml_predictions"
                    " WHERE model_name = %s AND score_date = '2026-02-02'", (name,))
        assert cur.fetchone() == (569, 1, scored.run_id)


def test_a_rejected_candidate_is_a_successful_run_that_records_the_decision(lifecycle, project_dags, client) -> None:
    from tributary.ml.models.registry import aliases

    name = lifecycle.unique_name("e2e_gate")
    dag = _dag("ml_train_register")
    dag.test(run_conf={"model_name": name, "source": SKLEARN, "grid": {"C": [1.0]}})
    run = dag.test(run_conf={"model_name": name, "source": SKLEARN, "grid": {"C": [1e-5]}, "thresholds": {}})

    assert run.state == "success"
    assert aliases(client, name) == {"champion": "1"}
    parent = [r for r in client.search_runs([client.get_experiment_by_name(name).experiment_id])
              if r.data.tags.get("tributary.dag_run_id") == run.run_id
              and r.data.tags.get("tributary.role") == "training"]
    assert parent[0].data.tags["tributary.gate.decision"] == "rejected"
    assert parent[0].data.metrics["gate_candidate_f1_macro"] < parent[0].data.metrics["gate_champion_f1_macro"]


def test_deploy_promotes_serves_smoke_tests_and_stops_the_endpoint(lifecycle, project_dags, client) -> None:
    import socket

    from tributary.ml.models import serving
    from tributary.ml.models.registry import aliases, version_tags

    name = lifecycle.unique_name("e2e_deploy")
    lifecycle.train_and_gate(name, "weak", lifecycle.crippled_grid)
    lifecycle.train_and_gate(name, "strong", lifecycle.good_grid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    run = _dag("ml_deploy").test(run_conf={"model_name": name, "port": port, "keep_running": False,
                                           "latency_budget_ms": 5000.0})

    assert _task_states(run) == {("promote", -1): "success", ("serve", -1): "success",
                                 ("smoke_test", -1): "success", ("announce_champion", -1): "success",
                                 ("stop_endpoint", -1): "success"}
    assert aliases(client, name) == {"champion": "2", "previous-champion": "1"}
    assert version_tags(client, name, "2")["tributary.smoke.status"] == "passed"
    assert serving.current(name) is None  # keep_running false: the teardown stopped it
