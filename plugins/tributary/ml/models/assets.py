"""The Assets that chain the ML DAGs, and what a run learns from the events that triggered it.

    ml_pipeline_breast_cancer --table ml_dataset_breast_cancer--> ml_train_register
    ml_train_register --ml_model_challenger--> ml_deploy
    ml_train_register (first model) / ml_deploy (promotion) --ml_model_champion--> ml_batch_score
    ml_pipeline_breast_cancer --table ml_dataset_breast_cancer--> ml_batch_score

Alias events carry ``extra = {"model_name", "version", "alias", "source"}``; table events carry the
stored ``partition`` (see ``tributary.ml.pipeline.assets``). A task announces an alias change with
:func:`announce_alias`, which skips (no event, no downstream run) when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from tributary.ml.models import ALIAS_CHALLENGER, ALIAS_CHAMPION


def alias_asset(alias: str) -> Asset:
    """Changes of an MLflow alias, across registered models (the event says which model)."""
    return Asset(name=f"ml_model_{alias}", uri=f"tributary://mlflow/aliases/{alias}")


def champion_asset() -> Asset:
    return alias_asset(ALIAS_CHAMPION)


def challenger_asset() -> Asset:
    return alias_asset(ALIAS_CHALLENGER)


def announce_alias(context: Mapping[str, Any], alias: str, *, model_name: str, version: Any,
                   changed: bool, why: str, source: Any = None) -> dict[str, Any]:
    """Emit the alias Asset's event for a change, or skip the announcing task when there is none."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not changed or version in (None, ""):
        raise AirflowSkipException(f"{alias} of {model_name} unchanged: {why}")
    extra = {"model_name": model_name, "version": str(version), "alias": alias}
    if source:
        extra["source"] = source
    context["outlet_events"][alias_asset(alias)].extra = extra
    return extra


def triggering_extras(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``extra`` of every Asset event that triggered this run, oldest first (none for other runs)."""
    events = context.get("triggering_asset_events") or {}
    found: list[tuple[Any, dict[str, Any]]] = []
    try:
        groups = list(events.values())
    except AttributeError:
        return []
    for group in groups:
        for event in group or []:
            found.append((getattr(event, "timestamp", None), dict(getattr(event, "extra", None) or {})))
    found.sort(key=lambda item: (item[0] is not None, item[0]))
    return [extra for _, extra in found]


def triggering_partition(context: Mapping[str, Any]) -> str | None:
    """The newest stored partition among the triggering events (a pipeline's table or Parquet event)."""
    partitions = [str(extra["partition"]) for extra in triggering_extras(context) if extra.get("partition")]
    return partitions[-1] if partitions else None
