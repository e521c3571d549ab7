"""Deferrable wait until a Stacks transaction is in a block (``GET /v3/transaction/{txid}`` answers).

Side-effect free (a trigger may run twice): it only reads the node. It yields one event:

* ``mined``    the node has the transaction in a block (``outcome`` attached: block, result, status)
* ``timeout``  not in a block ``timeout`` seconds after the trigger started (the operator fails
               transiently; the retry re-checks the ledger and defers again)
* ``error``    a permanent failure while reading (e.g. HTTP 401, a malformed Connection)

Transient read failures (node unreachable, 5xx) are logged and polled again until the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class StacksTransactionTrigger(BaseTrigger):
    def __init__(self, conn_id: str, txid: str, poll_interval: float = 2.0, timeout: float = 600.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.txid = txid
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("tributary.stacks.triggers.StacksTransactionTrigger",
                {"conn_id": self.conn_id, "txid": self.txid, "poll_interval": self.poll_interval,
                 "timeout": self.timeout})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from tributary.core.errors import classify
        from tributary.stacks.hook import StacksHook

        hook = StacksHook(self.conn_id)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                outcome = await asyncio.to_thread(hook.get_transaction, self.txid)
            except Exception as exc:
                classification = classify(exc)
                if not classification.retryable:
                    yield TriggerEvent({"status": "error", "txid": self.txid, "message": str(exc)[:500],
                                        "reason": classification.reason})
                    return
                self.log.warning("status poll of %s failed: %s", self.txid, exc)
                outcome = None
            if outcome is not None:
                yield TriggerEvent({"status": "mined", "txid": self.txid, "outcome": outcome.as_dict()})
                return
            if time.monotonic() > deadline:
                yield TriggerEvent({"status": "timeout", "txid": self.txid})
                return
            await asyncio.sleep(self.poll_interval)
