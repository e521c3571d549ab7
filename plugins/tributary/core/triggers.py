"""The one polling-trigger base: every Tributary trigger is a :class:`PollingTrigger` with a ``poll()``.

A trigger waits in the triggerer's event loop for something a node will tell us (a confirmation, a
new tip). It must have no side effects, because Airflow may run it more than once. The base owns
everything that is the same for every wait, so a subclass is its fields and one ``poll()``:

* the loop, with ``poll()`` and ``make_hook()`` run in a thread (``asyncio.to_thread``) because our
  hooks are blocking clients and the triggerer's event loop must never block;
* classification of every exception by :func:`tributary.core.errors.classify`: a transient failure
  (node down, warming up, 5xx, timeout) is logged and polled again, backing off exponentially up to
  ``max_backoff`` seconds while it lasts; anything else ends the wait with an :class:`ErrorEvent`
  whose message is masked;
* the deadline, an absolute epoch time fixed when the trigger is first built and serialized with it,
  so a trigger resumed by another triggerer keeps the original deadline; at the deadline the wait
  ends with a :class:`TimeoutEvent`;
* ``serialize()`` built from the declared ``fields`` (the ``__init__`` arguments), so it can never
  drift from ``__init__``.

Events are plain dicts (they cross the triggerer/worker boundary as JSON) typed by a ``TypedDict``
per trigger. The vocabulary is shared: ``status`` is one of :class:`Status`, a transaction is always
``txid``, and success on a chain is always ``confirmed``. Operators dispatch on :class:`Status` and
turn an error event back into its exception with :func:`error_from_event`.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from tributary.core.errors import (
    Classification,
    DataError,
    ErrorClass,
    PermanentError,
    SecurityError,
    TransientError,
    TributaryError,
    classify,
)
from tributary.core.masking import mask_text


class Status(enum.StrEnum):
    """Every ``status`` a Tributary trigger event can carry."""

    CONFIRMED = "confirmed"  # a transaction is in the chain with the required depth
    REORGED = "reorged"      # a transaction seen in a block lost it
    REPLACED = "replaced"    # a transaction was replaced (RBF) by one the trigger does not know
    DROPPED = "dropped"      # the node no longer knows the transaction
    STUCK = "stuck"          # not confirmed by a fee-bump time
    NEW_TIP = "new_tip"      # the chain tip moved
    TIMEOUT = "timeout"      # the deadline passed with nothing final
    ERROR = "error"          # a non-transient failure while polling


class ErrorEvent(TypedDict):
    status: Literal[Status.ERROR]
    error_class: str
    reason: str
    message: str


class TimeoutEvent(TypedDict):
    status: Literal[Status.TIMEOUT]


_ERRORS_BY_CLASS: dict[ErrorClass, type[TributaryError]] = {
    ErrorClass.TRANSIENT: TransientError,
    ErrorClass.PERMANENT: PermanentError,
    ErrorClass.DATA: DataError,
    ErrorClass.SECURITY: SecurityError,
}


def error_from_event(event: Mapping[str, Any], system: str | None = None) -> TributaryError:
    """The classified exception an :class:`ErrorEvent` stands for (raise it through ``raise_classified``)."""
    try:
        error_class = ErrorClass(event.get("error_class", ErrorClass.PERMANENT))
    except ValueError:
        error_class = ErrorClass.PERMANENT
    return _ERRORS_BY_CLASS[error_class](str(event.get("message", "trigger failed")), system=system,
                                         reason=str(event.get("reason") or "trigger_error"))


class PollingTrigger(BaseTrigger):
    """Base of every Tributary trigger. Subclasses declare ``fields`` and implement ``make_hook`` and
    ``poll``; they may add keys to the error and timeout events with ``event_context``.

    ``poll_interval`` (seconds between polls) and ``deadline`` (epoch seconds, or None for no
    deadline) are attributes of every trigger; a subclass passes ``timeout`` (seconds from now) or a
    ``deadline`` it got back from ``serialize()``.
    """

    fields: ClassVar[tuple[str, ...]] = ()
    system: ClassVar[str] = ""
    max_backoff: ClassVar[float] = 300.0  # longest pause between polls while the peer keeps failing

    def __init__(self, *, poll_interval: float, timeout: float | None = None,
                 deadline: float | None = None) -> None:
        super().__init__()
        self.poll_interval = float(poll_interval)
        if deadline is None and timeout is not None:
            deadline = time.time() + float(timeout)
        self.deadline = deadline

    # ----------------------------------------------------------------- what a subclass supplies
    def make_hook(self) -> Any:
        """Build the (blocking) client once; runs in a thread."""
        raise NotImplementedError

    def poll(self, hook: Any) -> Mapping[str, Any] | None:
        """One look at the peer: the event to yield, or None to keep waiting. Blocking; runs in a thread.
        It may update the trigger's own fields (they are re-serialized if the trigger is resumed)."""
        raise NotImplementedError

    def event_context(self) -> dict[str, Any]:
        """Keys added to the error and timeout events (e.g. the txid being watched)."""
        return {}

    # ----------------------------------------------------------------- the base
    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {name: getattr(self, name) for name in self.fields}
        kwargs["poll_interval"] = self.poll_interval
        kwargs["deadline"] = self.deadline
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def error_event(self, exc: BaseException, classification: Classification) -> dict[str, Any]:
        return {**self.event_context(), "status": Status.ERROR.value,
                "error_class": str(classification.error_class), "reason": classification.reason,
                "message": mask_text(f"{type(exc).__name__}: {exc}")[:1000]}

    def timeout_event(self) -> dict[str, Any]:
        return {**self.event_context(), "status": Status.TIMEOUT.value}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = None
        failures = 0
        while True:
            event: Mapping[str, Any] | None
            try:
                if hook is None:
                    hook = await asyncio.to_thread(self.make_hook)
                event = await asyncio.to_thread(self.poll, hook)
                failures = 0
            except Exception as exc:
                classification = classify(exc)
                if not classification.retryable:
                    yield TriggerEvent(self.error_event(exc, classification))
                    return
                failures += 1
                self.log.warning("%s: poll failed (%s, %d in a row), polling again: %s", type(self).__name__,
                                 classification.reason, failures, mask_text(str(exc)))
                event = None
            if event is not None:
                yield TriggerEvent({k: (v.value if isinstance(v, enum.Enum) else v) for k, v in event.items()})
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent(self.timeout_event())
                return
            await asyncio.sleep(self.pause(failures))

    def pause(self, failures: int) -> float:
        """Seconds until the next poll: ``poll_interval``, doubled per consecutive transient failure up
        to ``max_backoff``, and never past the deadline."""
        pause = self.poll_interval if failures == 0 else min(self.poll_interval * 2 ** failures,
                                                             max(self.max_backoff, self.poll_interval))
        if self.deadline is not None:
            pause = max(0.0, min(pause, self.deadline - time.time()))
        return pause
