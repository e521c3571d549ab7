"""The evaluation gate: metric thresholds, then a comparison with the champion on the same holdout.

``decide`` is pure (no MLflow, no I/O) and returns a ``GateDecision``:

* ``rejected``    a threshold failed, or the candidate did not beat the champion by more than
                  ``min_improvement`` on the gate metric (ties keep the champion), or the champion
                  could not score this holdout;
* ``champion``    there is no champion yet and every threshold passed: the first model becomes
                  champion directly;
* ``challenger``  every threshold passed and the candidate beat the champion: ``ml_deploy`` may
                  promote it.

A rejected candidate is a normal outcome, not an error: the DAG records the decision and succeeds.
Both models are scored on the *current* holdout (``datasets.holdout_mask``), so the comparison is
like for like; the champion's old numbers are never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tributary.core.errors import DataError, PermanentError
from tributary.ml import SYSTEM

METRICS = ("accuracy", "f1_macro", "balanced_accuracy")
SCORERS = {"accuracy": "accuracy", "f1_macro": "f1_macro", "balanced_accuracy": "balanced_accuracy"}
OUTCOMES = ("champion", "challenger", "rejected")


def classification_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
    }


def check_metric_names(metric: str, thresholds: Mapping[str, float]) -> None:
    unknown = sorted({metric, *thresholds} - set(METRICS))
    if unknown:
        raise PermanentError(f"unknown metric(s) {unknown}; known: {list(METRICS)}", system=SYSTEM,
                             reason="config:metric")


@dataclass(frozen=True)
class GateDecision:
    outcome: str
    metric: str
    candidate: dict[str, float]
    reasons: list[str] = field(default_factory=list)
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    min_improvement: float = 0.0

    @property
    def registers(self) -> bool:
        return self.outcome != "rejected"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> GateDecision:
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})


def failed_thresholds(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    return [f"{name} {metrics[name]:.4f} < threshold {float(minimum):.4f}"
            for name, minimum in sorted(thresholds.items()) if metrics[name] < float(minimum)]


def decide(
    candidate: Mapping[str, float],
    *,
    metric: str,
    thresholds: Mapping[str, float],
    champion: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    champion_error: str | None = None,
    min_improvement: float = 0.0,
) -> GateDecision:
    """The gate rule (see the module docstring); ``candidate``/``champion`` are holdout metrics."""
    check_metric_names(metric, thresholds)
    common = {"metric": metric, "candidate": dict(candidate), "min_improvement": float(min_improvement),
              "champion": dict(champion) if champion else None, "champion_version": champion_version}
    failures = failed_thresholds(candidate, thresholds)
    if failures:
        return GateDecision("rejected", reasons=failures, **common)
    if champion_version is None:
        return GateDecision("champion", reasons=["no champion yet; thresholds passed"], **common)
    if champion_error is not None or champion is None:
        return GateDecision("rejected", reasons=[f"champion v{champion_version} could not be scored on this "
                                                 f"holdout: {champion_error}"], **common)
    delta = candidate[metric] - champion[metric]
    if delta > min_improvement:
        return GateDecision("challenger", reasons=[
            f"{metric} {candidate[metric]:.4f} beats champion v{champion_version} {champion[metric]:.4f} "
            f"by {delta:+.4f} > {min_improvement}"], **common)
    return GateDecision("rejected", reasons=[
        f"{metric} {candidate[metric]:.4f} does not beat champion v{champion_version} {champion[metric]:.4f} "
        f"by more than {min_improvement} ({delta:+.4f})"], **common)


def select_best(candidates: Iterable[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """The grid point with the best mean cross-validation score (the first one on ties)."""
    ranked = list(candidates)
    if not ranked:
        raise DataError("no trained candidates to choose from", system=SYSTEM, reason="no_candidates")
    best = max(enumerate(ranked), key=lambda item: (item[1]["cv"][f"{metric}_mean"], -item[0]))
    return dict(best[1])


def model_inputs(model: Any, default: list[str]) -> list[str]:
    """The input columns a pyfunc model's signature names (``default`` when it has none)."""
    schema = model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    return [str(n) for n in names] if names else list(default)


def score_model(model: Any, holdout: Any, features: list[str], target: str) -> dict[str, float]:
    """Holdout metrics of a loaded pyfunc model, fed the columns its signature asks for."""
    columns = model_inputs(model, features)
    missing = [c for c in columns if c not in holdout.columns]
    if missing:
        raise DataError(f"the holdout lacks the model's input column(s) {missing[:10]}", system=SYSTEM,
                        reason="schema_mismatch")
    return classification_metrics(holdout[target], model.predict(holdout[columns]))
