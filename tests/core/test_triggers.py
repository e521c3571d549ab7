"""The polling-trigger base: one loop, classified errors, masked messages, a deadline that survives a
resume, and serialize() from the declared fields."""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pytest

from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError
from tributary.core.triggers import PollingTrigger, Status, error_from_event

pytestmark = pytest.mark.unit


class Script:
    """A fake blocking client: each poll takes the next answer (an exception is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.polls = 0

    def next(self) -> Any:
        self.polls += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        return answer


SCRIPTS: dict[str, Script] = {}


class ScriptedTrigger(PollingTrigger):
    fields = ("name", "txid")

    def __init__(self, name: str, txid: str, *, poll_interval: float = 0.01, timeout: float | None = None,
                 deadline: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout, deadline=deadline)
        self.name = name
        self.txid = txid

    def make_hook(self) -> Script:
        return SCRIPTS[self.name]

    def poll(self, hook: Script) -> dict[str, Any] | None:
        return hook.next()

    def event_context(self) -> dict[str, Any]:
        return {"txid": self.txid}


def _events(trigger: PollingTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_transient_failures_are_polled_again_until_the_event() -> None:
    SCRIPTS["t"] = Script(TransientError("node down"), ConnectionError("reset"), None,
                          {"status": Status.CONFIRMED, "txid": "ab"})
    assert _events(ScriptedTrigger("t", "ab")) == [{"status": "confirmed", "txid": "ab"}]
    assert SCRIPTS["t"].polls == 4


@pytest.mark.parametrize(("exc", "error_class"), [
    (PermanentError("unknown wallet"), "permanent"),
    (SecurityError("bad signature"), "security"),
    (DataError("malformed answer"), "data"),
])
def test_a_non_transient_failure_ends_the_wait_with_a_classified_masked_error(exc: Exception,
                                                                              error_class: str) -> None:
    exc.args = (f"{exc.args[0]} (password=hunter22)",)
    SCRIPTS["e"] = Script(exc)
    [event] = _events(ScriptedTrigger("e", "cd"))
    assert event["status"] == Status.ERROR and event["error_class"] == error_class and event["txid"] == "cd"
    assert "hunter22" not in event["message"] and "password=***" in event["message"]
    raised = error_from_event(event, "bitcoin")
    assert raised.error_class.value == error_class and raised.system == "bitcoin"


def test_the_deadline_ends_the_wait_with_a_timeout_event() -> None:
    SCRIPTS["d"] = Script()  # never final
    started = time.monotonic()
    assert _events(ScriptedTrigger("d", "ef", timeout=0.2)) == [{"status": "timeout", "txid": "ef"}]
    assert 0.15 < time.monotonic() - started < 2


def test_serialize_mirrors_init_and_a_resumed_trigger_keeps_its_deadline() -> None:
    trigger = ScriptedTrigger("s", "01", poll_interval=5, timeout=60)
    path, kwargs = trigger.serialize()
    assert kwargs == {"name": "s", "txid": "01", "poll_interval": 5.0, "deadline": trigger.deadline}
    module, _, name = path.rpartition(".")
    time.sleep(0.01)
    resumed = getattr(importlib.import_module(module), name)(**kwargs)
    assert resumed.deadline == trigger.deadline  # not pushed back by the resume
    assert resumed.serialize() == (path, kwargs)


def test_backoff_doubles_while_the_peer_fails_and_never_passes_the_deadline() -> None:
    trigger = ScriptedTrigger("b", "02", poll_interval=2)
    assert [trigger.pause(n) for n in range(5)] == [2, 4, 8, 16, 32]
    assert trigger.pause(20) == trigger.max_backoff
    near = ScriptedTrigger("b", "02", poll_interval=2, timeout=1)
    assert near.pause(3) <= 1


def test_an_unknown_error_class_in_an_event_is_permanent() -> None:
    assert isinstance(error_from_event({"status": "error", "error_class": "weird", "message": "m"}), PermanentError)
