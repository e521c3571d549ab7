"""Bitcoin operators: the deferrable tasks of the Bitcoin DAGs (settlement confirmation, new-tip wait)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.triggers import NewTipTrigger, TransactionConfirmedTrigger
from tributary.core.errors import DataError
from tributary.core.failfast import raise_classified
from tributary.core.triggers import Status, error_from_event
from tributary.storage import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    from tributary.bitcoin.settlement import SettlementConfig


# --------------------------------------------------------------------------- new chain tip
class WaitForNewTipOperator(BaseOperator):
    """Returns ``{"hash", "height", "time", "previous", "waited"}`` of a tip newer than the last seen one.

    ``last_tip`` (a block hash) overrides the last seen tip read from ``btc_block_stats`` for
    ``chain_label`` (default: the node's chain name). With nothing seen yet it returns the current tip.
    When the node is already past the last seen tip it returns at once; otherwise it defers to
    :class:`~tributary.bitcoin.triggers.NewTipTrigger`, so the wait costs a triggerer coroutine, not a
    worker slot. No new block within ``timeout`` seconds: the task is skipped (and so is what depends on it).
    """

    template_fields: Sequence[str] = ("conn_id", "last_tip", "chain_label", "poll_interval", "timeout")
    ui_color = "#f7931a"

    def __init__(self, *, conn_id: str = "tributary_bitcoin", last_tip: str | None = None,
                 chain_label: str | None = None, poll_interval: float = 15.0, timeout: float = 1800.0,
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.last_tip = last_tip
        self.chain_label = chain_label
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.warehouse_conn_id = warehouse_conn_id

    def _last_seen(self, hook: Any) -> str | None:
        if self.last_tip:
            return str(self.last_tip)
        from tributary.bitcoin.block_stats import last_seen_tip

        chain = self.chain_label or hook.chain_name()
        seen = last_seen_tip(chain=chain, warehouse_conn_id=self.warehouse_conn_id)
        if seen:
            self.log.info("last seen tip of %s: height %d %s (btc_block_stats)", chain, *seen)
        return seen[1] if seen else None

    def execute(self, context: Any) -> dict[str, Any]:
        from tributary.bitcoin.hook import BitcoinCoreHook

        try:
            hook = BitcoinCoreHook(self.conn_id)
            last = self._last_seen(hook)
            best = hook.get_best_block_hash()
            if best != last:
                header = hook.get_block_header(best)
                self.log.info("tip %d %s is already past the last seen %s: no wait", header["height"], best, last)
                return {"hash": best, "height": int(header["height"]), "time": int(header["time"]),
                        "previous": last, "waited": False}
            poll, timeout = float(self.poll_interval), float(self.timeout)
            self.log.info("waiting for a block after %s: deferring to the triggerer (no worker slot held), "
                          "polling every %gs for up to %gs", last, poll, timeout)
            # The trigger's deadline is fixed now; the task's own deferral timeout is a backstop behind it.
            self.defer(trigger=NewTipTrigger(last, conn_id=self.conn_id, poll_interval=poll, timeout=timeout),
                       method_name="execute_complete", timeout=timedelta(seconds=timeout + max(120.0, 4 * poll)))
        except Exception as exc:
            raise_classified(exc, SYSTEM)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        event = dict(event or {})
        status = event.get("status")
        if status == Status.NEW_TIP:
            self.log.info("new tip %d %s (after %s)", event["height"], event["hash"], event.get("previous"))
            return {"hash": event["hash"], "height": int(event["height"]), "time": int(event["time"]),
                    "previous": event.get("previous"), "waited": True}
        if status == Status.TIMEOUT:
            raise AirflowSkipException(f"no block after {event.get('previous')} within {self.timeout}s")
        if status == Status.ERROR:
            raise_classified(error_from_event(event, SYSTEM), SYSTEM)
        raise_classified(DataError(f"unexpected trigger event {event!r:.200}", system=SYSTEM,
                                   reason="unexpected_event"), SYSTEM)


# --------------------------------------------------------------------------- settlement confirmation
class SettlementConfirmationOperator(BaseOperator):
    """Waits (deferred, no worker slot) until a settlement's transaction has N confirmations.

    Defers on :class:`~tributary.bitcoin.triggers.TransactionConfirmedTrigger` with the settlement's
    current plan (:func:`~tributary.bitcoin.settlement.confirmation_plan`). Each wake-up records the
    trigger's event in the ledger and acts on it (RBF after ``bump_after_minutes``, adopt a
    replacement, re-broadcast after a reorg or a drop: :func:`~tributary.bitcoin.settlement.apply_event`),
    then defers again on the settlement's current set of txids; an error event fails the task with its
    class. Returns the settlement's summary. The DAG param ``poll_interval_seconds``, when set,
    overrides ``poll_interval``.
    """

    template_fields: Sequence[str] = ("settlement_id",)
    ui_color = "#f7931a"

    def __init__(self, *, settlement_id: str, conn_id: str = "tributary_bitcoin",
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, poll_interval: float = 30.0,
                 wait_timeout: timedelta = timedelta(days=2), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settlement_id = settlement_id
        self.conn_id = conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def _config(self) -> SettlementConfig:
        from tributary.bitcoin.settlement import SettlementConfig  # heavy (Postgres provider): not at DAG parse

        return SettlementConfig(self.conn_id, self.warehouse_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            from tributary.bitcoin.settlement import confirmation_plan

            plan = confirmation_plan(self.settlement_id, config=self._config())
        except Exception as exc:
            raise_classified(exc, SYSTEM)
        return self._wait(plan, context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = dict(event or {})
        self.log.info("settlement %s: trigger event %s", self.settlement_id, event)
        if event.get("status") == Status.ERROR:
            raise_classified(error_from_event(event, SYSTEM), SYSTEM)
        try:  # the chain events; anything else is refused there as an unexpected event
            from tributary.bitcoin.settlement import apply_event

            plan = apply_event(self.settlement_id, event, run_id=context["run_id"], config=self._config())
        except Exception as exc:
            raise_classified(exc, SYSTEM)
        return self._wait(plan, context)

    def _wait(self, plan: Mapping[str, Any], context: Any) -> dict[str, Any]:
        if "done" in plan:
            done = plan["done"]
            self.log.info("settlement %s: confirmed in %s (%s confirmations)", self.settlement_id, done["txid"],
                          done["confirmations"])
            return dict(done)
        bump = (f", fee bump at {time.strftime('%H:%M:%S', time.gmtime(plan['bump_at']))} UTC"
                if plan["bump_at"] else "")
        self.log.info("settlement %s: waiting for %s confirmation(s) of %s%s", self.settlement_id,
                      plan["confirmations"], plan["txids"], bump)
        params = context.get("params") or {}
        trigger = TransactionConfirmedTrigger(
            list(plan["txids"]), int(plan["confirmations"]), conn_id=self.conn_id, wallet=plan.get("wallet"),
            bump_at=plan.get("bump_at"), seen_blocks=dict(plan.get("seen_blocks") or {}),
            poll_interval=float(params.get("poll_interval_seconds") or self.poll_interval))
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self.wait_timeout)
