"""Turn a classified failure into the Airflow behaviour its class asks for.

transient -> the exception propagates and Airflow retries with the DAG's exponential backoff;
permanent / data / security -> :class:`ClassifiedFailure` (an ``AirflowFailException``), so the task
fails on this try without retrying. The classification travels on the exception, so callbacks
record the class decided here and not a second guess.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSkipException,
    DownstreamTasksSkipped,
    TaskDeferred,
)

from tributary.core.errors import Classification, TransientError, TributaryError, classify

P = ParamSpec("P")
R = TypeVar("R")


# Not failures: what a task raises to tell Airflow to skip, defer or reschedule it.
CONTROL_FLOW = (AirflowSkipException, AirflowRescheduleException, DownstreamTasksSkipped, TaskDeferred)


class ClassifiedFailure(AirflowFailException):
    """Fails the task without retry; carries the classification and the system for the callbacks."""

    def __init__(self, message: str, classification: Classification, system: str | None) -> None:
        super().__init__(message)
        self.classification = classification
        self.system = system


def raise_classified(exc: BaseException, system: str | None = None) -> NoReturn:
    """Re-raise ``exc`` so that Airflow retries it only when it is transient.

    Airflow's control flow (skip, defer, reschedule) and failures already classified pass unchanged.
    """
    if isinstance(exc, (ClassifiedFailure, *CONTROL_FLOW)):
        raise exc
    classification = classify(exc)
    if isinstance(exc, TributaryError) and exc.system:
        system = exc.system
    if classification.retryable:
        if isinstance(exc, TransientError):
            raise exc
        raise TransientError(f"{type(exc).__name__}: {exc}", system=system,
                             reason=classification.reason) from exc
    raise ClassifiedFailure(
        f"[{classification.error_class}] {type(exc).__name__}: {exc}", classification, system
    ) from exc


def classified(
    system: str, translate: Callable[[Exception], BaseException] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator for task callables: classify any exception for ``system`` (see module docstring).

    Use it under ``@task``: ``@task`` then ``@classified("bitcoin")`` then ``def sync(...)``.
    ``translate`` first maps a library's exceptions to ours (e.g. MLflow's error codes) when the
    generic ``classify`` cannot read them.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                raise_classified(translate(exc) if translate else exc, system)

        return wrapper

    return decorate
