"""Wait for a Stacks transaction of ``stacks_contract_execution`` in the triggerer (deferrable), then
record its outcome in the ``stacks_transactions`` ledger.

The operator takes the ``execute`` task's answer (``outcome``): a read result passes through; a
transaction record (request id, txid) is checked once and, when it is not in a block yet and ``wait``
is on, the task defers to :class:`~tributary.stacks.triggers.StacksTransactionTrigger` and frees its
worker slot. Every failure is classified (``tributary.core.failfast``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tributary.core.errors import PermanentError, TransientError
from tributary.core.failfast import raise_classified


class AwaitStacksTransactionOperator(BaseOperator):
    template_fields: Sequence[str] = ("outcome",)
    ui_color = "#5546ff"

    def __init__(self, *, outcome: Any, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome = outcome
        self.deferrable = deferrable

    def _finish(self, request: Any) -> dict[str, Any]:
        """Store the (already mined) outcome and return the ledger row; aborted -> permanent."""
        from tributary.stacks import execution
        from tributary.stacks.hook import StacksHook
        from tributary.storage.warehouse import connect

        with connect() as conn:
            final = execution.await_outcome(self.outcome, request, StacksHook(request.conn_id), conn)
        self.log.info("txid %s %s at height %s: %s", final["txid"], final["status"], final["block_height"],
                      final["result_repr"])
        return final

    def execute(self, context: Any) -> Any:
        try:
            return self._execute(context)
        except Exception as exc:
            raise_classified(exc, "stacks")
            raise

    def _execute(self, context: Any) -> Any:
        from tributary.stacks import execution, ledger
        from tributary.stacks.hook import StacksHook
        from tributary.stacks.triggers import StacksTransactionTrigger
        from tributary.storage.warehouse import connect

        request = execution.ExecutionRequest.from_params(context["params"])
        if self.outcome.get("action") == "read" or not request.wait:
            return self.outcome
        with connect() as conn:
            row = ledger.get(conn, self.outcome["request_id"]) or self.outcome
        if row["status"] in ledger.FINAL_STATUSES or not self.deferrable:
            return self._finish(request)
        if StacksHook(request.conn_id).get_transaction(row["txid"]) is not None:
            return self._finish(request)
        self.log.info("txid %s is not in a block yet: deferring to the triggerer (no worker slot held)",
                      row["txid"])
        self.defer(trigger=StacksTransactionTrigger(request.conn_id, row["txid"],
                                                    poll_interval=request.poll_interval,
                                                    timeout=request.wait_timeout),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from tributary.stacks import execution

        try:
            request = execution.ExecutionRequest.from_params(context["params"])
            status = event.get("status")
            if status == "mined":
                return self._finish(request)
            if status == "timeout":
                raise TransientError(f"transaction {event.get('txid')} is not in a block after "
                                     f"{request.wait_timeout}s", system="stacks", reason="tx:not_mined_yet")
            raise PermanentError(f"waiting for {event.get('txid')} failed: {event.get('message')}",
                                 system="stacks", reason=str(event.get("reason") or "trigger_error"))
        except Exception as exc:
            raise_classified(exc, "stacks")
            raise
