"""A DAG that cannot do anything useful without a request makes that param required (issue 11 §9): the
Trigger form asks for it and a REST trigger without it is refused with a 400 before a run exists."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# dag_id -> the param without which a run has nothing to do
REQUIRED = {"identity_verification": "credential", "did_issuance": "request_id"}


@pytest.fixture(scope="module")
def serialized() -> dict:
    """The DAGs as the API server holds them (serialized and back), which is what validates a trigger's conf."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(ROOT / "dags" / "web5"))
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id])) for dag_id in REQUIRED}


@pytest.mark.parametrize("dag_id", sorted(REQUIRED))
def test_a_trigger_without_the_request_is_refused(serialized: dict, dag_id: str) -> None:
    from airflow.exceptions import ParamValidationError

    dag, name = serialized[dag_id], REQUIRED[dag_id]
    schema = dag.params.get_param(name).schema
    assert "null" not in (schema["type"] if isinstance(schema["type"], list) else [schema["type"]])
    # the call the REST API makes in POST /dags/{dag_id}/dagRuns (dag.create_dagrun), answered with a 400
    for conf in ({}, {name: None}):
        with pytest.raises(ParamValidationError, match=name):
            dag.params.deep_merge(conf).validate()
