"""What ``evm_contract_execution`` does, step by step, in the same shape as Stacks' execution:

1. :func:`validate` a request against the contract's ABI (nothing signed, no node asked);
2. :func:`execute` it: a view call answers at once, a deploy already registered is a no-op, anything
   else is signed and sent once per idempotency key (:class:`~tributary.evm.transactions.TransactionSender`);
3. await the receipt (the operator defers to :class:`~tributary.evm.triggers.EvmReceiptTrigger`),
   then :func:`confirm` it, or :func:`rebroadcast_dropped` when the node lost the transaction.

The operator only wires these steps to Airflow (defer, classify); the warehouse is reached through
the sender's connection (``WarehouseHook``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tributary.core.errors import SecurityError, TransientError
from tributary.evm import SYSTEM, contracts, deployments
from tributary.evm.contracts import Artifact
from tributary.evm.errors import ContractReverted, InvalidArguments
from tributary.evm.hook import EvmHook
from tributary.evm.transactions import TransactionSender, TxRequest

log = logging.getLogger(__name__)

ACTIONS = ("call", "deploy")
ALLOWED_CONTRACTS_VARIABLE = "tributary_allowed_contracts"
MAX_BROADCASTS = 5  # a transaction dropped this often fails (transiently) instead of looping


@dataclass(frozen=True)
class ExecutionRequest:
    contract: str
    action: str = "call"
    function: str | None = None
    args: list[Any] = field(default_factory=list)
    value_wei: Any = 0


@dataclass(frozen=True)
class Plan:
    """A valid request: the artifact, the ABI entry and the encoded call data."""

    action: str
    artifact: Artifact
    entry: dict[str, Any]
    args: list[Any]
    data: str
    value: int
    function: str | None = None

    @property
    def label(self) -> str:
        return f"{self.artifact.name}.{self.function}" if self.function else f"{self.artifact.name} constructor"

    @property
    def read_only(self) -> bool:
        return self.action == "call" and contracts.is_read_only(self.entry)


@dataclass(frozen=True)
class Executed:
    """What :func:`execute` did: a final ``result``, or a ``pending`` ledger row whose receipt is awaited."""

    result: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None


def validate(request: ExecutionRequest) -> Plan:
    """Check the request against the ABI; :class:`InvalidArguments` (permanent) for anything wrong."""
    if request.action not in ACTIONS:
        raise InvalidArguments(f"action must be one of {', '.join(ACTIONS)}, not {request.action!r}")
    artifact = contracts.load_artifact(request.contract)
    args = list(request.args or [])
    value = contracts.normalize_arg({"type": "uint256"}, request.value_wei or 0, "value_wei")
    if request.action == "deploy":
        entry = artifact.constructor()
        plan = Plan("deploy", artifact, entry, args,
                    artifact.bytecode + contracts.encode_call(entry, args, f"{artifact.name} constructor")[2:], value)
    else:
        if not request.function:
            raise InvalidArguments("action 'call' needs a function name")
        entry = artifact.function(request.function, args)
        label = f"{artifact.name}.{request.function}"
        plan = Plan("call", artifact, entry, args, contracts.encode_call(entry, args, label), value,
                    request.function)
    if value and entry.get("stateMutability") != "payable":
        raise InvalidArguments(f"{plan.label} is not payable; value_wei must be 0")
    return plan


def check_allowed_target(conn: Any, hook: EvmHook, name: str, chain_id: int, address: str) -> None:
    """A caller-chosen address must be a registered deployment of ``name`` on this chain, or allow-listed
    (Connection extra ``allowed_contracts``, or Variable ``tributary_allowed_contracts``
    ``{conn_id: [address, ...]}``): otherwise a REST caller could make the Connection's key sign calls
    to any contract. :class:`SecurityError` before anything is signed."""
    wanted = str(address).lower()
    if any(str(a).lower() == wanted for a in _allow_list(hook)):
        return
    if deployments.is_registered(conn, name, chain_id, address):
        return
    raise SecurityError(f"{address} is not a registered deployment of {name} on chain {chain_id} and not in"
                        f" allowed_contracts of Connection {hook.conn_id!r}: refusing to sign a call to it",
                        system=SYSTEM, reason="evm:unregistered_contract")


def _allow_list(hook: EvmHook) -> list[Any]:
    from airflow.sdk import Variable

    listed = hook.extra.get("allowed_contracts") or []
    raw = Variable.get(ALLOWED_CONTRACTS_VARIABLE, default=None)
    if raw:
        try:
            policy = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            policy = None
        if not isinstance(policy, dict):
            raise SecurityError(f"Variable {ALLOWED_CONTRACTS_VARIABLE} must be {{conn_id: [address, ...]}}",
                                system=SYSTEM, reason="evm:allowed_contracts")
        listed = [*listed, *(policy.get(hook.conn_id) or [])]
    if not isinstance(listed, list):
        raise SecurityError(f"extra allowed_contracts of Connection {hook.conn_id!r} must be a list of addresses",
                            system=SYSTEM, reason="evm:allowed_contracts")
    return listed


def execute(plan: Plan, hook: EvmHook, sender: TransactionSender, *, address: str | None = None,
            idempotency_key: str | None = None, run_key: str | None = None) -> Executed:
    """Run a valid plan. ``run_key`` is the default idempotency key of a call (one per task run); a
    deploy defaults to one key per (contract, chain, build), so the same build is never sent twice."""
    artifact = plan.artifact
    chain_id = hook.check_chain()
    if plan.action == "deploy":
        existing = deployments.find(sender.nonces.conn, artifact.name, chain_id, artifact.artifact_sha256)
        if existing:
            log.info("%s (build %s) is already deployed on chain %d at %s", artifact.name,
                     artifact.artifact_sha256[:12], chain_id, existing["address"])
            return Executed(result={
                "action": "deploy", "contract": artifact.name, "chain_id": chain_id, "already_deployed": True,
                **{k: existing[k] for k in ("address", "tx_hash", "artifact_sha256", "block_number")}})
        key = idempotency_key or f"deploy:{artifact.name}:{chain_id}:{artifact.artifact_sha256}"
        row = sender.submit(TxRequest(idempotency_key=key, kind="deploy", data=plan.data, value=plan.value,
                                      contract_name=artifact.name, args=plan.args))
        return _after_submit(sender, row)

    if not address:
        deployed = deployments.find(sender.nonces.conn, artifact.name, chain_id)
        if not deployed:
            raise InvalidArguments(f"{artifact.name} is not deployed on chain {chain_id}: deploy it first"
                                   " (action=deploy) or pass an address")
        address = deployed["address"]
    else:
        check_allowed_target(sender.nonces.conn, hook, artifact.name, chain_id, address)
    address = contracts.normalize_arg({"type": "address"}, address, "address")
    if plan.read_only:
        result = contracts.decode_output(plan.entry, hook.eth_call({"to": address, "data": plan.data}))
        log.info("%s(...) at %s -> %s", plan.label, address, result)
        return Executed(result={"action": "call", "contract": artifact.name, "function": plan.function,
                                "address": address, "chain_id": chain_id, "read_only": True, "result": result})
    key = idempotency_key or run_key
    if not key:
        raise InvalidArguments(f"{plan.label} sends a transaction: it needs an idempotency key")
    row = sender.submit(TxRequest(idempotency_key=key, kind="call", data=plan.data,
                                  to=address, value=plan.value, contract_name=artifact.name,
                                  function_name=plan.function, args=plan.args))
    return _after_submit(sender, row)


def _after_submit(sender: TransactionSender, row: dict[str, Any]) -> Executed:
    log.info("transaction %s (nonce %s) for key %s is %s", row["tx_hash"], row["nonce"], row["idempotency_key"],
             row["status"])
    if row["status"] in ("confirmed", "failed"):  # a repeated key: the ledger already has the outcome
        return Executed(result=result(sender, row))
    return Executed(pending=row)


def event_row(sender: TransactionSender, event: Mapping[str, Any]) -> dict[str, Any]:
    """The ledger row a receipt-trigger event is about, with the reorgs the trigger counted recorded."""
    row = sender.ledger.get_by_txid(event["txid"])
    if row is None:
        raise TransientError(f"no ledger row for {event['txid']}", system=SYSTEM, reason="evm:stale_event")
    if event.get("reorgs", 0) > row["reorgs"]:
        sender.ledger.update(row["chain_id"], row["idempotency_key"], reorgs=event["reorgs"])
    return row


def confirm(sender: TransactionSender, row: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """Record the confirmed receipt of ``event`` in the ledger; the task's result."""
    if row["tx_hash"] != event["txid"]:
        raise TransientError(f"event for {event['txid']} but the ledger holds {row['tx_hash']}",
                             system=SYSTEM, reason="evm:stale_event")
    row = sender.ledger.record_receipt(row["chain_id"], row["idempotency_key"], event["receipt"],
                                       confirmations=event["confirmations"], final=True)
    return result(sender, row)


def rebroadcast_dropped(sender: TransactionSender, row: dict[str, Any]) -> dict[str, Any]:
    """The node lost the transaction (a drop or a reorg): send the same signed bytes again; the new row."""
    if row["broadcasts"] >= MAX_BROADCASTS:
        raise TransientError(f"transaction {row['tx_hash']} dropped {row['broadcasts']} times",
                             system=SYSTEM, reason="evm:dropped")
    log.warning("transaction %s is unknown to the node (reorg or drop): broadcasting it again", row["tx_hash"])
    ledger = sender.ledger
    ledger.mark_reorged(row["chain_id"], row["idempotency_key"])
    return sender.rebroadcast(ledger.get(row["chain_id"], row["idempotency_key"]))


def result(sender: TransactionSender, row: dict[str, Any]) -> dict[str, Any]:
    """The JSON result of a final ledger row (XCom): the receipt summary, the registered address of a
    deploy, the decoded events of a call; never the key. A revert on chain is permanent."""
    if row["status"] == "failed":
        raise ContractReverted(f"transaction {row['tx_hash']} reverted on chain (block {row['block_number']})",
                               "reverted on chain")
    out: dict[str, Any] = {
        "action": "deploy" if row["kind"] == "deploy" else "transact", "contract": row["contract_name"],
        "function": row["function_name"], "chain_id": row["chain_id"], "idempotency_key": row["idempotency_key"],
        "tx_hash": row["tx_hash"], "nonce": row["nonce"], "from": row["from_address"], "to": row["to_address"],
        "value_wei": str(row["value_wei"]), "status": row["status"], "block_number": row["block_number"],
        "block_hash": row["block_hash"], "gas_used": row["gas_used"], "confirmations": row["confirmations"],
        "reorgs": row["reorgs"], "broadcasts": row["broadcasts"],
    }
    artifact = contracts.load_artifact(row["contract_name"])
    if row["kind"] == "deploy":
        registered = deployments.record(sender.nonces.conn, name=artifact.name, chain_id=row["chain_id"],
                                        artifact_sha256=artifact.artifact_sha256,
                                        address=contracts.normalize_arg({"type": "address"},
                                                                        row["contract_address"], "address"),
                                        tx_hash=row["tx_hash"], deployer=row["from_address"],
                                        block_number=row["block_number"], constructor_args=row["args"])
        out.update(address=registered["address"], artifact_sha256=artifact.artifact_sha256, already_deployed=False)
    else:
        receipt = sender.hook.get_receipt(row["tx_hash"]) or {}
        known = artifact.events()
        events = []
        for log_entry in receipt.get("logs", []):
            event = known.get(log_entry["topics"][0]) if log_entry["topics"] else None
            if event:
                events.append({"event": event["name"], "log_index": int(log_entry["logIndex"], 16),
                               "args": contracts.decode_log(event, log_entry["topics"], log_entry["data"])})
        out["events"] = events
    return out
