"""Fixtures of the model-lifecycle tests: a real MLflow store, trained models, an Airflow metadata DB.

MLflow: one sqlite tracking/registry store and artifact folder per session, exposed as the
``tributary_mlflow`` Connection through ``AIRFLOW_CONN_TRIBUTARY_MLFLOW``. Tests use their own
model names, so they do not see each other's aliases.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

GOOD_GRID = [{"C": 0.5}, {"C": 5.0}]
CRIPPLED_GRID = [{"C": 1e-5}]  # so regularised that it predicts the majority class


@pytest.fixture(scope="session")
def mlflow_store() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="tributary-mlflow-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = str(root / "artifacts")
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_TRIBUTARY_MLFLOW", "TRIBUTARY_MLFLOW_URI",
                                            "TRIBUTARY_MLFLOW_ARTIFACTS")}
    os.environ["AIRFLOW_CONN_TRIBUTARY_MLFLOW"] = json.dumps(
        {"conn_type": "tributary_mlflow", "host": uri, "extra": {"artifact_location": artifacts}})
    os.environ["TRIBUTARY_MLFLOW_URI"] = uri
    os.environ["TRIBUTARY_MLFLOW_ARTIFACTS"] = artifacts
    yield {"uri": uri, "artifacts": artifacts, "root": str(root)}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def lifecycle_env(mlflow_store: dict[str, str], warehouse: Any) -> dict[str, str]:
    """MLflow and the warehouse, both as Connections; ``ml_metrics`` and ``ml_predictions`` migrated."""
    import psycopg2

    from tributary.storage.warehouse import apply_migrations

    conn = psycopg2.connect(warehouse.dsn())
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    return mlflow_store


@pytest.fixture(scope="session")
def client(lifecycle_env: dict[str, str]) -> Any:
    from tributary.ml.models.registry import connect

    return connect()[1]


def unique_name(prefix: str = "test_model") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def model_name() -> str:
    return unique_name()


def make_context(task_id: str, run_id: str, dag_id: str = "ml_test", map_index: int = -1) -> dict[str, Any]:
    """The part of an Airflow task context the operators read."""
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index, try_number=1)
    return {"ti": ti, "run_id": run_id, "logical_date": datetime(2026, 3, 1, tzinfo=UTC),
            "dag_run": SimpleNamespace(run_id=run_id, run_after=datetime(2026, 3, 1, tzinfo=UTC))}


def train_and_gate(model_name: str, run_id: str, grid: list[dict[str, Any]], *,
                   thresholds: dict[str, float] | None = None, source: dict[str, Any] | None = None,
                   ) -> SimpleNamespace:
    """What ml_train_register does, through its operators: the gate's result, the candidates, the operators."""
    from tributary.ml.models.datasets import DEFAULT_SOURCE, source_from_spec
    from tributary.ml.models.operators import GateRegisterOperator, TrainCandidateOperator
    from tributary.ml.models.registry import connect
    from tributary.ml.models.training import open_training_run

    source = source or DEFAULT_SOURCE
    hook, client = connect()
    parent = open_training_run(client, hook.ensure_experiment(model_name), run_id, model_name=model_name,
                               source=source_from_spec(source), estimator="logistic_regression",
                               grid={"C": [p["C"] for p in grid]})
    trains, candidates = [], []
    for index, point in enumerate(grid):
        op = TrainCandidateOperator(task_id="train", model_name=model_name, source=source,
                                    estimator="logistic_regression", hyperparams=point, parent_run_id=parent)
        candidates.append(op.execute(make_context("train", run_id, map_index=index)))
        trains.append(op)
    gate = GateRegisterOperator(task_id="gate_and_register", model_name=model_name, source=source,
                                candidates=candidates, parent_run_id=parent, gate_metric="f1_macro",
                                thresholds=thresholds if thresholds is not None else {"accuracy": 0.5})
    result = gate.execute(make_context("gate_and_register", run_id))
    return SimpleNamespace(result=result, candidates=candidates, trains=trains, gate=gate)


@pytest.fixture(scope="session")
def lifecycle(lifecycle_env: dict[str, str]) -> SimpleNamespace:
    """Helpers for tests (fixtures rather than imports: conftest modules are not importable by name)."""
    return SimpleNamespace(context=make_context, train_and_gate=train_and_gate, unique_name=unique_name,
                           good_grid=GOOD_GRID, crippled_grid=CRIPPLED_GRID, store=lifecycle_env)
