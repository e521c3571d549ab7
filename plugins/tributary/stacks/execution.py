"""What ``stacks_contract_execution`` does, step by step, in the same shape as EVM's execution:

1. :func:`validate` a request against the contract's interface;
2. :func:`execute` it: a read-only call answers at once; a contract call / deploy is signed and
   broadcast exactly once per request id (through the ``stacks_transactions`` ledger);
3. await its block: the operator defers to :class:`~tributary.stacks.triggers.StacksTransactionTrigger`
   while :func:`pending_txid` names a transaction not in a block yet, then :func:`finish` records it.

The ledger is reached through ``WarehouseHook`` (``warehouse_conn_id``).

Nothing is signed before the request is valid: the contract must exist (or, for a deploy, its source
must be in ``include/contracts``), the function must have the right access, and every argument must
fit the interface's type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError
from tributary.stacks import SYSTEM, ledger
from tributary.stacks.c32 import AddressError, check_contract_name, split_contract_id
from tributary.stacks.clarity import ClarityError, check_function_args, from_json, to_python, to_repr
from tributary.stacks.hook import StacksHook, StacksRejection
from tributary.stacks.transactions import PostConditionMode, TransactionError
from tributary.storage import WAREHOUSE_CONN_ID
from tributary.storage.warehouse import WarehouseHook, include_dir

log = logging.getLogger(__name__)

ACTIONS = ("read", "call", "deploy")
_SOURCE_FILE = re.compile(r"^[A-Za-z0-9_-]+\.clar$")


def contracts_dir() -> Path:
    return include_dir() / "contracts"


def _invalid(message: str, reason: str = "invalid_request") -> PermanentError:
    return PermanentError(message, system=SYSTEM, reason=reason)


@dataclass(frozen=True)
class ExecutionRequest:
    action: str
    contract: str
    function: str | None = None
    args: list[dict[str, Any]] = field(default_factory=list)
    source_file: str | None = None
    clarity_version: int | None = None
    fee: int | None = None
    post_condition_mode: str = "deny"
    wait: bool = True
    wait_timeout: int = 120
    poll_interval: float = 2.0
    request_id: str | None = None
    conn_id: str = "tributary_stacks"

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> ExecutionRequest:
        p = dict(params or {})
        names = {f for f in cls.__dataclass_fields__}
        request = cls(**{k: v for k, v in p.items() if k in names and v is not None})
        if request.action not in ACTIONS:
            raise _invalid(f"action must be one of {', '.join(ACTIONS)}, not {request.action!r}")
        if request.action in ("read", "call") and not request.function:
            raise _invalid(f"action {request.action} needs a function")
        if request.post_condition_mode not in ("deny", "allow"):
            raise _invalid("post_condition_mode is deny or allow")
        if not isinstance(request.args, list):
            raise _invalid("args is a list of typed Clarity values")
        return request


def resolve_contract(request: ExecutionRequest, hook: StacksHook) -> tuple[str, str]:
    """``(address, name)``: a full ``ADDR.name`` as given, else the Connection's sender deployed it."""
    try:
        if "." in request.contract:
            address, name = split_contract_id(request.contract)
            if request.action == "deploy" and address != hook.sender_address:
                raise _invalid(f"a deploy publishes under the sender {hook.sender_address}, not {address}")
            return address, name
        return hook.sender_address, check_contract_name(request.contract)
    except AddressError as exc:
        raise _invalid(str(exc), "invalid_contract") from exc


def read_source(request: ExecutionRequest, name: str) -> str:
    file_name = request.source_file or f"{name}.clar"
    if not _SOURCE_FILE.match(file_name):
        raise _invalid(f"source_file must be a file name like counter.clar in include/contracts, not {file_name!r}")
    path = contracts_dir() / file_name
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _invalid(f"no contract source {file_name} in {contracts_dir()}", "no_source") from None


def validate(request: ExecutionRequest, hook: StacksHook, *, default_request_id: str | None = None,
             ) -> dict[str, Any]:
    """The plan of a valid request (JSON-safe, no secrets); permanent errors for anything invalid.
    ``default_request_id`` (the run id in the DAG) is the request id when the request names none."""
    address, name = resolve_contract(request, hook)
    plan: dict[str, Any] = {"action": request.action, "contract_address": address, "contract_name": name,
                            "contract_id": f"{address}.{name}",
                            "function": request.function if request.action != "deploy" else None, "args": [],
                            "request_id": request.request_id or default_request_id}
    if request.action == "deploy":
        source = read_source(request, name)
        plan["source_file"] = request.source_file or f"{name}.clar"
        plan["source_bytes"] = len(source.encode())
        _log_valid(plan)
        return plan
    try:
        args = [from_json(a) for a in request.args]
    except ClarityError as exc:
        raise _invalid(f"invalid argument: {exc}", "invalid_args") from exc
    interface = hook.get_contract_interface(address, name)
    if interface is None:
        raise _invalid(f"no contract {address}.{name} on the node", "no_such_contract")
    access = ("read_only",) if request.action == "read" else ("public",)
    try:
        entry = check_function_args(interface, str(request.function), args, access=access)
    except ClarityError as exc:
        raise _invalid(str(exc), "invalid_args") from exc
    plan["args"] = [a.to_json() for a in args]
    plan["outputs"] = entry.get("outputs")
    _log_valid(plan)
    return plan


def _log_valid(plan: Mapping[str, Any]) -> None:
    log.info("valid %s of %s %s as request %s", plan["action"], plan["contract_id"], plan.get("function") or "",
             plan["request_id"])


def read(plan: Mapping[str, Any], hook: StacksHook) -> dict[str, Any]:
    args = [from_json(a) for a in plan["args"]]
    value = hook.call_read(plan["contract_address"], plan["contract_name"], plan["function"], args)
    return {"action": "read", "contract_id": plan["contract_id"], "function": plan["function"],
            "result": value.to_json(), "value": to_python(value), "result_repr": to_repr(value)}


def _same_request(row: Mapping[str, Any], plan: Mapping[str, Any]) -> bool:
    return (row["action"] == plan["action"] and row["contract_id"] == plan["contract_id"]
            and (row["function_name"] or None) == (plan.get("function") if plan["action"] == "call" else None)
            and (row["args"] or []) == (plan["args"] if plan["action"] == "call" else []))


def submit(plan: Mapping[str, Any], request: ExecutionRequest, hook: StacksHook, conn: Any, *,
           request_id: str, dag_run_id: str | None = None) -> dict[str, Any]:
    """Sign and broadcast once per ``request_id``; a repeat re-sends the stored bytes (same txid)."""
    row = ledger.get(conn, request_id)
    if row is not None and not _same_request(row, plan):
        raise _invalid(f"request id {request_id!r} was already used for {row['action']} {row['contract_id']}"
                       f" {row['function_name'] or ''}: use a new request id", "request_id_reused")
    if row is None:
        row = _sign_and_record(plan, request, hook, conn, request_id, dag_run_id)
    if row["status"] in ledger.FINAL_STATUSES:
        return ledger.summary(row)
    if not hook.is_known(row["txid"]):  # neither mined nor in the mempool: (re-)send the same bytes
        try:
            txid = hook.broadcast(row["raw_tx"])
        except StacksRejection as exc:
            ledger.update(conn, request_id, status="rejected", error=str(exc)[:2000])
            raise
        if txid != row["txid"]:
            raise PermanentError(f"node answered txid {txid}, the signed transaction is {row['txid']}",
                                 system=SYSTEM, reason="txid_mismatch")
    return ledger.summary(ledger.update(conn, request_id, status="broadcast"))


def _sign_and_record(plan: Mapping[str, Any], request: ExecutionRequest, hook: StacksHook, conn: Any,
                     request_id: str, dag_run_id: str | None) -> dict[str, Any]:
    nonce = hook.get_nonce()
    mode = PostConditionMode.ALLOW if request.post_condition_mode == "allow" else PostConditionMode.DENY
    try:
        if plan["action"] == "deploy":
            signed = hook.build_contract_deploy(plan["contract_name"], read_source(request, plan["contract_name"]),
                                                nonce=nonce, fee=request.fee, clarity_version=request.clarity_version,
                                                post_condition_mode=mode)
        else:
            signed = hook.build_contract_call(plan["contract_address"], plan["contract_name"], plan["function"],
                                              [from_json(a) for a in plan["args"]], nonce=nonce, fee=request.fee,
                                              post_condition_mode=mode)
    except TransactionError as exc:
        raise _invalid(str(exc), "invalid_transaction") from exc
    return ledger.insert_signed(conn, {
        "request_id": request_id, "action": plan["action"], "network": str(hook.network),
        "sender": hook.sender_address, "contract_id": plan["contract_id"],
        "function_name": plan["function"] if plan["action"] == "call" else None,
        "args": plan["args"] if plan["action"] == "call" else [], "nonce": nonce,
        "fee": signed.unsigned.fee, "txid": signed.txid, "raw_tx": signed.raw, "dag_run_id": dag_run_id,
    })


def await_outcome(record: Mapping[str, Any], request: ExecutionRequest, hook: StacksHook, conn: Any,
                  ) -> dict[str, Any]:
    """Wait for the block, store the outcome; an aborted transaction fails permanently (after recording)."""
    request_id = str(record["request_id"])
    row = ledger.get(conn, request_id) or dict(record)
    if row["status"] not in ledger.FINAL_STATUSES:
        outcome = hook.wait_for_transaction(row["txid"], timeout=request.wait_timeout,
                                            poll_interval=request.poll_interval)
        row = ledger.update(conn, request_id, status="confirmed" if outcome.succeeded else "failed",
                            tx_status=outcome.tx_status, result=outcome.as_dict()["result"],
                            result_repr=outcome.result_repr, block_height=outcome.block_height,
                            index_block_hash=outcome.index_block_hash)
    summary = ledger.summary(row)
    if row["status"] == "failed":
        raise PermanentError(f"transaction {row['txid']} was mined but aborted ({row['tx_status']}):"
                             f" {row['result_repr']}", system=SYSTEM, reason=f"tx:{row['tx_status']}")
    if row["status"] == "rejected":
        raise PermanentError(f"transaction {row['txid']} was rejected by the node: {row['error']}",
                             system=SYSTEM, reason="tx:rejected")
    return summary


def execute(plan: Mapping[str, Any], request: ExecutionRequest, hook: StacksHook, *, dag_run_id: str | None = None,
            warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Step 2: the decoded value of a read, or the ledger record of the call / deploy sent for
    ``plan["request_id"]`` (sent once: a repeat re-sends the same bytes or returns the outcome)."""
    if plan["action"] == "read":
        result = read(plan, hook)
        log.info("%s.%s -> %s", plan["contract_id"], plan["function"], result["result_repr"])
        return result
    with WarehouseHook(warehouse_conn_id).session() as conn:
        record = submit(plan, request, hook, conn, request_id=str(plan["request_id"]), dag_run_id=dag_run_id)
    log.info("%s %s: txid %s nonce %s (%s)", plan["action"], plan["contract_id"], record["txid"], record["nonce"],
             record["status"])
    return record


def pending_txid(record: Mapping[str, Any], hook: StacksHook, *,
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> str | None:
    """The txid still to wait for: None when the ledger holds a final status or the node has the
    transaction in a block already (no need to defer)."""
    with WarehouseHook(warehouse_conn_id).session() as conn:
        row = ledger.get(conn, str(record["request_id"])) or record
    if row["status"] in ledger.FINAL_STATUSES or hook.get_transaction(row["txid"]) is not None:
        return None
    return str(row["txid"])


def finish(record: Mapping[str, Any], request: ExecutionRequest, hook: StacksHook, *,
           warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Step 3's end: :func:`await_outcome` on the warehouse (the ledger row; aborted -> permanent)."""
    with WarehouseHook(warehouse_conn_id).session() as conn:
        return await_outcome(record, request, hook, conn)


def request_as_dict(request: ExecutionRequest) -> dict[str, Any]:
    return asdict(request)
