"""Sending state-changing transactions exactly once per idempotency key.

The ledger ``evm_transactions`` holds one row per (chain_id, idempotency_key):

    preparing -> signed -> sent -> mined -> confirmed
         |          |                 \\-> failed      (receipt status 0: reverted on chain)
         \\---------+-> rejected       (refused before reaching the chain; the key may be retried)
    mined -> sent                      (its block was reorged away: awaiting inclusion again)

A retried task finds its row: ``sent``/``mined``/``confirmed``/``failed`` are returned as they are
(never a second signature); ``signed`` (the process died between signing and the node's answer) is
re-broadcast as the same raw bytes. Gas is estimated *before* a nonce is leased, so a call that
would revert consumes no nonce.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tributary.core.errors import PermanentError, TransientError, TributaryError
from tributary.evm import SYSTEM
from tributary.evm.errors import NonceTooLow
from tributary.evm.hook import EvmHook
from tributary.evm.nonces import NonceManager

log = logging.getLogger(__name__)

FINAL_STATES = ("confirmed", "failed")
_COLUMNS = ("chain_id", "idempotency_key", "kind", "contract_name", "function_name", "args", "from_address",
            "to_address", "value_wei", "nonce", "gas_limit", "max_fee_per_gas", "max_priority_fee_per_gas",
            "tx_hash", "raw_tx", "status", "block_number", "block_hash", "gas_used", "effective_gas_price",
            "receipt_status", "contract_address", "confirmations", "reorgs", "broadcasts", "error")


@dataclass(frozen=True)
class TxRequest:
    idempotency_key: str
    kind: str  # call | deploy | transfer
    data: str
    to: str | None = None
    value: int = 0
    contract_name: str | None = None
    function_name: str | None = None
    args: list[Any] = field(default_factory=list)

    @property
    def request_sha256(self) -> str:
        body = json.dumps([self.kind, self.to.lower() if self.to else None, self.data.lower(), int(self.value)])
        return hashlib.sha256(body.encode()).hexdigest()


def row_to_dict(row: Any) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row, strict=True))
    for key in ("value_wei", "max_fee_per_gas", "max_priority_fee_per_gas", "effective_gas_price"):
        if out[key] is not None:
            out[key] = int(out[key])
    return out


class Ledger:
    """Reads and writes of ``evm_transactions`` on one DB-API connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def get(self, chain_id: int, key: str, *, lock: bool = False) -> dict[str, Any] | None:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM evm_transactions"
                        f" WHERE chain_id = %s AND idempotency_key = %s{' FOR UPDATE' if lock else ''}",
                        (chain_id, key))
            row = cur.fetchone()
        return row_to_dict(row) if row else None

    def get_by_txid(self, txid: str) -> dict[str, Any] | None:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM evm_transactions WHERE tx_hash = %s", (txid,))
            row = cur.fetchone()
        self.conn.commit()
        return row_to_dict(row) if row else None

    def update(self, chain_id: int, key: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = %s" for k in values)
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE evm_transactions SET {sets}, updated_at = now()"
                        " WHERE chain_id = %s AND idempotency_key = %s", (*values.values(), chain_id, key))
        self.conn.commit()

    def record_receipt(self, chain_id: int, key: str, receipt: dict[str, Any], *, confirmations: int,
                       final: bool) -> dict[str, Any]:
        ok = int(receipt["status"], 16) == 1
        status = ("confirmed" if ok else "failed") if final else "mined"
        self.update(chain_id, key, status=status, block_number=int(receipt["blockNumber"], 16),
                    block_hash=receipt["blockHash"], gas_used=int(receipt["gasUsed"], 16),
                    effective_gas_price=int(receipt.get("effectiveGasPrice") or "0x0", 16),
                    receipt_status=1 if ok else 0, contract_address=receipt.get("contractAddress"),
                    confirmations=confirmations,
                    error=None if ok else "reverted on chain (receipt status 0)")
        return self.get(chain_id, key)

    def mark_reorged(self, chain_id: int, key: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE evm_transactions SET status = 'sent', reorgs = reorgs + 1, block_number = NULL,"
                        " block_hash = NULL, confirmations = NULL, updated_at = now()"
                        " WHERE chain_id = %s AND idempotency_key = %s", (chain_id, key))
        self.conn.commit()


class TransactionSender:
    """Sign (locally) and send transactions for the hook's account, once per idempotency key."""

    def __init__(self, hook: EvmHook, connect: Callable[[], Any], *, nonce_manager: NonceManager | None = None,
                 preparing_timeout: float = 120.0) -> None:
        self.hook = hook
        self.nonces = nonce_manager or NonceManager(connect, hook.pending_nonce)
        self.preparing_timeout = preparing_timeout

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.nonces.conn)

    # ----------------------------------------------------------------- claim
    def _claim(self, chain_id: int, sender: str, req: TxRequest) -> dict[str, Any] | None:
        """Insert the 'preparing' row, or return the existing row when the key needs no new signature."""
        conn = self.nonces.conn
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO evm_transactions (chain_id, idempotency_key, request_sha256, kind, contract_name,"
                    " function_name, args, from_address, to_address, value_wei, status)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'preparing') ON CONFLICT DO NOTHING",
                    (chain_id, req.idempotency_key, req.request_sha256, req.kind, req.contract_name,
                     req.function_name, json.dumps(req.args), sender, req.to, req.value))
                inserted = cur.rowcount == 1
                if inserted:
                    conn.commit()
                    return None
                cur.execute("SELECT request_sha256, status, extract(epoch FROM now() - updated_at), from_address"
                            " FROM evm_transactions WHERE chain_id = %s AND idempotency_key = %s FOR UPDATE",
                            (chain_id, req.idempotency_key))
                sha, status, age, from_address = cur.fetchone()
                if sha != req.request_sha256 or from_address != sender:
                    raise PermanentError(f"idempotency key {req.idempotency_key!r} was used for a different"
                                         " transaction", system=SYSTEM, reason="evm:idempotency_conflict")
                if status == "preparing" and float(age) < self.preparing_timeout:
                    raise TransientError(f"transaction {req.idempotency_key!r} is being prepared by another"
                                         " attempt", system=SYSTEM, reason="evm:in_progress")
                if status in ("preparing", "rejected"):
                    cur.execute("UPDATE evm_transactions SET status = 'preparing', updated_at = now()"
                                " WHERE chain_id = %s AND idempotency_key = %s", (chain_id, req.idempotency_key))
                    conn.commit()
                    return None
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return self.ledger.get(chain_id, req.idempotency_key)

    # ----------------------------------------------------------------- submit
    def submit(self, req: TxRequest, *, gas: int | None = None) -> dict[str, Any]:
        """Sign and broadcast ``req`` unless its key already has a transaction; returns the ledger row."""
        chain_id = self.hook.check_chain()
        sender = self.hook.address
        existing = self._claim(chain_id, sender, req)
        if existing is not None:
            if existing["status"] == "signed":
                return self.rebroadcast(existing)
            return existing
        try:
            tx: dict[str, Any] = {"from": sender, "value": req.value, "data": req.data}
            if req.to:
                tx["to"] = req.to
            gas_limit = gas or self.hook.estimate_gas(tx)  # a revert fails here: no nonce is consumed
            fees = self.hook.fees()
        except TributaryError as exc:
            self.ledger.update(chain_id, req.idempotency_key, status="rejected", error=str(exc)[:500])
            raise
        except Exception as exc:
            self.ledger.update(chain_id, req.idempotency_key, status="rejected", error=str(exc)[:500])
            raise
        for _attempt in range(5):
            lease = self.nonces.allocate(chain_id, sender)
            txid: str | None = None
            try:
                unsigned = {"type": 2, "chainId": chain_id, "nonce": lease.nonce, "gas": gas_limit,
                            "maxFeePerGas": fees.max_fee_per_gas,
                            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
                            "value": req.value, "data": req.data}
                if req.to:
                    from eth_utils import to_checksum_address

                    unsigned["to"] = to_checksum_address(req.to)
                txid, raw = self.hook.sign(unsigned)
                self.ledger.update(chain_id, req.idempotency_key, status="signed", nonce=lease.nonce,
                                   tx_hash=txid, raw_tx=raw, gas_limit=gas_limit,
                                   max_fee_per_gas=fees.max_fee_per_gas,
                                   max_priority_fee_per_gas=fees.max_priority_fee_per_gas, error=None)
                self.hook.send_raw(raw, txid)
            except NonceTooLow:
                log.warning("nonce %d of %s was used outside this manager; allocating again", lease.nonce, sender)
                lease.discard()
                continue
            except BaseException as exc:
                reached = False
                if txid is not None:
                    try:
                        reached = self.hook.get_transaction(txid) is not None
                    except Exception:
                        reached = False
                if not reached:
                    lease.release()
                    self.ledger.update(chain_id, req.idempotency_key, status="rejected", error=str(exc)[:500])
                    raise
            conn = self.nonces.conn
            with conn.cursor() as cur:
                cur.execute("UPDATE evm_transactions SET status = 'sent', broadcasts = broadcasts + 1,"
                            " updated_at = now() WHERE chain_id = %s AND idempotency_key = %s",
                            (chain_id, req.idempotency_key))
                self.nonces.commit_in(cur, lease)
            conn.commit()
            return self.ledger.get(chain_id, req.idempotency_key)
        raise TransientError(f"could not find a free nonce for {sender} after 5 attempts", system=SYSTEM,
                             reason="evm:nonce_contention")

    def rebroadcast(self, row: dict[str, Any]) -> dict[str, Any]:
        """Send the same signed bytes again (after a drop or a reorg); a known transaction is a success."""
        try:
            self.hook.send_raw(row["raw_tx"], row["tx_hash"])
        except NonceTooLow:
            # The nonce went to another transaction meanwhile: this one can never be mined. Sign anew.
            log.warning("transaction %s can no longer be mined (nonce %s used); signing it again",
                        row["tx_hash"], row["nonce"])
            self.ledger.update(row["chain_id"], row["idempotency_key"], status="rejected",
                               error="nonce used by another transaction; re-signed")
            return self.submit(TxRequest(idempotency_key=row["idempotency_key"], kind=row["kind"],
                                         data=self._data_of(row), to=row["to_address"], value=row["value_wei"],
                                         contract_name=row["contract_name"], function_name=row["function_name"],
                                         args=row["args"]), gas=row["gas_limit"])
        self.ledger.update(row["chain_id"], row["idempotency_key"], status="sent", broadcasts=row["broadcasts"] + 1)
        return self.ledger.get(row["chain_id"], row["idempotency_key"])

    def _data_of(self, row: dict[str, Any]) -> str:
        from eth_account._utils.typed_transactions import TypedTransaction

        tx = TypedTransaction.from_bytes(bytes.fromhex(row["raw_tx"][2:])).as_dict()
        data = tx.get("data", b"")
        return "0x" + (data.hex() if isinstance(data, bytes | bytearray) else str(data).removeprefix("0x"))

    # ----------------------------------------------------------------- waiting (sync path)
    def wait(self, row: dict[str, Any], *, confirmations: int | None = None, timeout: float = 120.0,
             poll: float = 0.05) -> dict[str, Any]:
        """Poll for the receipt until ``confirmations`` blocks deep (for scripts, tests and benchmarks;
        DAGs use the deferrable :class:`~tributary.evm.triggers.EvmReceiptTrigger`)."""
        depth = confirmations or self.hook.confirmations
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.hook.get_receipt(row["tx_hash"])
            if receipt is not None:
                head = self.hook.block_number()
                seen = head - int(receipt["blockNumber"], 16) + 1
                if seen >= depth:
                    return self.ledger.record_receipt(row["chain_id"], row["idempotency_key"], receipt,
                                                      confirmations=seen, final=True)
            if time.monotonic() > deadline:
                raise TransientError(f"no receipt with {depth} confirmations for {row['tx_hash']} in {timeout}s",
                                     system=SYSTEM, reason="evm:receipt_timeout")
            time.sleep(poll)
