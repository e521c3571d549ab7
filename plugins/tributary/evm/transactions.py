"""Sending state-changing transactions exactly once per idempotency key.

The ledger ``evm_transactions`` holds one row per (chain_id, idempotency_key):

    preparing -> signed -> sent -> mined -> confirmed
         |          |                 \\-> failed      (receipt status 0: reverted on chain)
         \\---------+-> rejected       (refused before reaching the chain; the key may be retried)
    mined -> sent                      (its block was reorged away: awaiting inclusion again)

A retried task finds its row: ``sent``/``mined``/``confirmed``/``failed`` are returned as they are
(never a second signature); ``signed`` (the process died, or the node's answer was lost, between
signing and the node's answer) is re-broadcast as the same raw bytes. Gas is estimated *before* a
nonce is leased, so a call that would revert consumes no nonce.

Exactly once under faults (docs/evm.md "Exactly once"): a lost or ambiguous answer never releases
the nonce; a key is signed again only once the chain shows its nonce used by another transaction
at the Connection's confirmation depth (:meth:`TransactionSender.nonce_fate`); ``generation`` fences
an attempt whose stale ``preparing`` row was taken over, before it signs or sends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tributary.core.errors import PermanentError, TransientError
from tributary.evm import SYSTEM
from tributary.evm.errors import NonceTooLow
from tributary.evm.hook import EvmHook
from tributary.evm.nonces import NonceManager

log = logging.getLogger(__name__)

FINAL_STATES = ("confirmed", "failed")
_COLUMNS = ("chain_id", "idempotency_key", "kind", "contract_name", "function_name", "args", "from_address",
            "to_address", "value_wei", "nonce", "gas_limit", "max_fee_per_gas", "max_priority_fee_per_gas",
            "tx_hash", "raw_tx", "status", "block_number", "block_hash", "gas_used", "effective_gas_price",
            "receipt_status", "contract_address", "confirmations", "reorgs", "broadcasts", "error",
            "generation", "superseded_tx_hashes")


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

    def update(self, chain_id: int, key: str, *, of_tx: str | None = None, **values: Any) -> bool:
        """Unconditional by key, or only while the row holds transaction ``of_tx``; False if no row changed."""
        sets = ", ".join(f"{k} = %s" for k in values)
        where = " WHERE chain_id = %s AND idempotency_key = %s" + (" AND tx_hash = %s" if of_tx else "")
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE evm_transactions SET {sets}, updated_at = now(){where}",
                        (*values.values(), chain_id, key, *([of_tx] if of_tx else [])))
            changed = cur.rowcount == 1
        self.conn.commit()
        return changed

    def record_receipt(self, chain_id: int, key: str, receipt: dict[str, Any], *, confirmations: int,
                       final: bool) -> dict[str, Any]:
        ok = int(receipt["status"], 16) == 1
        status = ("confirmed" if ok else "failed") if final else "mined"
        # Only onto the row that still holds this transaction (a re-signed row has another hash).
        self.update(chain_id, key, of_tx=receipt.get("transactionHash"), status=status,
                    block_number=int(receipt["blockNumber"], 16),
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


class Superseded(TransientError):
    """A newer attempt took this key's ``preparing`` row over (or re-signed it): this attempt stops
    before it signs or sends; a retry finds the ledger row the newer attempt wrote."""

    def __init__(self, key: str, generation: int) -> None:
        super().__init__(f"attempt {generation} of transaction {key!r} was superseded by a newer attempt;"
                         " it stopped before signing or sending", system=SYSTEM, reason="evm:superseded")


SEND_ATTEMPTS = 3  # sends of the same bytes within one attempt when the node's answer is lost


class TransactionSender:
    """Sign (locally) and send transactions for the hook's account, once per idempotency key.

    ``preparing_timeout``: seconds after which a ``preparing`` row (its attempt died or hangs) may be
    taken over by another attempt; default the Connection's ``extra.takeover_seconds`` or 120.
    """

    def __init__(self, hook: EvmHook, connect: Callable[[], Any], *, nonce_manager: NonceManager | None = None,
                 preparing_timeout: float | None = None) -> None:
        self.hook = hook
        self.nonces = nonce_manager or NonceManager(connect, hook.pending_nonce)
        if preparing_timeout is None:
            number = getattr(hook, "_number", None)
            preparing_timeout = float(number("takeover_seconds", 120.0)) if callable(number) else 120.0
        self.preparing_timeout = preparing_timeout

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.nonces.conn)

    # ----------------------------------------------------------------- claim
    def _claim(self, chain_id: int, sender: str, req: TxRequest) -> tuple[dict[str, Any] | None, int]:
        """Insert the 'preparing' row (or take a stale one over): (None, its generation); or the existing
        row when the key needs no new signature: (row, its generation)."""
        conn = self.nonces.conn
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO evm_transactions (chain_id, idempotency_key, request_sha256, kind, contract_name,"
                    " function_name, args, from_address, to_address, value_wei, status)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'preparing') ON CONFLICT DO NOTHING"
                    " RETURNING generation",
                    (chain_id, req.idempotency_key, req.request_sha256, req.kind, req.contract_name,
                     req.function_name, json.dumps(req.args), sender, req.to, req.value))
                inserted = cur.fetchone()
                if inserted is not None:
                    conn.commit()
                    return None, int(inserted[0])
                cur.execute("SELECT request_sha256, status, extract(epoch FROM now() - updated_at), from_address,"
                            " generation FROM evm_transactions WHERE chain_id = %s AND idempotency_key = %s"
                            " FOR UPDATE", (chain_id, req.idempotency_key))
                sha, status, age, from_address, generation = cur.fetchone()
                if sha != req.request_sha256 or from_address != sender:
                    raise PermanentError(f"idempotency key {req.idempotency_key!r} was used for a different"
                                         " transaction", system=SYSTEM, reason="evm:idempotency_conflict")
                if status == "preparing" and float(age) < self.preparing_timeout:
                    raise TransientError(f"transaction {req.idempotency_key!r} is being prepared by another"
                                         " attempt", system=SYSTEM, reason="evm:in_progress")
                if status in ("preparing", "rejected"):
                    # A new lease token: the attempt that left this row (if it still runs) fails its
                    # next fenced write and stops before it signs or sends.
                    cur.execute("UPDATE evm_transactions SET status = 'preparing', generation = generation + 1,"
                                " updated_at = now() WHERE chain_id = %s AND idempotency_key = %s"
                                " RETURNING generation", (chain_id, req.idempotency_key))
                    generation = cur.fetchone()[0]
                    conn.commit()
                    if status == "preparing":
                        log.warning("transaction %r: took over a 'preparing' row idle for %.1f s (generation %d)",
                                    req.idempotency_key, float(age), generation)
                    return None, int(generation)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return self.ledger.get(chain_id, req.idempotency_key), int(generation)

    # ----------------------------------------------------------------- fenced writes
    def _fenced(self, cur: Any, chain_id: int, key: str, generation: int, *, statuses: tuple[str, ...],
                of_tx: str | None = None, bump: bool = False, first_send: bool = False, **values: Any) -> bool:
        """UPDATE the row only if it still belongs to ``generation`` (and is in ``statuses``, with
        transaction ``of_tx``): False when another attempt has it now."""
        sets = [f"{k} = %s" for k in values] + ["updated_at = now()"]
        if bump:
            sets.append("broadcasts = broadcasts + 1")
        where = "chain_id = %s AND idempotency_key = %s AND generation = %s AND status = ANY(%s)"
        params: list[Any] = [*values.values(), chain_id, key, generation, list(statuses)]
        if of_tx is not None:
            where += " AND tx_hash = %s"
            params.append(of_tx)
        if first_send:  # nobody else has started a send of these bytes
            where += " AND broadcasts = 1"
        cur.execute(f"UPDATE evm_transactions SET {', '.join(sets)} WHERE {where}", params)
        return cur.rowcount == 1

    def _write(self, chain_id: int, key: str, generation: int, **kwargs: Any) -> bool:
        conn = self.nonces.conn
        try:
            with conn.cursor() as cur:
                done = self._fenced(cur, chain_id, key, generation, **kwargs)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return done

    def _guard(self, chain_id: int, key: str, generation: int) -> Callable[[Any], None]:
        """Run by the nonce manager under the nonce row lock: a superseded attempt gets no nonce."""
        def check(cur: Any) -> None:
            cur.execute("SELECT generation, status FROM evm_transactions WHERE chain_id = %s AND idempotency_key = %s"
                        " FOR SHARE", (chain_id, key))
            row = cur.fetchone()
            if row is None or int(row[0]) != generation or row[1] != "preparing":
                raise Superseded(key, generation)
        return check

    # ----------------------------------------------------------------- submit
    def submit(self, req: TxRequest, *, gas: int | None = None) -> dict[str, Any]:
        """Sign and broadcast ``req`` unless its key already has a transaction; returns the ledger row."""
        chain_id = self.hook.check_chain()
        sender = self.hook.address
        existing, generation = self._claim(chain_id, sender, req)
        if existing is not None:
            if existing["status"] == "signed":
                return self.rebroadcast(existing)
            return existing
        return self._sign_and_send(chain_id, sender, req, generation, gas)

    def _sign_and_send(self, chain_id: int, sender: str, req: TxRequest, generation: int,
                       gas: int | None) -> dict[str, Any]:
        key = req.idempotency_key
        try:
            tx: dict[str, Any] = {"from": sender, "value": req.value, "data": req.data}
            if req.to:
                tx["to"] = req.to
            gas_limit = gas or self.hook.estimate_gas(tx)  # a revert fails here: no nonce is consumed
            fees = self.hook.fees()
        except Exception as exc:
            if not self._write(chain_id, key, generation, statuses=("preparing",), status="rejected",
                               error=str(exc)[:500]):
                raise Superseded(key, generation) from exc
            raise
        for _attempt in range(5):
            lease = self.nonces.allocate(chain_id, sender, guard=self._guard(chain_id, key, generation))
            try:
                unsigned = {"type": 2, "chainId": chain_id, "nonce": lease.nonce, "gas": gas_limit,
                            "maxFeePerGas": fees.max_fee_per_gas,
                            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
                            "value": req.value, "data": req.data}
                if req.to:
                    from eth_utils import to_checksum_address

                    unsigned["to"] = to_checksum_address(req.to)
                txid, raw = self.hook.sign(unsigned)
                # Ledger before side effect: the signed bytes are durable before the node sees them,
                # and the nonce passes from the lease to this row in the same database transaction.
                conn = self.nonces.conn
                try:
                    with conn.cursor() as cur:
                        # broadcasts counts the sends of this signature, started ones included
                        owned = self._fenced(cur, chain_id, key, generation, statuses=("preparing",), broadcasts=1,
                                             nonce=lease.nonce, tx_hash=txid, raw_tx=raw, gas_limit=gas_limit,
                                             max_fee_per_gas=fees.max_fee_per_gas,
                                             max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
                                             status="signed", error=None)
                        if owned:
                            self.nonces.commit_in(cur, lease)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                if not owned:
                    raise Superseded(key, generation)
            except BaseException:
                if not lease.done:
                    lease.release()  # nothing was sent with it
                raise
            row = self._deliver(chain_id, sender, key, generation, txid, raw, lease.nonce, first=True)
            if row is not None:
                return row
            generation = self._supersede(chain_id, key, txid, lease.nonce)
        raise TransientError(f"could not find a free nonce for {sender} after 5 attempts", system=SYSTEM,
                             reason="evm:nonce_contention")

    # ----------------------------------------------------------------- delivery
    def _deliver(self, chain_id: int, sender: str, key: str, generation: int, txid: str, raw: str, nonce: int,
                 *, first: bool) -> dict[str, Any] | None:
        """Send the signed bytes (again); the row once the node has them, None once the nonce is proven
        used by another transaction (the caller re-signs). A lost answer never releases the nonce:
        the row stays ``signed`` and a later attempt sends the same bytes."""
        last: BaseException | None = None
        for attempt in range(SEND_ATTEMPTS):
            if attempt:
                time.sleep(0.05 * attempt)
                self._write(chain_id, key, generation, statuses=("signed", "sent"), of_tx=txid, bump=True)
            try:
                self.hook.send_raw(raw, txid)
                return self._mark_sent(chain_id, key, generation, txid)
            except NonceTooLow:
                # "nonce too low" with our transaction unknown: mined by us and a lagging node, or
                # another transaction took the nonce. Only the chain decides.
                fate = self.nonce_fate(sender, nonce, txid)
                if fate == "ours":
                    return self._mark_sent(chain_id, key, generation, txid)
                if fate == "other":
                    return None
                raise TransientError(f"nonce {nonce} of {sender} is not yet proven used at"
                                     f" {self.hook.confirmations} confirmation(s); transaction {txid} stays signed"
                                     " and is sent again by the next attempt", system=SYSTEM,
                                     reason="evm:nonce_unproven") from None
            except Exception as exc:
                if first and attempt == 0 and getattr(exc, "node_answered", False) \
                        and self._write(chain_id, key, generation, statuses=("signed",), of_tx=txid,
                                        first_send=True, status="rejected", error=str(exc)[:500]):
                    # The node refused the bytes with an answer, and no other attempt has started
                    # sending them (the write above is fenced on broadcasts = 1): they never reached
                    # a chain, the nonce is free.
                    self.nonces.release_nonce(chain_id, sender, nonce)
                    raise
                try:  # a positive lookup is proof the node has it; null proves nothing
                    if self.hook.get_transaction(txid) is not None:
                        return self._mark_sent(chain_id, key, generation, txid)
                except Exception:
                    pass
                last = exc
                if getattr(exc, "node_answered", False):
                    break
        raise TransientError(f"the outcome of sending transaction {txid} is unknown ({type(last).__name__}:"
                             f" {last}); it stays signed with nonce {nonce} and the next attempt sends the same"
                             " bytes", system=SYSTEM, reason="evm:send_unknown") from last

    def _mark_sent(self, chain_id: int, key: str, generation: int, txid: str) -> dict[str, Any]:
        self._write(chain_id, key, generation, statuses=("signed",), of_tx=txid, status="sent", error=None)
        row = self.ledger.get(chain_id, key)
        if row is None or row["tx_hash"] != txid:
            raise Superseded(key, generation)
        return row

    def _supersede(self, chain_id: int, key: str, txid: str, nonce: int) -> int:
        """The nonce of ``txid`` is proven used by another transaction: ``txid`` can never be mined.
        The row goes back to 'preparing' under a new generation (the caller signs anew)."""
        conn = self.nonces.conn
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE evm_transactions SET status = 'preparing', generation = generation + 1,"
                            " superseded_tx_hashes = array_append(superseded_tx_hashes, tx_hash),"
                            " tx_hash = NULL, raw_tx = NULL, nonce = NULL, error = %s, updated_at = now()"
                            " WHERE chain_id = %s AND idempotency_key = %s AND tx_hash = %s"
                            " AND status IN ('signed', 'sent') RETURNING generation",
                            (f"nonce {nonce} used by another transaction; {txid} re-signed", chain_id, key, txid))
                row = cur.fetchone()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        if row is None:
            raise Superseded(key, -1)
        log.warning("transaction %s can never be mined (nonce %d used by another transaction): signing %r again",
                    txid, nonce, key)
        return int(row[0])

    def nonce_fate(self, address: str, nonce: int, txid: str) -> str:
        """'ours' when ``txid`` is on chain; 'other' when ``nonce`` of ``address`` is used, at the
        Connection's confirmation depth, by a transaction with another hash; 'unknown' otherwise.
        Read from the chain (transaction count per block, then the block that used the nonce), never
        from a null answer of ``eth_getTransactionByHash``."""
        try:
            if self.hook.get_receipt(txid) is not None:
                return "ours"
        except Exception:
            pass
        safe = self.hook.block_number() - self.hook.confirmations + 1
        if safe < 0:
            return "unknown"

        def count(block: int) -> int:
            return int(self.hook.call_rpc("eth_getTransactionCount", [address, hex(block)]), 16)

        if count(safe) <= nonce:
            return "unknown"
        low, high = 0, safe  # the first block after which the account's count passed the nonce
        while low < high:
            mid = (low + high) // 2
            if count(mid) > nonce:
                high = mid
            else:
                low = mid + 1
        block = self.hook.get_block(low, full=True) or {}
        for tx in block.get("transactions", []):
            if isinstance(tx, dict) and str(tx.get("from", "")).lower() == address.lower() \
                    and int(tx["nonce"], 16) == nonce:
                return "ours" if str(tx["hash"]).lower() == txid.lower() else "other"
        raise TransientError(f"block {low} raised the transaction count of {address} past {nonce} but holds no"
                             " such transaction (inconsistent node answers)", system=SYSTEM,
                             reason="evm:inconsistent_node")

    def rebroadcast(self, row: dict[str, Any]) -> dict[str, Any]:
        """Send the same signed bytes again (a lost answer, a drop or a reorg). A new signature only
        once the nonce is proven used by another transaction (:meth:`nonce_fate`)."""
        chain_id, key, generation, txid = row["chain_id"], row["idempotency_key"], row["generation"], row["tx_hash"]
        if not self._write(chain_id, key, generation, statuses=("signed", "sent"), of_tx=txid, bump=True):
            current = self.ledger.get(chain_id, key)
            if current is not None and current["tx_hash"] == txid and current["status"] in ("mined", "confirmed",
                                                                                             "failed"):
                return current
            raise Superseded(key, generation)
        sent = self._deliver(chain_id, row["from_address"], key, generation, txid, row["raw_tx"], row["nonce"],
                             first=False)
        if sent is not None:
            return sent
        generation = self._supersede(chain_id, key, txid, row["nonce"])
        request = TxRequest(idempotency_key=key, kind=row["kind"], data=self._data_of(row), to=row["to_address"],
                            value=row["value_wei"], contract_name=row["contract_name"],
                            function_name=row["function_name"], args=row["args"])
        return self._sign_and_send(chain_id, row["from_address"], request, generation, row["gas_limit"])

    def _data_of(self, row: dict[str, Any]) -> str:
        """The calldata of the signed transaction (to sign the same request again)."""
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        tx = TypedTransaction.from_bytes(HexBytes(row["raw_tx"])).as_dict()
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
