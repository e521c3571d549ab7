"""``EvmContractOperator``: deploy a compiled contract, call a view function, or send a transaction
and wait for its receipt in the triggerer (deferrable), with the ledger making every retry safe.

The steps (validate, execute, await) are the domain functions of :mod:`tributary.evm.execution`;
this operator wires them to Airflow: it defers to :class:`~tributary.evm.triggers.EvmReceiptTrigger`
and dispatches on the event's :class:`~tributary.core.triggers.Status`.

No web3 / eth-* import at module level: DAG files import this module while they are parsed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseOperator

from tributary.core.failfast import raise_classified
from tributary.evm import SYSTEM
from tributary.storage import WAREHOUSE_CONN_ID


class EvmContractOperator(BaseOperator):
    """Run ``action`` on contract ``contract`` (a build in ``include/contracts/build``).

    * ``action="call"``: ``function(*args)``. A view/pure function is an ``eth_call`` whose decoded
      result is returned; any other function is a transaction (signed locally, nonce-managed) whose
      receipt is awaited ``confirmations`` blocks deep by :class:`EvmReceiptTrigger`.
    * ``action="deploy"``: deploy the build with constructor ``args``, once per (name, chain, build):
      a second deploy returns the registered address.

    ``address`` defaults to the newest registered deployment of ``contract`` on the chain.
    ``idempotency_key`` defaults to ``<dag_id>:<run_id>:<task_id>`` (so a retry never sends twice).
    Arguments are checked against the ABI before anything is signed. Returned (XCom): a JSON dict
    with the result or the receipt; never the key. The ledger and the nonces live in the warehouse
    of ``warehouse_conn_id``.
    """

    template_fields: Sequence[str] = ("contract", "function", "args", "value_wei", "idempotency_key", "action",
                                      "address", "confirmations", "conn_id")

    def __init__(self, *, contract: str, function: str | None = None, args: Any = None, value_wei: Any = 0,
                 action: str = "call", address: str | None = None, idempotency_key: str | None = None,
                 confirmations: Any = None, conn_id: str = "tributary_evm", receipt_timeout: float = 900.0,
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contract = contract
        self.function = function
        self.args = args
        self.value_wei = value_wei
        self.action = action
        self.address = address
        self.idempotency_key = idempotency_key
        self.confirmations = confirmations
        self.conn_id = conn_id
        self.receipt_timeout = receipt_timeout
        self.warehouse_conn_id = warehouse_conn_id

    # ----------------------------------------------------------------- helpers
    def _hook(self) -> Any:
        from tributary.evm.hook import EvmHook

        return EvmHook(self.conn_id)

    def _depth(self, hook: Any) -> int:
        return int(self.confirmations) if self.confirmations not in (None, "", "None") else hook.confirmations

    @contextmanager
    def _step(self) -> Iterator[tuple[Any, Any]]:
        """The hook and a transaction sender on the warehouse (connected on first use, closed at the
        end); any failure inside is classified for Airflow (defer passes through)."""
        from tributary.evm.errors import translate
        from tributary.evm.transactions import TransactionSender
        from tributary.storage.warehouse import WarehouseHook

        sender = None
        try:
            hook = self._hook()
            sender = TransactionSender(hook, WarehouseHook(self.warehouse_conn_id).get_conn)
            yield hook, sender
        except Exception as exc:
            raise_classified(translate(exc), SYSTEM)
        finally:
            if sender is not None:
                sender.nonces.close()

    def _defer(self, hook: Any, row: dict[str, Any]) -> None:
        from tributary.evm.triggers import EvmReceiptTrigger

        self.defer(trigger=EvmReceiptTrigger(self.conn_id, row["tx_hash"], confirmations=self._depth(hook),
                                             poll_interval=hook.poll_interval, timeout=self.receipt_timeout,
                                             reorgs=row["reorgs"]),
                   method_name="execute_complete")

    # ----------------------------------------------------------------- validate, execute, defer
    def execute(self, context: Any) -> Any:
        from tributary.evm import execution

        with self._step() as (hook, sender):
            plan = execution.validate(execution.ExecutionRequest(
                contract=self.contract, action=self.action, function=self.function, args=self.args,
                value_wei=self.value_wei))
            ti = context.get("ti")
            done = execution.execute(plan, hook, sender, address=self.address, idempotency_key=self.idempotency_key,
                                     run_key=f"{ti.dag_id}:{ti.run_id}:{ti.task_id}" if ti else None)
            if done.pending is None:
                return done.result
            self._defer(hook, done.pending)

    # ----------------------------------------------------------------- await
    def execute_complete(self, context: Any, event: dict[str, Any], **_: Any) -> Any:
        from tributary.core.errors import TransientError
        from tributary.core.triggers import Status, error_from_event
        from tributary.evm import execution

        status = Status(event["status"])
        if status is Status.ERROR:
            raise_classified(error_from_event(event, SYSTEM), SYSTEM)
        with self._step() as (hook, sender):
            row = execution.event_row(sender, event)
            if status is Status.CONFIRMED:
                return execution.confirm(sender, row, event)
            if status is Status.DROPPED:
                self._defer(hook, execution.rebroadcast_dropped(sender, row))  # raises TaskDeferred
            # Status.TIMEOUT: nothing final by the deadline; a retry resumes from the ledger.
            raise TransientError(f"no final receipt for {row['tx_hash']}: {status}", system=SYSTEM,
                                 reason=f"evm:receipt_{status}")
