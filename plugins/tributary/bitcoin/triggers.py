"""Deferrable triggers for Bitcoin waits. Side-effect free: they only read the node, and may run twice.

:class:`TransactionConfirmedTrigger` polls the wallet (``gettransaction``, ``getmempoolentry``) for a
set of txids — the current transaction of a settlement first, then the ones it replaced — and
yields ONE event, whichever comes first:

* ``confirmed``  one of the txids has the required confirmations (an old one may win the RBF race)
* ``reorged``    a txid seen in a block lost it (confirmations back to 0, or moved to another block)
* ``replaced``   the current txid was replaced by a transaction the trigger does not know
* ``dropped``    the current txid is neither confirmed nor in the mempool (evicted, node restarted)
* ``stuck``      nothing confirmed by ``bump_at`` (epoch seconds): time for a fee bump
* ``error``      a permanent error reading the node (unknown wallet, bad credentials, ...)

Transient errors (node down, warming up) are logged and polled again. The synchronous
:class:`~tributary.bitcoin.hook.BitcoinCoreHook` runs in a thread (``asyncio.to_thread``), so the
triggerer's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class TransactionConfirmedTrigger(BaseTrigger):
    def __init__(self, txids: list[str], confirmations: int = 1, conn_id: str = "tributary_bitcoin",
                 wallet: str | None = None, poll_interval: float = 30.0, bump_at: float | None = None,
                 seen_blocks: dict[str, str] | None = None) -> None:
        super().__init__()
        if not txids:
            raise ValueError("TransactionConfirmedTrigger needs at least one txid")
        self.txids = list(txids)
        self.confirmations = max(1, int(confirmations))
        self.conn_id = conn_id
        self.wallet = wallet
        self.poll_interval = float(poll_interval)
        self.bump_at = bump_at
        self.seen_blocks = dict(seen_blocks or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "txids": self.txids, "confirmations": self.confirmations, "conn_id": self.conn_id,
            "wallet": self.wallet, "poll_interval": self.poll_interval, "bump_at": self.bump_at,
            "seen_blocks": self.seen_blocks,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from tributary.core.errors import classify

        hook = None
        while True:
            try:
                if hook is None:
                    hook = await asyncio.to_thread(self._hook)
                event = await asyncio.to_thread(self.poll, hook)
            except Exception as exc:
                classification = classify(exc)
                if not classification.retryable:
                    yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"[:1000],
                                        "error_class": str(classification.error_class),
                                        "reason": classification.reason, "txid": self.txids[0]})
                    return
                self.log.warning("polling %s failed (%s), will retry: %s", self.txids[0], classification.reason, exc)
                event = None
            if event is not None:
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_interval)

    def _hook(self) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(self.conn_id, wallet=self.wallet)

    def poll(self, hook: Any) -> dict[str, Any] | None:
        """One look at the node; the event to yield, or None to keep waiting. Blocking (run in a thread)."""
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
                return {"status": "reorged", "txid": txid, "orphaned_block": block,
                        "blockhash": now.get("blockhash") if now else None,
                        "in_mempool": self._in_mempool(hook, txid) if now is None else None}
        if confirmed:
            txid, state = max(confirmed.items(), key=lambda item: int(item[1]["confirmations"]))
            depth = int(state["confirmations"])
            if depth >= self.confirmations:
                return {"status": "confirmed", "txid": txid, "confirmations": depth,
                        "blockhash": state.get("blockhash"), "blockheight": state.get("blockheight")}
            self.seen_blocks = {txid: state["blockhash"]}
            self.log.info("%s has %d of %d confirmations", txid, depth, self.confirmations)
            return None
        current = self.txids[0]
        replacement = (states.get(current) or {}).get("replaced_by_txid")
        if replacement and replacement not in self.txids:
            return {"status": "replaced", "txid": current, "replaced_by": replacement}
        if not any(self._in_mempool(hook, t) for t in self.txids):
            return {"status": "dropped", "txid": current, "in_mempool": False}
        if self.bump_at is not None and time.time() >= self.bump_at:
            return {"status": "stuck", "txid": current, "confirmations": 0, "bump_at": self.bump_at}
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
