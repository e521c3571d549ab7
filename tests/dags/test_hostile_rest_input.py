"""Hostile REST input, measured (issue 11 §7): for every REST-triggerable DAG (every DAG with params),
confs generated from the DAG's own param schema, valid and invalid.

* Invalid confs (one param replaced by a JSON value its schema rejects, or a required param missing)
  must be refused by the check the REST API runs in ``POST /dags/{dag_id}/dagRuns`` before a run exists
  (``SerializedDAG.params.deep_merge(conf).validate()`` in ``create_dagrun``: a ``ParamValidationError``
  is answered with a 400), and by the worker's own check (``process_params``) as well.
* Valid confs must pass both, and what the first task does with them before any side effect (the
  Connection policy that runs as every task's ``pre_execute``; the pure validation step where a DAG has
  one) either accepts them or fails with a classified error, never an unclassified one.

Run ``.venv/bin/python -m pytest tests/dags/test_hostile_rest_input.py -q -s`` to see how many inputs were
tried per DAG.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 15  # per DAG and kind (valid, invalid): generating from the larger schemas is slow (~2 min in all)
TRIED: dict[str, dict[str, int]] = {}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def _dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    return {dag_id: dag for dag_id, dag in sorted(bag.dags.items()) if dag.params}


DAGS = _dags()


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    """The DAGs as the API server holds them: serialized and back."""
    from airflow.serialization.serialized_objects import DagSerialization

    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in DAGS.items()}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print("\nhostile REST input: confs tried per DAG (valid / invalid)")
    for dag_id, counts in sorted(TRIED.items()):
        print(f"  {dag_id:40s} {counts.get('valid', 0):4d} / {counts.get('invalid', 0):4d}")
    print(f"  {'total':40s} {sum(c.get('valid', 0) for c in TRIED.values()):4d} / "
          f"{sum(c.get('invalid', 0) for c in TRIED.values()):4d}")


def _schema(dag: Any) -> dict[str, Any]:
    """The conf a trigger may send, as one JSON schema built from the DAG's params."""
    properties, required = {}, []
    for name in dag.params:
        param = dag.params.get_param(name)
        properties[name] = {k: v for k, v in param.schema.items() if not k.startswith("x-")}
        if not param.has_value and param.value is not None:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _rest_validate(served_dag: Any, conf: dict[str, Any]) -> None:
    """What ``POST /dags/{dag_id}/dagRuns`` runs before a run exists (``create_dagrun``)."""
    served_dag.params.deep_merge(conf).validate()


def _worker_validate(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """What the task runner does with the run's conf before the first task (``process_params``)."""
    from airflow.sdk.definitions.param import process_params

    return process_params(dag, dag.tasks[0], conf, suppress_exception=False)


def _evm_contract_execution(params: dict[str, Any]) -> None:
    from tributary.evm import execution

    execution.validate(execution.ExecutionRequest(
        contract=params["contract"], action=params["action"], function=params["function"],
        args=params["args"], value_wei=params["value_wei"]))


# DAGs whose first task starts with a pure validation step (no node, no warehouse): run it too.
VALIDATION_STEPS: dict[str, Callable[[dict[str, Any]], None]] = {
    "evm_contract_execution": _evm_contract_execution,
}


def _first_task_checks(dag: Any, params: dict[str, Any]) -> None:
    from tributary.core.conn_policy import check_run_connections
    from tributary.core.errors import TributaryError
    from tributary.core.failfast import ClassifiedFailure

    try:
        check_run_connections({"dag": dag, "params": params})
        if dag.dag_id in VALIDATION_STEPS:
            VALIDATION_STEPS[dag.dag_id](copy.deepcopy(params))
    except (TributaryError, ClassifiedFailure):
        pass  # refused with a class: the run fails as a permanent/data/security error, nothing retried blindly


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def _violates(schema: dict[str, Any], value: Any) -> bool:
    from jsonschema import FormatChecker, validators

    return not validators.validator_for(schema)(schema, format_checker=FormatChecker()).is_valid(value)


def _count(dag_id: str, kind: str) -> None:
    TRIED.setdefault(dag_id, {}).setdefault(kind, 0)
    TRIED[dag_id][kind] += 1


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_valid_confs_pass_and_never_end_in_an_unclassified_error(dag_id: str, served: dict[str, Any]) -> None:
    dag, schema = DAGS[dag_id], _schema(DAGS[dag_id])

    @SETTINGS
    @given(conf=from_schema(schema))
    def check(conf: dict[str, Any]) -> None:
        # the REST API keeps the conf as JSON: what it accepts is what round-trips through JSON
        conf = json.loads(json.dumps(conf))
        _count(dag_id, "valid")
        _rest_validate(served[dag_id], conf)
        params = _worker_validate(dag, conf)
        _first_task_checks(dag, params)

    check()


NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_non_finite_numbers_are_refused_before_any_side_effect(dag_id: str, served: dict[str, Any]) -> None:
    """``NaN`` passes every minimum/maximum of a JSON schema and the REST API reads it from JSON, so the
    run may exist: its first task must refuse it (data error, no retry) before it does anything."""
    from airflow.exceptions import ParamValidationError

    from tributary.core.conn_policy import check_run_connections
    from tributary.core.failfast import ClassifiedFailure

    dag, schema = DAGS[dag_id], _schema(DAGS[dag_id])
    numeric = [n for n, p in schema["properties"].items() if "number" in str(p.get("type"))]
    if not numeric:
        pytest.skip("no number param")

    @SETTINGS
    @given(base=from_schema(schema), name=st.sampled_from(numeric), value=NON_FINITE)
    def check(base: dict[str, Any], name: str, value: float) -> None:
        conf = {**json.loads(json.dumps(base)), name: value}
        _count(dag_id, "invalid")
        try:
            _rest_validate(served[dag_id], conf)
        except ParamValidationError:
            return  # refused with a 400 (e.g. infinity above a maximum)
        with pytest.raises(ClassifiedFailure, match=r"\[data\].*finite"):
            check_run_connections({"dag": dag, "params": _worker_validate(dag, conf)})

    check()


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_invalid_confs_are_refused_before_a_run_exists(dag_id: str, served: dict[str, Any]) -> None:
    from airflow.exceptions import ParamValidationError
    from airflow.sdk.exceptions import ParamValidationError as WorkerParamValidationError

    dag, schema = DAGS[dag_id], _schema(DAGS[dag_id])
    names = sorted(schema["properties"])

    @SETTINGS
    @given(base=from_schema(schema), name=st.sampled_from(names), value=JSON_VALUES, drop=st.booleans())
    def check(base: dict[str, Any], name: str, value: Any, drop: bool) -> None:
        conf = json.loads(json.dumps(base))
        if drop and name in schema["required"]:
            conf.pop(name, None)  # a required param left out
        else:
            if not _violates(schema["properties"][name], value):
                return  # the random value happens to be valid: not an invalid conf
            conf[name] = value
        assert all(not isinstance(v, float) or math.isfinite(v) for v in conf.values())
        _count(dag_id, "invalid")
        with pytest.raises(ParamValidationError):
            _rest_validate(served[dag_id], conf)
        if name in conf:
            # a wrong value is refused by the worker too (a missing one never reaches it: no run exists)
            with pytest.raises((WorkerParamValidationError, ParamValidationError)):
                _worker_validate(dag, conf)

    check()
    assert TRIED.get(dag_id, {}).get("invalid", 0) > 0, f"{dag_id}: no invalid conf was generated"
