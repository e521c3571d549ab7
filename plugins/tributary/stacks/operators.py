"""Wait for a Stacks transaction of ``stacks_contract_execution`` in the triggerer (deferrable), then
record its outcome in the ``stacks_transactions`` ledger.

The operator takes the ``execute`` task's answer (``outcome``): a read result passes through; a
transaction record (request id, txid) is checked once and, when it is not in a block yet and ``wait``
is on, the task defers to :class:`~tributary.stacks.triggers.StacksTransactionTrigger` and frees its
worker slot; on its event it dispatches on :class:`~tributary.core.triggers.Status`. The steps are
the domain functions of :mod:`tributary.stacks.execution`. Every failure is classified
(``tributary.core.failfast``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tributary.core.failfast import raise_classified
from tributary.stacks import SYSTEM
from tributary.storage import WAREHOUSE_CONN_ID


class AwaitStacksTransactionOperator(BaseOperator):
    template_fields: Sequence[str] = ("outcome",)
    ui_color = "#5546ff"

    def __init__(self, *, outcome: Any, deferrable: bool = True, warehouse_conn_id: str = WAREHOUSE_CONN_ID,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome = outcome
        self.deferrable = deferrable
        self.warehouse_conn_id = warehouse_conn_id

    def _finish(self, request: Any) -> dict[str, Any]:
        """Store the (already confirmed) outcome and return the ledger row; aborted -> permanent."""
        from tributary.stacks import execution
        from tributary.stacks.hook import StacksHook

        final = execution.finish(self.outcome, request, StacksHook(request.conn_id),
                                 warehouse_conn_id=self.warehouse_conn_id)
        self.log.info("txid %s %s at height %s: %s", final["txid"], final["status"], final["block_height"],
                      final["result_repr"])
        return final

    def execute(self, context: Any) -> Any:
        try:
            return self._execute(context)
        except Exception as exc:
            raise_classified(exc, SYSTEM)

    def _execute(self, context: Any) -> Any:
        from tributary.stacks import execution
        from tributary.stacks.hook import StacksHook
        from tributary.stacks.triggers import StacksTransactionTrigger

        request = execution.ExecutionRequest.from_params(context["params"])
        if self.outcome.get("action") == "read" or not request.wait:
            return self.outcome
        if not self.deferrable:
            return self._finish(request)
        txid = execution.pending_txid(self.outcome, StacksHook(request.conn_id),
                                      warehouse_conn_id=self.warehouse_conn_id)
        if txid is None:
            return self._finish(request)
        self.log.info("txid %s is not in a block yet: deferring to the triggerer (no worker slot held)", txid)
        self.defer(trigger=StacksTransactionTrigger(request.conn_id, txid, poll_interval=request.poll_interval,
                                                    timeout=request.wait_timeout),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from tributary.core.errors import TransientError
        from tributary.core.triggers import Status, error_from_event
        from tributary.stacks import execution

        try:
            request = execution.ExecutionRequest.from_params(context["params"])
            status = Status(event["status"])
            if status is Status.CONFIRMED:
                return self._finish(request)
            if status is Status.ERROR:
                raise_classified(error_from_event(event, SYSTEM), SYSTEM)
            # Status.TIMEOUT: not in a block by the deadline; the retry re-checks the ledger and defers again.
            raise TransientError(f"transaction {event.get('txid')} is not in a block after "
                                 f"{request.wait_timeout}s", system=SYSTEM, reason="tx:not_mined_yet")
        except Exception as exc:
            raise_classified(exc, SYSTEM)
