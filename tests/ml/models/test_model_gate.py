"""The gate rule, the choice of the best grid point, and how MLflow errors are classified."""

from __future__ import annotations

import pytest

from tributary.core.errors import ErrorClass, PermanentError, classify
from tributary.ml.models.evaluation import GateDecision, decide, select_best

pytestmark = pytest.mark.unit

GOOD = {"accuracy": 0.97, "f1_macro": 0.96, "balanced_accuracy": 0.95}
WEAK = {"accuracy": 0.63, "f1_macro": 0.39, "balanced_accuracy": 0.5}


def test_the_first_model_that_passes_the_thresholds_becomes_champion() -> None:
    decision = decide(GOOD, metric="f1_macro", thresholds={"accuracy": 0.9})
    assert decision.outcome == "champion"
    assert decision.registers


def test_a_threshold_failure_rejects_whatever_the_champion() -> None:
    decision = decide(WEAK, metric="f1_macro", thresholds={"accuracy": 0.9, "f1_macro": 0.5})
    assert decision.outcome == "rejected"
    assert decision.reasons == ["accuracy 0.6300 < threshold 0.9000", "f1_macro 0.3900 < threshold 0.5000"]
    assert not decision.registers


def test_the_candidate_must_beat_the_champion_by_more_than_min_improvement() -> None:
    assert decide(GOOD, metric="f1_macro", thresholds={}, champion=WEAK, champion_version="3").outcome == "challenger"
    assert decide(WEAK, metric="f1_macro", thresholds={}, champion=GOOD, champion_version="3").outcome == "rejected"
    tie = decide(GOOD, metric="f1_macro", thresholds={}, champion=GOOD, champion_version="3")
    assert tie.outcome == "rejected"  # a tie keeps the champion
    small = dict(GOOD, f1_macro=0.97)
    assert decide(small, metric="f1_macro", thresholds={}, champion=GOOD, champion_version="3",
                  min_improvement=0.02).outcome == "rejected"
    assert decide(small, metric="f1_macro", thresholds={}, champion=GOOD, champion_version="3",
                  min_improvement=0.005).outcome == "challenger"


def test_a_champion_that_cannot_score_the_holdout_blocks_promotion() -> None:
    decision = decide(GOOD, metric="f1_macro", thresholds={}, champion=None, champion_version="2",
                      champion_error="DataError: the holdout lacks the model's input column(s) ['x']")
    assert decision.outcome == "rejected"
    assert "could not be scored" in decision.reasons[0]
    assert GateDecision.from_dict(decision.to_dict()) == decision


def test_unknown_metrics_are_configuration_errors() -> None:
    with pytest.raises(PermanentError, match=r"unknown metric\(s\) \['auc'\]"):
        decide(GOOD, metric="f1_macro", thresholds={"auc": 0.9})


def test_the_best_grid_point_has_the_best_cross_validation_score_first_wins_ties() -> None:
    points = [{"name": "a", "cv": {"f1_macro_mean": 0.9}}, {"name": "b", "cv": {"f1_macro_mean": 0.95}},
              {"name": "c", "cv": {"f1_macro_mean": 0.95}}]
    assert select_best(points, "f1_macro")["name"] == "b"


def test_mlflow_errors_are_classified_by_their_error_code() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from tributary.ml.models.registry import translate_error

    missing = translate_error(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert classify(missing).error_class is ErrorClass.PERMANENT
    assert classify(missing).reason == "mlflow:RESOURCE_DOES_NOT_EXIST"
    busy = translate_error(MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE))
    assert classify(busy).error_class is ErrorClass.TRANSIENT
    other = ValueError("x")
    assert translate_error(other) is other
