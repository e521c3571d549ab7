"""``EvmContractOperator``: deploy a compiled contract, call a view function, or send a transaction
and wait for its receipt in the triggerer (deferrable), with the ledger making every retry safe.

No web3 / eth-* import at module level: DAG files import this module while they are parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tributary.core.failfast import raise_classified
from tributary.evm.errors import SYSTEM, translate

MAX_BROADCASTS = 5


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
    with the result or the receipt; never the key.
    """

    template_fields: Sequence[str] = ("contract", "function", "args", "value_wei", "idempotency_key", "action",
                                      "address", "confirmations", "conn_id")

    def __init__(self, *, contract: str, function: str | None = None, args: Any = None, value_wei: Any = 0,
                 action: str = "call", address: str | None = None, idempotency_key: str | None = None,
                 confirmations: Any = None, conn_id: str = "tributary_evm", receipt_timeout: float = 900.0,
                 **kwargs: Any) -> None:
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

    # ----------------------------------------------------------------- helpers
    def _hook(self) -> Any:
        from tributary.evm.hook import EvmHook

        return EvmHook(self.conn_id)

    def _depth(self, hook: Any) -> int:
        return int(self.confirmations) if self.confirmations not in (None, "", "None") else hook.confirmations

    def _sender(self, hook: Any) -> Any:
        from tributary.evm.transactions import TransactionSender
        from tributary.storage.warehouse import connect, ensure_schema

        def connect_ready() -> Any:
            conn = connect()
            ensure_schema(conn)
            return conn

        sender = TransactionSender(hook, connect_ready)
        self._senders.append(sender)
        return sender

    def _close(self) -> None:
        for sender in getattr(self, "_senders", []):
            sender.nonces.close()
        self._senders = []

    def _defer(self, hook: Any, row: dict[str, Any], reorgs: int = 0) -> None:
        from tributary.evm.triggers import EvmReceiptTrigger

        self.defer(trigger=EvmReceiptTrigger(self.conn_id, row["tx_hash"], confirmations=self._depth(hook),
                                             poll_interval=hook.poll_interval, timeout=self.receipt_timeout,
                                             reorgs=reorgs),
                   method_name="execute_complete")

    # ----------------------------------------------------------------- execute
    def execute(self, context: Any) -> Any:
        self._senders: list[Any] = []
        try:
            return self._execute(context)
        except Exception as exc:
            raise_classified(translate(exc), SYSTEM)
        finally:
            self._close()

    def _execute(self, context: Any) -> Any:
        from tributary.evm import contracts, deployments
        from tributary.evm.errors import InvalidArguments
        from tributary.evm.transactions import TxRequest

        artifact = contracts.load_artifact(self.contract)
        args = list(self.args or [])
        value = contracts.normalize_arg({"type": "uint256"}, self.value_wei or 0, "value_wei")
        hook = self._hook()
        if self.action == "deploy":
            entry = artifact.constructor()
            data = artifact.bytecode + contracts.encode_call(entry, args, f"{artifact.name} constructor")[2:]
            if value and entry.get("stateMutability") != "payable":
                raise InvalidArguments(f"{artifact.name} constructor is not payable; value_wei must be 0")
            chain_id = hook.check_chain()
            sender = self._sender(hook)
            existing = deployments.find(sender.nonces.conn, artifact.name, chain_id, artifact.artifact_sha256)
            if existing:
                self.log.info("%s (build %s) is already deployed on chain %d at %s", artifact.name,
                              artifact.artifact_sha256[:12], chain_id, existing["address"])
                return {"action": "deploy", "contract": artifact.name, "chain_id": chain_id, "already_deployed": True,
                        **{k: existing[k] for k in ("address", "tx_hash", "artifact_sha256", "block_number")}}
            key = self.idempotency_key or f"deploy:{artifact.name}:{chain_id}:{artifact.artifact_sha256}"
            row = sender.submit(TxRequest(idempotency_key=key, kind="deploy", data=data, value=value,
                                          contract_name=artifact.name, args=args))
            return self._after_submit(hook, sender, row)

        if not self.function:
            raise InvalidArguments("action 'call' needs a function name")
        entry = artifact.function(self.function, args)
        label = f"{artifact.name}.{self.function}"
        data = contracts.encode_call(entry, args, label)  # ABI check: nothing signed before this passes
        if value and entry.get("stateMutability") != "payable":
            raise InvalidArguments(f"{label} is not payable; value_wei must be 0")
        chain_id = hook.check_chain()
        address = self.address
        sender = None
        if not address:
            sender = self._sender(hook)
            deployed = deployments.find(sender.nonces.conn, artifact.name, chain_id)
            if not deployed:
                raise InvalidArguments(f"{artifact.name} is not deployed on chain {chain_id}: deploy it first"
                                       " (action=deploy) or pass an address")
            address = deployed["address"]
        address = contracts.normalize_arg({"type": "address"}, address, "address")
        if contracts.is_read_only(entry):
            output = hook.eth_call({"to": address, "data": data})
            result = contracts.decode_output(entry, output)
            self.log.info("%s(...) at %s -> %s", label, address, result)
            return {"action": "call", "contract": artifact.name, "function": self.function, "address": address,
                    "chain_id": chain_id, "read_only": True, "result": result}
        sender = sender or self._sender(hook)
        ti = context["ti"]
        key = self.idempotency_key or f"{ti.dag_id}:{ti.run_id}:{ti.task_id}"
        row = sender.submit(TxRequest(idempotency_key=key, kind="call", data=data, to=address, value=value,
                                      contract_name=artifact.name, function_name=self.function, args=args))
        return self._after_submit(hook, sender, row)

    def _after_submit(self, hook: Any, sender: Any, row: dict[str, Any]) -> Any:
        self.log.info("transaction %s (nonce %s) for key %s is %s", row["tx_hash"], row["nonce"],
                      row["idempotency_key"], row["status"])
        if row["status"] in ("confirmed", "failed"):
            return self._result(sender, row)
        self._defer(hook, row, reorgs=row["reorgs"])
        return None

    def _result(self, sender: Any, row: dict[str, Any]) -> dict[str, Any]:
        from tributary.evm import contracts, deployments
        from tributary.evm.errors import ContractReverted

        if row["status"] == "failed":
            raise ContractReverted(f"transaction {row['tx_hash']} reverted on chain (block {row['block_number']})",
                                   "reverted on chain")
        result: dict[str, Any] = {
            "action": "deploy" if row["kind"] == "deploy" else "transact", "contract": row["contract_name"],
            "function": row["function_name"], "chain_id": row["chain_id"], "idempotency_key": row["idempotency_key"],
            "tx_hash": row["tx_hash"], "nonce": row["nonce"], "from": row["from_address"], "to": row["to_address"],
            "value_wei": str(row["value_wei"]), "status": row["status"], "block_number": row["block_number"],
            "block_hash": row["block_hash"], "gas_used": row["gas_used"], "confirmations": row["confirmations"],
            "reorgs": row["reorgs"], "broadcasts": row["broadcasts"],
        }
        if row["kind"] == "deploy":
            artifact = contracts.load_artifact(row["contract_name"])
            registered = deployments.record(sender.nonces.conn, name=artifact.name, chain_id=row["chain_id"],
                                            artifact_sha256=artifact.artifact_sha256,
                                            address=contracts.normalize_arg({"type": "address"},
                                                                            row["contract_address"], "address"),
                                            tx_hash=row["tx_hash"], deployer=row["from_address"],
                                            block_number=row["block_number"], constructor_args=row["args"])
            result.update(address=registered["address"], artifact_sha256=artifact.artifact_sha256,
                          already_deployed=False)
        else:
            receipt = sender.hook.get_receipt(row["tx_hash"]) or {}
            events = []
            artifact = contracts.load_artifact(row["contract_name"])
            known = artifact.events()
            for log in receipt.get("logs", []):
                event = known.get(log["topics"][0]) if log["topics"] else None
                if event:
                    events.append({"event": event["name"], "log_index": int(log["logIndex"], 16),
                                   "args": contracts.decode_log(event, log["topics"], log["data"])})
            result["events"] = events
        return result

    def execute_complete(self, context: Any, event: dict[str, Any], **_: Any) -> Any:
        self._senders = []
        try:
            return self._complete(event)
        except Exception as exc:
            raise_classified(translate(exc), SYSTEM)
        finally:
            self._close()

    def _complete(self, event: dict[str, Any]) -> Any:
        from tributary.core.errors import TransientError

        hook = self._hook()
        sender = self._sender(hook)
        ledger = sender.ledger
        row = ledger.get_by_hash(event["tx_hash"])
        if row is None:
            raise TransientError(f"no ledger row for {event['tx_hash']}", system=SYSTEM, reason="evm:stale_event")
        chain_id, key = row["chain_id"], row["idempotency_key"]
        status = event.get("status")
        if event.get("reorgs", 0) > row["reorgs"]:
            ledger.update(chain_id, key, reorgs=event["reorgs"])
        if status == "confirmed":
            receipt = event["receipt"]
            if row["tx_hash"] != event["tx_hash"]:
                raise TransientError(f"event for {event['tx_hash']} but the ledger holds {row['tx_hash']}",
                                     system=SYSTEM, reason="evm:stale_event")
            row = ledger.record_receipt(chain_id, key, receipt, confirmations=event["confirmations"], final=True)
            return self._result(sender, row)
        if status == "dropped":
            if row["broadcasts"] >= MAX_BROADCASTS:
                raise TransientError(f"transaction {row['tx_hash']} dropped {row['broadcasts']} times",
                                     system=SYSTEM, reason="evm:dropped")
            self.log.warning("transaction %s is unknown to the node (reorg or drop): broadcasting it again",
                             row["tx_hash"])
            ledger.mark_reorged(chain_id, key)
            row = sender.rebroadcast(ledger.get(chain_id, key))
            self._defer(hook, row, reorgs=row["reorgs"])
            return None
        raise TransientError(f"no final receipt for {row['tx_hash']}: {status}", system=SYSTEM,
                             reason=f"evm:receipt_{status}")
