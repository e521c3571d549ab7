"""Fail-fast wrapper: only transient failures reach Airflow's retry; the rest fail on this try."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from tributary.core.errors import DataError, ErrorClass, PermanentError, SecurityError, TransientError
from tributary.core.failfast import ClassifiedFailure, classified, raise_classified

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("error", [PermanentError("no"), DataError("bad"), SecurityError("forged"),
                                   ValueError("bad input")])
def test_non_transient_failures_become_airflow_fail_exceptions(error: Exception) -> None:
    with pytest.raises(AirflowFailException) as info:
        raise_classified(error, "bitcoin")
    assert isinstance(info.value, ClassifiedFailure)
    assert info.value.__cause__ is error
    assert info.value.system == "bitcoin"
    assert info.value.classification.error_class is not ErrorClass.TRANSIENT


def test_transient_failures_propagate_for_airflow_retries() -> None:
    with pytest.raises(TransientError) as info:
        raise_classified(ConnectionResetError("peer reset"), "evm")
    assert not isinstance(info.value, AirflowFailException)
    assert info.value.system == "evm"


def test_the_error_system_wins_over_the_task_system() -> None:
    with pytest.raises(ClassifiedFailure) as info:
        raise_classified(PermanentError("x", system="warehouse"), "platform")
    assert info.value.system == "warehouse"


def test_classified_decorator_passes_results_and_classifies_failures() -> None:
    @classified("dwn")
    def ok(x: int) -> int:
        return x + 1

    @classified("dwn")
    def forged() -> None:
        raise SecurityError("signature does not verify")

    assert ok(1) == 2
    with pytest.raises(ClassifiedFailure) as info:
        forged()
    assert info.value.classification.error_class is ErrorClass.SECURITY
    assert "signature does not verify" in str(info.value)


@pytest.mark.parametrize("exc", [AirflowSkipException("no champion yet"),
                                 TaskDeferred(trigger=None, method_name="resume")])
def test_airflow_control_flow_passes_unclassified(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as caught:
        raise_classified(exc, "ml")
    assert caught.value is exc

    @classified("ml")
    def task_body() -> None:
        raise exc

    with pytest.raises(type(exc)) as caught:
        task_body()
    assert caught.value is exc
