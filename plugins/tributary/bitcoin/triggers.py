"""Deferrable triggers for Bitcoin waits, on :class:`~tributary.core.triggers.PollingTrigger`.
Side-effect free: they only read the node, and may run twice.

* :class:`TransactionConfirmedTrigger`: a settlement's transaction confirmed, reorged, replaced,
  dropped or stuck (one ``TypedDict`` per event; the settlement operator dispatches on the status).
* :class:`NewTipTrigger`: the chain tip moved.
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

from tributary.bitcoin import SYSTEM
from tributary.core.triggers import ErrorEvent, PollingTrigger, Status, TimeoutEvent


# --------------------------------------------------------------------------- settlement confirmation
class TransactionConfirmedEvent(TypedDict):
    """One of the txids has the required confirmations (an old one may win the RBF race)."""

    status: Literal[Status.CONFIRMED]
    txid: str
    confirmations: int
    blockhash: str | None
    blockheight: int | None


class TransactionReorgedEvent(TypedDict):
    """A txid seen in a block lost it: confirmations back to 0, or it is in another block now."""

    status: Literal[Status.REORGED]
    txid: str
    orphaned_block: str
    blockhash: str | None  # the block it is in now, if any
    in_mempool: bool | None  # when it is in no block: whether the mempool still has it


class TransactionReplacedEvent(TypedDict):
    """The current txid was replaced by a transaction the trigger does not know."""

    status: Literal[Status.REPLACED]
    txid: str
    replaced_by: str


class TransactionDroppedEvent(TypedDict):
    """No txid is confirmed or in the mempool (evicted, node restarted)."""

    status: Literal[Status.DROPPED]
    txid: str
    in_mempool: Literal[False]


class TransactionStuckEvent(TypedDict):
    """Nothing confirmed by ``bump_at``: time for a fee bump."""

    status: Literal[Status.STUCK]
    txid: str
    confirmations: int
    bump_at: float


class TransactionErrorEvent(ErrorEvent):
    """A permanent error reading the node (unknown wallet, bad credentials, ...)."""

    txid: str


class TransactionTimeoutEvent(TimeoutEvent):
    """The deadline passed (only when the trigger was given one)."""

    txid: str


TransactionEvent = (TransactionConfirmedEvent | TransactionReorgedEvent | TransactionReplacedEvent
                    | TransactionDroppedEvent | TransactionStuckEvent | TransactionErrorEvent | TransactionTimeoutEvent)


class TransactionConfirmedTrigger(PollingTrigger):
    """Polls the wallet (``gettransaction``, ``getmempoolentry``) for a settlement's txids — the
    current transaction first, then the ones it replaced — and yields ONE :data:`TransactionEvent`,
    whichever comes first: confirmed, reorged, replaced, dropped, stuck (``bump_at``, epoch seconds,
    passed), or error. ``seen_blocks`` (txid -> block hash) is how a reorg is noticed, also across
    the operator's re-deferrals. Transient errors (node down, warming up) are polled again.
    """

    fields = ("txids", "confirmations", "conn_id", "wallet", "bump_at", "seen_blocks")
    system = SYSTEM

    def __init__(self, txids: list[str], confirmations: int = 1, conn_id: str = "tributary_bitcoin",
                 wallet: str | None = None, bump_at: float | None = None, seen_blocks: dict[str, str] | None = None,
                 *, poll_interval: float = 30.0, timeout: float | None = None, deadline: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout, deadline=deadline)
        if not txids:
            raise ValueError("TransactionConfirmedTrigger needs at least one txid")
        self.txids = list(txids)
        self.confirmations = max(1, int(confirmations))
        self.conn_id = conn_id
        self.wallet = wallet
        self.bump_at = bump_at
        self.seen_blocks = dict(seen_blocks or {})

    def make_hook(self) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(self.conn_id, wallet=self.wallet)

    def event_context(self) -> dict[str, Any]:
        return {"txid": self.txids[0]}

    def poll(self, hook: Any) -> TransactionEvent | None:
        from tributary.bitcoin.hook import BitcoinRpcError

        states: dict[str, dict[str, Any]] = {}
        for txid in self.txids:
            try:
                states[txid] = hook.get_transaction(txid)
            except BitcoinRpcError as exc:
                if exc.code != -5:  # -5: not a wallet transaction (any more)
                    raise
        confirmed = {t: s for t, s in states.items() if int(s.get("confirmations") or 0) > 0}
        for txid, block in list(self.seen_blocks.items()):
            now = confirmed.get(txid)
            if now is None or now.get("blockhash") != block:
                return {"status": Status.REORGED, "txid": txid, "orphaned_block": block,
                        "blockhash": now.get("blockhash") if now else None,
                        "in_mempool": self._in_mempool(hook, txid) if now is None else None}
        if confirmed:
            txid, state = max(confirmed.items(), key=lambda item: int(item[1]["confirmations"]))
            depth = int(state["confirmations"])
            if depth >= self.confirmations:
                return {"status": Status.CONFIRMED, "txid": txid, "confirmations": depth,
                        "blockhash": state.get("blockhash"), "blockheight": state.get("blockheight")}
            self.seen_blocks = {txid: state["blockhash"]}
            self.log.info("%s has %d of %d confirmations", txid, depth, self.confirmations)
            return None
        current = self.txids[0]
        replacement = (states.get(current) or {}).get("replaced_by_txid")
        if replacement and replacement not in self.txids:
            return {"status": Status.REPLACED, "txid": current, "replaced_by": replacement}
        if not any(self._in_mempool(hook, t) for t in self.txids):
            return {"status": Status.DROPPED, "txid": current, "in_mempool": False}
        if self.bump_at is not None and time.time() >= self.bump_at:
            return {"status": Status.STUCK, "txid": current, "confirmations": 0, "bump_at": self.bump_at}
        self.log.info("%s unconfirmed, in the mempool", current)
        return None

    @staticmethod
    def _in_mempool(hook: Any, txid: str) -> bool:
        from tributary.bitcoin.hook import BitcoinRpcError

        try:
            hook.call("getmempoolentry", txid, wallet="")
        except BitcoinRpcError as exc:
            if exc.code == -5:
                return False
            raise
        return True


# --------------------------------------------------------------------------- new chain tip
class NewTipEvent(TypedDict):
    """The node's best block is no longer ``previous``."""

    status: Literal[Status.NEW_TIP]
    hash: str
    height: int
    time: int  # the block header's time, epoch seconds
    previous: str | None


class NewTipTimeoutEvent(TimeoutEvent):
    """No new tip by the deadline."""

    previous: str | None


class NewTipErrorEvent(ErrorEvent):
    """A permanent failure reading the node (bad credentials, wrong chain, ...)."""

    previous: str | None


class NewTipTrigger(PollingTrigger):
    """Fires once the node's best block hash differs from ``last_tip`` (``getbestblockhash`` every
    ``poll_interval`` seconds): a :class:`NewTipEvent`, or a :class:`NewTipTimeoutEvent` at the
    deadline (``timeout`` seconds from when the operator deferred, one hour by default), or a
    :class:`NewTipErrorEvent`. Transient failures (node down, warming up) are polled again until the
    deadline. It only reads the node, so the triggerer may run it twice.
    """

    fields = ("last_tip", "conn_id")
    system = SYSTEM

    def __init__(self, last_tip: str | None, *, conn_id: str = "tributary_bitcoin", poll_interval: float = 15.0,
                 timeout: float | None = 3600.0, deadline: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout, deadline=deadline)
        self.last_tip = last_tip
        self.conn_id = conn_id

    def make_hook(self) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(self.conn_id)

    def poll(self, hook: Any) -> NewTipEvent | None:
        best = hook.get_best_block_hash()
        if best == self.last_tip:
            return None
        header = hook.get_block_header(best)  # only when the tip moved: one call per poll otherwise
        return {"status": Status.NEW_TIP, "hash": best, "height": int(header["height"]), "time": int(header["time"]),
                "previous": self.last_tip}

    def event_context(self) -> dict[str, Any]:
        return {"previous": self.last_tip}
