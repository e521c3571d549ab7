"""Deferrable wait until a Stacks transaction is in a block (``GET /v3/transaction/{txid}`` answers).

Side-effect free (a trigger may run twice): it only reads the node. It yields one event:

* ``confirmed``  the node has the transaction in a block (``outcome`` attached: block, result, status)
* ``timeout``    not in a block by the deadline (the operator fails transiently; the retry re-checks
                 the ledger and defers again)
* ``error``      a permanent failure while reading (e.g. HTTP 401, a malformed Connection)

Transient read failures (node unreachable, 5xx) are logged and polled again until the deadline.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from tributary.core.triggers import ErrorEvent, PollingTrigger, Status, TimeoutEvent
from tributary.stacks import SYSTEM
from tributary.stacks.hook import StacksHook


class StacksConfirmedEvent(TypedDict):
    status: Literal[Status.CONFIRMED]
    txid: str
    outcome: dict[str, Any]


class StacksTimeoutEvent(TimeoutEvent):
    txid: str


class StacksErrorEvent(ErrorEvent):
    txid: str


StacksTransactionEvent = StacksConfirmedEvent | StacksTimeoutEvent | StacksErrorEvent


class StacksTransactionTrigger(PollingTrigger):
    fields = ("conn_id", "txid")
    system = SYSTEM

    def __init__(self, conn_id: str, txid: str, *, poll_interval: float = 2.0, timeout: float | None = None,
                 deadline: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout, deadline=deadline)
        self.conn_id = conn_id
        self.txid = txid

    def make_hook(self) -> StacksHook:
        return StacksHook(self.conn_id)

    def event_context(self) -> dict[str, Any]:
        return {"txid": self.txid}

    def poll(self, hook: StacksHook) -> StacksConfirmedEvent | None:
        outcome = hook.get_transaction(self.txid)
        if outcome is None:
            return None
        return StacksConfirmedEvent(status=Status.CONFIRMED, txid=self.txid, outcome=outcome.as_dict())
