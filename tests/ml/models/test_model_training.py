"""ml_train_register's operators against a real MLflow store: grid training, the gate, registration."""

from __future__ import annotations

import json

import pytest

from tributary.ml.models import ALIAS_CHALLENGER, ALIAS_CHAMPION

pytestmark = pytest.mark.postgres


def _ml_metrics(pg, run_id: str, task_id: str) -> dict[str, float]:
    with pg.cursor() as cur:
        cur.execute("SELECT metric, value FROM ml_metrics WHERE run_id = %s AND task_id = %s", (run_id, task_id))
        return dict(cur.fetchall())


def test_first_model_from_the_grid_becomes_champion_with_signature_and_input_example(lifecycle, client, pg) -> None:
    import mlflow

    from tributary.ml.models.registry import aliases, version_tags

    name = lifecycle.unique_name()
    trained = lifecycle.train_and_gate(name, "train-1", lifecycle.good_grid,
                                       thresholds={"accuracy": 0.9, "f1_macro": 0.9})
    result = trained.result

    assert result["decision"]["outcome"] == "champion"
    assert result["version"] == "1"
    assert aliases(client, name) == {ALIAS_CHAMPION: "1"}
    info = mlflow.models.get_model_info(f"models:/{name}@{ALIAS_CHAMPION}")
    assert info.signature is not None
    assert "mean radius" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None
    # the registered version is the grid point with the best cross-validation score
    runs = [client.get_run(c["run_id"]) for c in trained.candidates]
    assert len(runs) == len(lifecycle.good_grid)
    best = max(runs, key=lambda r: r.data.metrics["cv_f1_macro_mean"])
    assert result["candidate_run_id"] == best.info.run_id
    assert best.data.params["model.C"] in {str(p["C"]) for p in lifecycle.good_grid}
    assert {"holdout_accuracy", "holdout_f1_macro", "cv_accuracy_mean"} <= set(best.data.metrics)
    assert best.data.tags["mlflow.parentRunId"]
    artifacts = {a.path for a in client.list_artifacts(best.info.run_id)}
    assert {"metrics.json", "confusion_matrix.png"} <= artifacts
    requirements = mlflow.pyfunc.get_model_dependencies(f"models:/{name}/1")
    with open(requirements) as f:
        pinned = f.read()
    assert "scikit-learn==" in pinned and "skops==" in pinned
    tags = version_tags(client, name, "1")
    assert json.loads(tags["tributary.source"]) == {"kind": "sklearn", "dataset": "breast_cancer", "key": "row_id",
                                                     "target": "target"}
    assert json.loads(tags["tributary.labels"]) == [0, 1]
    # the parent run records the decision and is finished
    parent = client.get_run(best.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["tributary.gate.decision"] == "champion"
    assert parent.info.status == "FINISHED"
    # model metrics in the warehouse, per task
    assert _ml_metrics(pg, "train-1", "gate_and_register")["gate_passed"] == 1.0
    assert _ml_metrics(pg, "train-1", "train")["holdout_f1_macro"] > 0.9


def test_a_retried_run_trains_and_registers_nothing_twice(lifecycle, client) -> None:
    name = lifecycle.unique_name()
    first = lifecycle.train_and_gate(name, "train-retry", lifecycle.good_grid)
    again = lifecycle.train_and_gate(name, "train-retry", lifecycle.good_grid)

    assert again.result["version"] == first.result["version"] == "1"
    assert again.result["decision"] == first.result["decision"]
    assert again.candidates == first.candidates
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    experiment = client.get_experiment_by_name(name)
    assert len(client.search_runs([experiment.experiment_id])) == 1 + len(lifecycle.good_grid)


def test_a_worse_challenger_is_recorded_but_not_registered_or_promoted(lifecycle, client, pg) -> None:
    from tributary.ml.models.registry import aliases

    name = lifecycle.unique_name()
    lifecycle.train_and_gate(name, "good", lifecycle.good_grid)
    result = lifecycle.train_and_gate(name, "worse", lifecycle.crippled_grid, thresholds={}).result

    decision = result["decision"]
    assert decision["outcome"] == "rejected"
    assert decision["champion_version"] == "1"
    assert decision["candidate"]["f1_macro"] < decision["champion"]["f1_macro"]
    assert "does not beat champion v1" in decision["reasons"][0]
    assert result["version"] is None
    assert aliases(client, name) == {ALIAS_CHAMPION: "1"}
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert _ml_metrics(pg, "worse", "gate_and_register")["gate_passed"] == 0.0


def test_a_candidate_below_the_thresholds_is_rejected_even_without_a_champion(lifecycle, client) -> None:
    from tributary.ml.models.registry import aliases

    name = lifecycle.unique_name()
    result = lifecycle.train_and_gate(name, "weak", lifecycle.crippled_grid, thresholds={"f1_macro": 0.9}).result

    assert result["decision"]["outcome"] == "rejected"
    assert result["decision"]["reasons"][0].startswith("f1_macro")
    assert aliases(client, name) == {}


def test_a_better_candidate_becomes_challenger_and_the_champion_stays(lifecycle, client) -> None:
    from tributary.ml.models.registry import aliases

    name = lifecycle.unique_name()
    first = lifecycle.train_and_gate(name, "weak", lifecycle.crippled_grid).result
    strong = lifecycle.train_and_gate(name, "strong", lifecycle.good_grid)
    second, gate = strong.result, strong.gate

    assert first["decision"]["outcome"] == "champion"
    assert second["decision"]["outcome"] == "challenger"
    assert aliases(client, name) == {ALIAS_CHAMPION: "1", ALIAS_CHALLENGER: "2"}
    namespace = lifecycle.store["uri"]
    lineage = gate.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("sklearn", "datasets/breast_cancer"), (namespace, f"runs/{second['candidate_run_id']}/model"),
        (namespace, f"models/{name}/1")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(namespace, f"models/{name}/2")]


def test_unknown_hyperparameters_fail_fast_naming_them(lifecycle) -> None:
    from tributary.core.errors import PermanentError
    from tributary.ml.models.training import expand_grid

    with pytest.raises(PermanentError, match=r"no hyperparameter\(s\) \['depth'\]"):
        expand_grid("random_forest", {"depth": [1, 2]}, 10)
    assert expand_grid("random_forest", {"max_depth": [2, None], "n_estimators": [5]}, 10) == [
        {"max_depth": 2, "n_estimators": 5}, {"max_depth": None, "n_estimators": 5}]
    with pytest.raises(PermanentError, match="max_grid_points=3"):
        expand_grid("logistic_regression", {"C": [1, 2], "tol": [0.1, 0.01]}, 3)
