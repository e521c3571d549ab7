"""Deferrable wait for a transaction receipt ``confirmations`` blocks deep, reorg-aware.

Side-effect free (a trigger may run twice): it only reads the node. It yields one event:

* ``confirmed``  the receipt is in the canonical chain with enough blocks on top (``receipt`` attached)
* ``dropped``    the node does not know the transaction any more (pruned from the pool, or its block
                 was reorged away and the transaction did not return to the pool): the operator
                 broadcasts the same signed bytes again and defers anew
* ``timeout``    nothing final by the deadline (the operator fails transiently; a retry resumes from
                 the ledger)
* ``error``      a permanent or security failure while reading (e.g. HTTP 401, a wrong chain); a
                 transient one (node down, rate limit) is polled again until the deadline

``reorgs`` counts how often a receipt seen earlier disappeared or moved to another block; it is in
every event, so the operator can record it whatever the outcome.
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

from tributary.core.triggers import ErrorEvent, PollingTrigger, Status, TimeoutEvent
from tributary.evm import SYSTEM
from tributary.evm.errors import translate
from tributary.evm.hook import EvmHook

# The receipt fields worth keeping in XCom (logs are summarised: they can be large).
_RECEIPT_KEYS = ("transactionHash", "blockNumber", "blockHash", "status", "gasUsed", "effectiveGasPrice",
                 "contractAddress", "from", "to", "cumulativeGasUsed", "transactionIndex", "type")


class EvmConfirmedEvent(TypedDict):
    status: Literal[Status.CONFIRMED]
    txid: str
    receipt: dict[str, Any]
    confirmations: int
    reorgs: int


class EvmDroppedEvent(TypedDict):
    status: Literal[Status.DROPPED]
    txid: str
    reorgs: int


class EvmTimeoutEvent(TimeoutEvent):
    txid: str
    reorgs: int


class EvmErrorEvent(ErrorEvent):
    txid: str
    reorgs: int


EvmReceiptEvent = EvmConfirmedEvent | EvmDroppedEvent | EvmTimeoutEvent | EvmErrorEvent


class EvmReceiptTrigger(PollingTrigger):
    fields = ("conn_id", "txid", "confirmations", "dropped_after", "reorgs")
    system = SYSTEM

    def __init__(self, conn_id: str, txid: str, confirmations: int = 1, *, poll_interval: float = 1.0,
                 timeout: float | None = None, deadline: float | None = None, dropped_after: float = 30.0,
                 reorgs: int = 0) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout, deadline=deadline)
        self.conn_id = conn_id
        self.txid = txid
        self.confirmations = max(1, int(confirmations))
        self.dropped_after = float(dropped_after)
        self.reorgs = int(reorgs)
        # What this run saw (the receipt's block hash, since when the node does not know the
        # transaction). Not serialized: a resumed trigger starts looking afresh; ``reorgs`` is kept.
        self._seen: dict[str, Any] = {}

    def make_hook(self) -> EvmHook:
        return EvmHook(self.conn_id)

    def event_context(self) -> dict[str, Any]:
        return {"txid": self.txid, "reorgs": self.reorgs}

    def poll(self, hook: EvmHook) -> EvmConfirmedEvent | EvmDroppedEvent | None:
        try:
            return self._poll(hook)
        except Exception as exc:
            # Web3/JSON-RPC errors the hook did not map yet: the EVM rules decide transient or not.
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _poll(self, hook: EvmHook) -> EvmConfirmedEvent | EvmDroppedEvent | None:
        seen = self._seen
        receipt = hook.get_receipt(self.txid)
        if receipt is not None:
            number = int(receipt["blockNumber"], 16)
            canonical = hook.block_hashes([number]).get(number)
            if canonical != receipt["blockHash"]:
                receipt = None  # a stale receipt of a block no longer canonical
        if receipt is None:
            if seen.get("block_hash"):
                self.reorgs += 1
                seen.clear()
            if hook.get_transaction(self.txid) is None:
                seen.setdefault("unknown_since", time.monotonic())
                if time.monotonic() - seen["unknown_since"] >= self.dropped_after or self.reorgs:
                    return EvmDroppedEvent(status=Status.DROPPED, txid=self.txid, reorgs=self.reorgs)
            else:
                seen.pop("unknown_since", None)
            return None
        if seen.get("block_hash") not in (None, receipt["blockHash"]):
            self.reorgs += 1
        seen["block_hash"] = receipt["blockHash"]
        depth = hook.block_number() - int(receipt["blockNumber"], 16) + 1
        if depth >= self.confirmations:
            return EvmConfirmedEvent(status=Status.CONFIRMED, txid=self.txid, receipt=_plain_receipt(receipt),
                                     confirmations=depth, reorgs=self.reorgs)
        return None


def _plain_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt fields worth keeping in XCom (logs summarised: they can be large)."""
    out = {k: receipt.get(k) for k in _RECEIPT_KEYS}
    out["logs"] = [{"address": log["address"], "topics": log["topics"], "data": log["data"],
                    "logIndex": log["logIndex"]} for log in receipt.get("logs", [])[:50]]
    return out
