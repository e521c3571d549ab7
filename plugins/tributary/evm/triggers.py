"""Deferrable wait for a transaction receipt ``confirmations`` blocks deep, reorg-aware.

Side-effect free (a trigger may run twice): it only reads the node. It yields one event:

* ``confirmed``  the receipt is in the canonical chain with enough blocks on top (``receipt`` attached)
* ``dropped``    the node does not know the transaction any more (pruned from the pool, or its block
                 was reorged away and the transaction did not return to the pool): the operator
                 broadcasts the same signed bytes again and defers anew
* ``timeout``    nothing final within ``timeout`` seconds (the operator fails transiently; a retry
                 resumes from the ledger)

``reorgs`` counts how often a receipt seen earlier disappeared or moved to another block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class EvmReceiptTrigger(BaseTrigger):
    def __init__(self, conn_id: str, tx_hash: str, confirmations: int = 1, poll_interval: float = 1.0,
                 timeout: float = 900.0, dropped_after: float = 30.0, reorgs: int = 0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.tx_hash = tx_hash
        self.confirmations = max(1, int(confirmations))
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.dropped_after = float(dropped_after)
        self.reorgs = int(reorgs)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("tributary.evm.triggers.EvmReceiptTrigger",
                {"conn_id": self.conn_id, "tx_hash": self.tx_hash, "confirmations": self.confirmations,
                 "poll_interval": self.poll_interval, "timeout": self.timeout,
                 "dropped_after": self.dropped_after, "reorgs": self.reorgs})

    def _check(self, hook: Any, seen: dict[str, Any]) -> dict[str, Any] | None:
        """One poll (blocking; run in a thread). Returns an event payload when final."""
        receipt = hook.get_receipt(self.tx_hash)
        if receipt is not None:
            number = int(receipt["blockNumber"], 16)
            canonical = hook.block_hashes([number]).get(number)
            if canonical != receipt["blockHash"]:
                receipt = None  # a stale receipt of a block no longer canonical
        if receipt is None:
            if seen.get("block_hash"):
                self.reorgs += 1
                seen.clear()
            if hook.get_transaction(self.tx_hash) is None:
                seen.setdefault("unknown_since", time.monotonic())
                if time.monotonic() - seen["unknown_since"] >= self.dropped_after or self.reorgs:
                    return {"status": "dropped", "tx_hash": self.tx_hash, "reorgs": self.reorgs}
            else:
                seen.pop("unknown_since", None)
            return None
        if seen.get("block_hash") not in (None, receipt["blockHash"]):
            self.reorgs += 1
        seen["block_hash"] = receipt["blockHash"]
        depth = hook.block_number() - int(receipt["blockNumber"], 16) + 1
        if depth >= self.confirmations:
            return {"status": "confirmed", "tx_hash": self.tx_hash, "receipt": _plain_receipt(receipt),
                    "confirmations": depth, "reorgs": self.reorgs}
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from tributary.evm.hook import EvmHook

        hook = EvmHook(self.conn_id)
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                payload = await asyncio.to_thread(self._check, hook, seen)
            except Exception as exc:  # a node blink: keep waiting until the deadline
                self.log.warning("receipt poll for %s failed: %s", self.tx_hash, exc)
                payload = None
            if payload is not None:
                yield TriggerEvent(payload)
                return
            if time.monotonic() > deadline:
                yield TriggerEvent({"status": "timeout", "tx_hash": self.tx_hash, "reorgs": self.reorgs})
                return
            await asyncio.sleep(self.poll_interval)


def _plain_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt fields worth keeping in XCom (logs summarised: they can be large)."""
    keys = ("transactionHash", "blockNumber", "blockHash", "status", "gasUsed", "effectiveGasPrice",
            "contractAddress", "from", "to", "cumulativeGasUsed", "transactionIndex", "type")
    out = {k: receipt.get(k) for k in keys}
    out["logs"] = [{"address": log["address"], "topics": log["topics"], "data": log["data"],
                    "logIndex": log["logIndex"]} for log in receipt.get("logs", [])[:50]]
    return out
