"""Bitcoin settlements: pay a list of payouts with ONE wallet transaction, exactly once.

The settlement domain, in the order a run meets it:

* **validation** (pure): addresses are decoded against the node's chain by
  :mod:`tributary.bitcoin.addresses`; amounts are exact decimals (positive, at most 8 decimals, not
  dust for the output's script, at most 21M BTC). A bad payout is a :class:`DataError` naming every
  reason, raised before anything is funded or signed.
* **claim**: register a settlement id bound to the fingerprint of its payouts, or pick up pending
  rows other systems inserted (:class:`~tributary.bitcoin.ledger.SettlementLedger` holds the SQL).
* **sign and broadcast**: ``walletcreatefundedpsbt`` -> ``walletprocesspsbt`` -> ``finalizepsbt``,
  the signed transaction committed to the ledger *before* ``sendrawtransaction``, so a retry
  re-broadcasts the same bytes.
* **confirmation**: :func:`confirmation_plan` says what to watch, :func:`apply_event` acts on what
  :class:`~tributary.bitcoin.triggers.TransactionConfirmedTrigger` saw (confirmed, stuck -> RBF
  ``bumpfee``, replaced, reorged / dropped -> re-broadcast). The deferrable task that loops between
  the two is :class:`~tributary.bitcoin.operators.SettlementConfirmationOperator`.

Every step is safe to run twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.addresses import address_script, script_address, witness_program
from tributary.bitcoin.amounts import MAX_MONEY_SATS, SATS_PER_BTC
from tributary.bitcoin.ledger import NOW, SettlementLedger
from tributary.core.errors import DataError, ErrorClass, PermanentError, SecurityError, TransientError, classify
from tributary.core.triggers import Status
from tributary.storage import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    from tributary.bitcoin.hook import BitcoinCoreHook

log = logging.getLogger(__name__)

DUST_RELAY_SAT_PER_KVB = 3000  # Core's -dustrelayfee default
STATUSES = ("pending", "signed", "broadcast", "confirmed", "failed")
SETTLEMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_MAX_FEE_SATS = 100_000
# Reject texts meaning "these inputs are spent by another transaction" (Core's -25 / -26 messages).
_CONFLICT_MARKERS = ("missingorspent", "missing inputs", "mempool-conflict", "insufficient fee", "replacement")


# =========================================================================== where it runs
@dataclass(frozen=True)
class SettlementConfig:
    """The Connections a settlement uses: the node (and its wallet) and the warehouse."""

    conn_id: str = "tributary_bitcoin"
    warehouse_conn_id: str = WAREHOUSE_CONN_ID
    wallet: str | None = None

    def hook(self, wallet: str | None = None) -> BitcoinCoreHook:
        """The node; calls go to ``wallet`` (a settlement's own), else this config's, else the Connection's."""
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(self.conn_id, wallet=wallet or self.wallet)

    def ledger(self) -> AbstractContextManager[SettlementLedger]:
        return SettlementLedger.session(self.warehouse_conn_id)


# =========================================================================== validation (pure)
@dataclass(frozen=True)
class Payout:
    address: str
    amount_sats: int
    script_pubkey: bytes

    @property
    def amount_btc(self) -> str:
        return format((Decimal(self.amount_sats) / SATS_PER_BTC).quantize(Decimal("0.00000001")), "f")

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "amount_btc": self.amount_btc, "amount_sats": self.amount_sats}


@dataclass(frozen=True)
class FeePolicy:
    conf_target: int | None = None
    fee_rate: Decimal | None = None  # sat/vB
    max_fee_sats: int = DEFAULT_MAX_FEE_SATS

    @classmethod
    def from_json(cls, policy: Any) -> FeePolicy:
        if policy is None:
            policy = {}
        if not isinstance(policy, Mapping):  # a table row may hold any JSON here: a list, a string, a number
            raise DataError(f"fee policy must be an object, not {type(policy).__name__} {policy!r:.80}",
                            system=SYSTEM, reason="invalid_fee_policy")
        policy = dict(policy)
        unknown = set(policy) - {"conf_target", "fee_rate", "max_fee_sats"}
        if unknown:
            raise DataError(f"fee policy: unknown keys {sorted(unknown)}", system=SYSTEM, reason="invalid_fee_policy")
        conf_target, fee_rate, max_fee = policy.get("conf_target"), policy.get("fee_rate"), policy.get("max_fee_sats")
        if conf_target is not None and fee_rate is not None:
            raise DataError("fee policy: give conf_target or fee_rate, not both", system=SYSTEM,
                            reason="invalid_fee_policy")
        if conf_target is not None and (isinstance(conf_target, bool) or not isinstance(conf_target, int)
                                        or not 1 <= conf_target <= 1008):
            raise DataError(f"fee policy: conf_target {conf_target!r} is not an integer in 1..1008", system=SYSTEM,
                            reason="invalid_fee_policy")
        rate = None
        if fee_rate is not None:
            try:
                rate = Decimal(str(fee_rate))
            except InvalidOperation:
                rate = None
            if rate is None or isinstance(fee_rate, bool) or not rate.is_finite() or not 1 <= rate <= 10_000:
                raise DataError(f"fee policy: fee_rate {fee_rate!r} is not a number of sat/vB in 1..10000",
                                system=SYSTEM, reason="invalid_fee_policy")
        if max_fee is None:
            max_fee = DEFAULT_MAX_FEE_SATS
        if isinstance(max_fee, bool) or not isinstance(max_fee, int) or not 0 < max_fee <= MAX_MONEY_SATS:
            raise DataError(f"fee policy: max_fee_sats {max_fee!r} is not a positive integer", system=SYSTEM,
                            reason="invalid_fee_policy")
        return cls(conf_target, rate, max_fee)

    def to_json(self) -> dict[str, Any]:
        return {"conf_target": self.conf_target, "fee_rate": None if self.fee_rate is None else str(self.fee_rate),
                "max_fee_sats": self.max_fee_sats}

    def funding_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"replaceable": True}
        if self.fee_rate is not None:
            options["fee_rate"] = self.fee_rate
        elif self.conf_target is not None:
            options["conf_target"] = self.conf_target
            options["estimate_mode"] = "economical"
        return options


def parse_amount(value: Any) -> int:
    """An amount in BTC (string or JSON number, at most 8 decimals) -> satoshis; ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"amount {value!r} is not a string or a number")
    text = value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not finite")
    if amount.adjusted() > 8:  # >= 1e9 BTC: refused here, before quantize overflows the context precision
        raise ValueError(f"amount {value!r:.60} exceeds 21,000,000 BTC")
    try:
        extra_decimals = amount.as_tuple().exponent < -8 and amount != amount.quantize(Decimal("0.00000001"))
    except InvalidOperation:  # more digits than the decimal context holds
        raise ValueError(f"amount {value!r:.60} has more digits than an amount can have") from None
    if extra_decimals:
        raise ValueError(f"amount {value!r} has more than 8 decimals")
    sats = int(amount * SATS_PER_BTC)
    if sats <= 0:
        raise ValueError(f"amount {value!r} is not positive")
    if sats > MAX_MONEY_SATS:
        raise ValueError(f"amount {value!r} exceeds 21,000,000 BTC")
    return sats


def dust_threshold(script_pubkey: bytes) -> int:
    """Core's GetDustThreshold at the default dust relay fee (294 sat for P2WPKH, 546 for P2PKH, ...)."""
    size = 8 + 1 + len(script_pubkey)
    size += 67 if witness_program(script_pubkey) is not None else 148  # a witness input spends it cheaper
    return size * DUST_RELAY_SAT_PER_KVB // 1000


def validate_payouts(payouts: Any, network: str) -> list[Payout]:
    """Every payout checked; a :class:`DataError` listing each bad one (index and reason) otherwise."""
    if not isinstance(payouts, list) or not payouts:
        raise DataError("payouts must be a non-empty list of {address, amount_btc}", system=SYSTEM,
                        reason="invalid_payouts")
    problems: list[str] = []
    valid: list[Payout] = []
    seen: set[str] = set()
    for index, item in enumerate(payouts):
        if not isinstance(item, Mapping) or set(item) - {"address", "amount_btc", "amount_sats"}:
            problems.append(f"payout {index}: expected an object with address and amount_btc")
            continue
        address = item.get("address")
        try:
            script = address_script(address, network)
        except ValueError as exc:
            problems.append(f"payout {index}: invalid address {address!r} for {network}: {exc}")
            continue
        canonical = script_address(script, network) or address  # bech32 in lower case
        try:
            sats = parse_amount(item.get("amount_btc"))
        except ValueError as exc:
            problems.append(f"payout {index}: {exc}")
            continue
        if "amount_sats" in item and item["amount_sats"] != sats:
            problems.append(f"payout {index}: amount_sats {item['amount_sats']!r} disagrees with amount_btc")
            continue
        if sats < dust_threshold(script):
            problems.append(f"payout {index}: {sats} sat is dust for this output (< {dust_threshold(script)} sat)")
            continue
        if canonical in seen:
            problems.append(f"payout {index}: address {canonical} appears twice (merge the amounts)")
            continue
        seen.add(canonical)
        valid.append(Payout(canonical, sats, script))
    if not problems and sum(p.amount_sats for p in valid) > MAX_MONEY_SATS:
        problems.append("the payouts add up to more than 21,000,000 BTC")
    if problems:
        raise DataError("invalid payouts: " + "; ".join(problems), system=SYSTEM, reason="invalid_payouts",
                        quarantined=len(problems))
    return valid


def fingerprint(payouts: Sequence[Payout]) -> str:
    """Order-independent hash of (address, satoshis): what binds a settlement id to its payouts."""
    canonical = sorted((p.address, p.amount_sats) for p in payouts)
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def check_outputs(raw_tx: str, payouts: Sequence[Payout]) -> tuple[str, list[tuple[bytes, int]]]:
    """(txid, extra outputs) of a signed transaction that must pay every payout exactly once.

    Raises :class:`SecurityError` when a payout is missing, changed or paid twice: what the wallet
    signed is not what was asked.
    """
    from bitcoin.core import CTransaction, b2lx

    tx = CTransaction.deserialize(bytes.fromhex(raw_tx))
    outputs = Counter((bytes(o.scriptPubKey), o.nValue) for o in tx.vout)
    wanted = Counter((p.script_pubkey, p.amount_sats) for p in payouts)
    missing = wanted - outputs
    if missing:
        raise SecurityError(f"transaction {b2lx(tx.GetTxid())} does not pay {sum(missing.values())} of the payouts "
                            "exactly", system=SYSTEM, reason="outputs_mismatch")
    extra = list((outputs - wanted).elements())
    paid_scripts = {p.script_pubkey for p in payouts}
    if any(script in paid_scripts for script, _ in extra):
        raise SecurityError(f"transaction {b2lx(tx.GetTxid())} pays a payout address twice", system=SYSTEM,
                            reason="outputs_mismatch")
    return b2lx(tx.GetTxid()), extra


def payouts_from_row(payouts: Any, network: str) -> list[Payout]:
    return validate_payouts(list(payouts), network)


# =========================================================================== reporting
def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a run reports for a settlement (JSON-safe; XCom of the DAG's tasks)."""
    return {
        "settlement_id": row["id"], "status": row["status"], "network": row["network"], "txid": row["txid"],
        "replaced_txids": list(row["replaced_txids"]), "fee_sats": row["fee_sats"],
        "confirmations": row["confirmations"], "confirmations_required": row["confirmations_required"],
        "block_hash": row["block_hash"], "block_height": row["block_height"], "total_sats": row["total_sats"],
        "payouts": row["payouts"], "last_error": row["last_error"],
    }


def summaries(ids: Sequence[str], config: SettlementConfig) -> list[dict[str, Any]]:
    """What the ledger says of each of a run's settlements (once each, in order; one log line each)."""
    with config.ledger() as ledger:
        rows = [row for sid in dict.fromkeys(ids) if (row := ledger.load(sid)) is not None]
    for row in rows:
        log.info("%s: %s txid=%s confirmations=%s fee=%s replaced=%s", row["id"], row["status"], row["txid"],
                 row["confirmations"], row["fee_sats"], row["replaced_txids"])
    return [summary(row) for row in rows]


def run_outcome(result: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
                claim_error: Mapping[str, Any] | None) -> None:
    """Fail the run with the class that explains it, once its summaries are published."""
    if claim_error:  # the run settled nothing: fail it with the claim's class and reason
        error = DataError if claim_error["error_class"] == ErrorClass.DATA else PermanentError
        raise error(f"claim failed: {claim_error['message']}", system=SYSTEM, reason="claim_failed")
    if rejected:
        raise DataError(f"{len(rejected)} settlement(s) rejected: {list(rejected)}", system=SYSTEM,
                        reason="invalid_payouts", quarantined=len(rejected))
    failed = [r for r in result if r["status"] != "confirmed"]
    if failed:
        raise PermanentError(f"{len(failed)} settlement(s) not confirmed: "
                             + ", ".join(f"{r['settlement_id']} ({r['status']}: {r['last_error']})" for r in failed),
                             system=SYSTEM, reason="settlement_failed")


# =========================================================================== workflow (hook + ledger)
def claim(params: Mapping[str, Any], *, run_id: str | None, config: SettlementConfig) -> tuple[list[str], list[dict]]:
    """Register or pick up the settlements of a run: (ids to settle, rejected [{settlement_id, error}]).

    With ``payouts``: one settlement ``settlement_id`` (registered, or matched against its ledger row).
    Without: that one id when given, else up to ``max_settlements`` pending rows of the table. A row
    whose payouts fail validation is marked failed (nothing signed) and returned in ``rejected``.
    """
    hook = config.hook()
    network = hook.chain_name()
    wallet = hook.wallet
    settlement_id = params.get("settlement_id") or None
    payouts = params.get("payouts") or []
    with config.ledger() as ledger:
        if payouts:
            if not settlement_id:
                raise DataError("settlement_id is required with payouts", system=SYSTEM, reason="invalid_params")
            try:
                valid = validate_payouts(payouts, network)
                policy = FeePolicy.from_json(params.get("fee_policy"))
            except DataError as exc:
                _register_rejected(ledger, settlement_id, payouts, params, network, exc, run_id)
                raise
            _register(ledger, settlement_id, valid, policy, params, network, wallet, run_id)
            return [settlement_id], []
        ids = [settlement_id] if settlement_id else ledger.pending_ids(int(params.get("max_settlements") or 50))
        accepted, rejected = [], []
        for sid in ids:
            row = ledger.load(sid, lock=True)
            if row is None:
                raise PermanentError(f"settlement {sid!r} does not exist and no payouts were given", system=SYSTEM,
                                     reason="unknown_settlement")
            if row["status"] != "pending" or row["payouts_sha256"]:
                if settlement_id:
                    ledger.record_event(sid, "retriggered", status=row["status"], txid=row["txid"], run_id=run_id)
                ledger.commit()
                accepted.append(sid)
                continue
            # Whatever another system wrote into this row, it fails this row only: the loop goes on
            # with the others (a raise here would stop every run on the same row, for ever).
            try:
                _validate_row(ledger, row, network, wallet, run_id)
            except Exception as exc:
                if classify(exc).error_class is ErrorClass.TRANSIENT:
                    raise  # the warehouse or the node, not the row: the whole claim is retried
                ledger.fail(sid, exc, run_id)
                rejected.append({"settlement_id": sid, "error": f"[{classify(exc).error_class}] {exc}"[:2000]})
                continue
            accepted.append(sid)
        log.info("claimed %d settlement(s), rejected %d", len(accepted), len(rejected))
        return accepted, rejected


def _validate_row(ledger: SettlementLedger, row: Mapping[str, Any], network: str, wallet: str | None,
                  run_id: str | None) -> None:
    """Validate a pending row another system inserted and store it normalised (committed)."""
    sid = row["id"]
    if row["network"] and row["network"] != network:  # before any address is decoded for that network
        raise PermanentError(f"settlement is for network {str(row['network'])[:40]!r}, the node serves {network}",
                             system=SYSTEM, reason="network_mismatch")
    valid = validate_payouts(row["payouts"], network)
    policy = FeePolicy.from_json(row["fee_policy"])
    ledger.update(sid, payouts=[p.to_json() for p in valid], payouts_sha256=fingerprint(valid),
                  total_sats=sum(p.amount_sats for p in valid), fee_policy=policy.to_json(), network=network,
                  wallet=row["wallet"] or wallet, dag_run_id=run_id)
    ledger.record_event(sid, "validated", status="pending", run_id=run_id, payouts=len(valid))
    ledger.commit()


def _register(ledger: SettlementLedger, sid: str, valid: list[Payout], policy: FeePolicy, params: Mapping[str, Any],
              network: str, wallet: str | None, run_id: str | None) -> None:
    digest = fingerprint(valid)
    inserted = ledger.insert(sid, status="pending", network=network, wallet=wallet,
                             payouts=[p.to_json() for p in valid], payouts_sha256=digest,
                             total_sats=sum(p.amount_sats for p in valid), fee_policy=policy.to_json(),
                             confirmations_required=int(params.get("confirmations") or 1),
                             bump_after_minutes=params.get("bump_after_minutes"), run_id=run_id)
    row = ledger.load(sid, lock=True)
    assert row is not None
    if inserted:
        ledger.record_event(sid, "registered", status="pending", run_id=run_id, payouts=len(valid),
                            total_sats=row["total_sats"])
    elif row["status"] == "failed" and not row["raw_tx"] and row["payouts_sha256"] != digest:
        # A rejected settlement never signed anything: it may be registered again with corrected payouts.
        ledger.update(sid, status="pending", network=network, wallet=wallet,
                      payouts=[p.to_json() for p in valid], payouts_sha256=digest,
                      total_sats=sum(p.amount_sats for p in valid),
                      fee_policy=policy.to_json(), confirmations_required=int(params.get("confirmations") or 1),
                      bump_after_minutes=params.get("bump_after_minutes"), last_error=None, dag_run_id=run_id)
        ledger.record_event(sid, "registered", status="pending", run_id=run_id, payouts=len(valid),
                            retry_of_failed=True)
    else:
        stored = row["payouts_sha256"]
        if stored is None:  # inserted by another system and not validated yet
            try:
                stored = fingerprint(validate_payouts(row["payouts"], network))
            except DataError:
                stored = "invalid"
        if stored != digest:
            ledger.rollback()
            raise PermanentError(f"settlement id reused with different payouts: {sid!r} is already registered "
                                 f"(status {row['status']}) with other payouts", system=SYSTEM,
                                 reason="settlement_id_reused")
        if row["status"] == "failed" and not row["raw_tx"]:
            ledger.update(sid, status="pending", last_error=None, dag_run_id=run_id)
            ledger.record_event(sid, "registered", status="pending", run_id=run_id, retry_of_failed=True)
        else:
            if row["payouts_sha256"] is None:
                ledger.update(sid, payouts=[p.to_json() for p in valid], payouts_sha256=digest, network=network,
                              wallet=wallet, total_sats=sum(p.amount_sats for p in valid))
            ledger.record_event(sid, "retriggered", status=row["status"], txid=row["txid"], run_id=run_id)
    ledger.commit()


def _register_rejected(ledger: SettlementLedger, sid: str | None, payouts: Any, params: Mapping[str, Any], network: str,
                       error: DataError, run_id: str | None) -> None:
    if not sid:
        return
    if ledger.insert(sid, status="failed", network=network, payouts=payouts, fee_policy=params.get("fee_policy") or {},
                     confirmations_required=int(params.get("confirmations") or 1), run_id=run_id,
                     last_error=f"[{ErrorClass.DATA}] {error}"[:2000]):
        ledger.record_event(sid, "rejected", status="failed", run_id=run_id, error=str(error))
    ledger.commit()


def _wallet_payment(hook: BitcoinCoreHook, payouts: Sequence[Payout], exclude: set[str]) -> dict[str, Any] | None:
    """A wallet transaction (not conflicted, not in the ledger) paying exactly these payouts, if any."""
    from tributary.bitcoin.amounts import btc_to_sats

    sends: dict[str, Counter] = {}
    for row in hook.call("listtransactions", "*", 200, 0):
        if row.get("category") != "send" or row.get("txid") in exclude or int(row.get("confirmations", 0)) < 0:
            continue
        if row.get("replaced_by_txid") or row.get("abandoned"):
            continue
        sends.setdefault(row["txid"], Counter())[(row.get("address"), -btc_to_sats(str(row["amount"])))] += 1
    wanted = Counter((p.address, p.amount_sats) for p in payouts)
    for txid, paid in sends.items():
        if paid == wanted:
            return hook.get_transaction(txid)
    return None


def _broadcast(hook: BitcoinCoreHook, ledger: SettlementLedger, row: dict[str, Any],
               run_id: str | None) -> dict[str, Any]:
    """Send the stored raw transaction (a no-op when the node already has it); the ledger says broadcast."""
    from tributary.bitcoin.hook import BitcoinRpcError

    sid, txid = row["id"], row["txid"]
    try:
        hook.send_raw_transaction(row["raw_tx"])
    except BitcoinRpcError as exc:
        if exc.code not in (-25, -26):
            raise
        # Inputs gone or replacement refused: maybe one of our own transactions already spends them.
        state = chain_state(hook, row)
        text = exc.rpc_message.lower()
        conflict = any(m in text for m in _CONFLICT_MARKERS)
        if state["winner"] is None and state["replacement"] is None and not conflict:
            # e.g. mempool full / min relay fee: the transaction is still valid, a later try may succeed
            raise TransientError(f"broadcast of {txid} refused for now: {exc.rpc_message}", system=SYSTEM,
                                 reason=exc.reason) from exc
        if state["winner"] is None and state["replacement"] is None:
            error = PermanentError(f"the signed transaction {txid} was rejected ({exc.rpc_message}) and no "
                                   "transaction of this settlement is on chain or in the mempool: its inputs were "
                                   "spent elsewhere; nothing of it can confirm (check the wallet before paying "
                                   "again under a new id)", system=SYSTEM, reason=exc.reason)
            ledger.rollback()
            ledger.update(sid, status="failed", last_error=f"[{ErrorClass.PERMANENT}] {error}"[:2000],
                          dag_run_id=run_id)
            ledger.record_event(sid, "failed", status="failed", txid=txid, run_id=run_id, error=str(error))
            ledger.commit()
            # its inputs that were not spent elsewhere are still locked for it: give them back
            released = release_inputs(hook, _tx_inputs(row["raw_tx"]))
            if released:
                ledger.record_event(sid, "inputs_unlocked", status="failed", txid=txid, run_id=run_id,
                                    inputs=[f"{t}:{n}" for t, n in released])
                ledger.commit()
            raise error from exc
        log.info("settlement %s: broadcast of %s refused (%s); a related transaction is known", sid, txid,
                 exc.reject_reason)
    first = row["status"] == "signed"
    if first or row["status"] != "broadcast":
        ledger.update(sid, status="broadcast", broadcast_at=NOW if first else row["broadcast_at"], dag_run_id=run_id)
    ledger.record_event(sid, "broadcast" if first else "rebroadcast", status="broadcast", txid=txid, run_id=run_id)
    ledger.commit()
    return ledger.load(sid) or row


def sign_and_broadcast(settlement_id: str, *, run_id: str | None, config: SettlementConfig) -> dict[str, Any]:
    """Fund, sign and broadcast the settlement's one transaction — or find that it already was.

    Order of writes makes it safe to repeat at any point: the signed transaction and its txid are
    committed to the ledger before ``sendrawtransaction``; a repeat re-broadcasts those bytes, which
    the node answers as already known.
    """
    from tributary.bitcoin.amounts import btc_to_sats

    with config.ledger() as ledger:
        row = ledger.load(settlement_id)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        hook = config.hook(row["wallet"])
        with ledger.wallet_lock(hook.wallet):
            row = ledger.load(settlement_id, lock=True)
            assert row is not None
            status = row["status"]
            if status == "failed":
                raise PermanentError(f"settlement {settlement_id} failed earlier: {row['last_error']}",
                                     system=SYSTEM, reason="settlement_failed")
            if status == "confirmed":
                state = chain_state(hook, row)
                if state["winner"] is not None:
                    ledger.record_event(settlement_id, "already_settled", status="confirmed", txid=row["txid"],
                                        run_id=run_id, confirmations=state["confirmations"])
                    ledger.commit()
                    return summary(row)
                row = _unconfirm(ledger, row, Status.REORGED.value, txid=row["txid"], orphaned_block=row["block_hash"],
                                 run_id=run_id)
            if status == "pending":
                _flush_signed(hook, ledger, row["wallet"], settlement_id, run_id)
                row = ledger.load(settlement_id, lock=True)
                assert row is not None
                payouts = payouts_from_row(row["payouts"], row["network"])
                if row["payouts_sha256"] != fingerprint(payouts):
                    raise SecurityError(f"settlement {settlement_id}: stored payouts do not match their fingerprint",
                                        system=SYSTEM, reason="ledger_tampered")
                found = _wallet_payment(hook, payouts, ledger.known_txids())
                if found is not None:
                    ledger.update(settlement_id, status="signed", txid=found["txid"], raw_tx=found["hex"],
                                  fee_sats=-btc_to_sats(str(found.get("fee", 0))), signed_at=NOW, dag_run_id=run_id)
                    ledger.record_event(settlement_id, "adopted_wallet_transaction", status="signed",
                                        txid=found["txid"], run_id=run_id)
                else:
                    policy = FeePolicy.from_json(row["fee_policy"])
                    outputs = [{p.address: Decimal(p.amount_btc)} for p in payouts]
                    # lockUnspents: the coins stay locked until the transaction is broadcast (the wallet
                    # unlocks a coin when a transaction of its own spends it), so no other funding, fee
                    # bump or manual send of this wallet selects them while the run may still die.
                    try:
                        funded = hook.wallet_create_funded_psbt([], outputs, 0,
                                                                {**policy.funding_options(), "lockUnspents": True})
                    except Exception as exc:
                        _funding_failed(ledger, settlement_id, exc, run_id)
                        raise
                    locked = _psbt_inputs(hook, funded["psbt"])
                    try:
                        fee = btc_to_sats(str(funded["fee"]))
                        if fee > policy.max_fee_sats:
                            error = PermanentError(f"fee {fee} sat exceeds max_fee_sats {policy.max_fee_sats}; "
                                                   "nothing was signed", system=SYSTEM, reason="fee_above_max")
                            ledger.fail(settlement_id, error, run_id)
                            raise error
                        processed = hook.wallet_process_psbt(funded["psbt"], True, "ALL", True, False)
                        final = hook.finalize_psbt(processed["psbt"], True)
                        if not final.get("complete") or not final.get("hex"):
                            raise PermanentError("the wallet could not sign every input of the PSBT", system=SYSTEM,
                                                 reason="psbt_incomplete")
                        txid, extra = check_outputs(final["hex"], payouts)
                        _check_change(hook, extra)
                        ledger.update(settlement_id, status="signed", txid=txid, raw_tx=final["hex"], fee_sats=fee,
                                      signed_at=NOW, dag_run_id=run_id, last_error=None)
                        ledger.record_event(settlement_id, "signed", status="signed", txid=txid, run_id=run_id,
                                            fee_sats=fee, fee_policy=policy.to_json(),
                                            locked_inputs=[f"{t}:{n}" for t, n in locked])
                        ledger.commit()  # the signed transaction is durable before anything is broadcast
                    except BaseException:
                        # nothing of this funding was stored: give its coins back to the wallet
                        release_inputs(hook, locked)
                        raise
                ledger.commit()
                row = ledger.load(settlement_id, lock=True)
                assert row is not None
            result = _broadcast(hook, ledger, row, run_id)
            return summary(result)


def _funding_failed(ledger: SettlementLedger, settlement_id: str, error: BaseException, run_id: str | None) -> None:
    """A node that is warming up (-28), without peers (-9), in initial download (-10), failing
    internally (-32603) or not answering in time may fund on a later try: the row stays ``pending`` and
    the task is retried. Any other funding error (insufficient funds, ...) fails the row."""
    from tributary.bitcoin.hook import BitcoinRpcError

    classification = classify(error)
    if classification.error_class is not ErrorClass.TRANSIENT:
        if isinstance(error, BitcoinRpcError):  # the node's answer: it will answer the same next time
            ledger.fail(settlement_id, error, run_id)
        else:
            ledger.rollback()
        return
    ledger.rollback()
    message = f"[{classification.error_class}] {error}"[:2000]
    ledger.update(settlement_id, last_error=message, dag_run_id=run_id)
    ledger.record_event(settlement_id, "funding_deferred", status="pending", run_id=run_id, error=message,
                        reason=classification.reason)
    ledger.commit()


def _psbt_inputs(hook: BitcoinCoreHook, psbt: str) -> list[tuple[str, int]]:
    """The outpoints a funded PSBT spends (``decodepsbt``, a read)."""
    decoded = hook.call("decodepsbt", psbt, wallet="")
    return [(str(i["txid"]), int(i["vout"])) for i in decoded["tx"]["vin"]]


def _tx_inputs(raw_tx: str) -> list[tuple[str, int]]:
    from bitcoin.core import CTransaction, b2lx

    tx = CTransaction.deserialize(bytes.fromhex(raw_tx))
    return [(b2lx(i.prevout.hash), int(i.prevout.n)) for i in tx.vin]


def release_inputs(hook: BitcoinCoreHook, outpoints: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Unlock those of ``outpoints`` the wallet still holds locked; returns them.

    Best effort by design: it runs on failure paths, where the original error is the one to report;
    a coin left locked is unavailable to the wallet (never spent twice) until the node restarts or
    ``lockunspent true`` is run, and the warning says which.
    """
    try:
        held = {(str(o["txid"]), int(o["vout"])) for o in hook.call("listlockunspent")}
        mine = [o for o in outpoints if o in held]
        if mine:
            hook.call("lockunspent", True, [{"txid": t, "vout": n} for t, n in mine])
        return mine
    except Exception as exc:
        log.warning("could not unlock the coins %s of a failed settlement (they stay unavailable until "
                    "`lockunspent true` or a node restart): %s", [f"{t}:{n}" for t, n in outpoints], exc)
        return []


def _flush_signed(hook: BitcoinCoreHook, ledger: SettlementLedger, wallet: str | None, current: str,
                  run_id: str | None) -> None:
    """Broadcast other settlements' signed-but-never-broadcast transactions (a run died in between)
    before funding a new one: until they are in the mempool the wallet sees their coins as unspent and
    could fund this settlement with them, and the two transactions would then conflict."""
    others = ledger.signed_ids(wallet, exclude=current)
    ledger.commit()
    for other in others:
        row = ledger.load(other, lock=True)
        if row is None or row["status"] != "signed":
            ledger.rollback()
            continue
        try:
            _broadcast(hook, ledger, row, run_id)
        except Exception as exc:  # that settlement's own run reports it; this one goes on
            ledger.rollback()
            log.warning("settlement %s: broadcast of its signed transaction before funding %s failed: %s", other,
                        current, exc)


def _check_change(hook: BitcoinCoreHook, extra: Sequence[tuple[bytes, int]]) -> None:
    """The only output besides the payouts must be change to an address of the wallet."""
    if len(extra) > 1:
        raise SecurityError(f"the funded transaction has {len(extra)} outputs besides the payouts", system=SYSTEM,
                            reason="outputs_mismatch")
    for script, _value in extra:
        address = script_address(script, hook.chain_name())
        if address is None or not hook.call("getaddressinfo", address).get("ismine"):
            raise SecurityError(f"the extra output {address or script.hex()} is not the wallet's change",
                                system=SYSTEM, reason="outputs_mismatch")


def chain_state(hook: BitcoinCoreHook, row: Mapping[str, Any]) -> dict[str, Any]:
    """What the wallet knows of the settlement's transactions (current first, then replaced ones)."""
    from tributary.bitcoin.hook import BitcoinRpcError

    txids = [row["txid"], *[t for t in reversed(row["replaced_txids"]) if t != row["txid"]]]
    winner, replacement, best = None, None, 0
    info: dict[str, Any] = {}
    for txid in txids:
        try:
            tx = hook.get_transaction(txid)
        except BitcoinRpcError as exc:
            if exc.code == -5:
                continue
            raise
        info[txid] = tx
        confirmations = int(tx.get("confirmations") or 0)
        if confirmations > best:
            winner, best = txid, confirmations
        if txid == row["txid"] and tx.get("replaced_by_txid"):
            replacement = tx["replaced_by_txid"]
    return {"winner": winner, "confirmations": best, "replacement": replacement, "transactions": info}


def confirmation_plan(settlement_id: str, *, config: SettlementConfig) -> dict[str, Any]:
    """``{"done": summary}`` when settled, else what the trigger must watch: txids, depth, bump deadline."""
    with config.ledger() as ledger:
        row = ledger.load(settlement_id)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        if row["status"] == "failed":
            raise PermanentError(f"settlement {settlement_id} failed: {row['last_error']}", system=SYSTEM,
                                 reason="settlement_failed")
        if row["status"] == "confirmed":
            return {"done": summary(row)}
        if row["status"] != "broadcast" or not row["txid"]:
            raise TransientError(f"settlement {settlement_id} is {row['status']}, not broadcast yet", system=SYSTEM,
                                 reason="not_broadcast")
        bump_at = None
        policy = FeePolicy.from_json(row["fee_policy"])
        if row["bump_after_minutes"] and (row["fee_sats"] or 0) < policy.max_fee_sats:
            since = row["last_bump_at"] or row["broadcast_at"] or row["updated_at"]
            bump_at = since.timestamp() + float(row["bump_after_minutes"]) * 60
        return {"txids": [row["txid"], *reversed(row["replaced_txids"])],
                "confirmations": int(row["confirmations_required"]), "bump_at": bump_at,
                "wallet": row["wallet"], "seen_blocks": {row["txid"]: row["block_hash"]} if row["block_hash"] else {}}


_CHAIN_EVENTS = (Status.CONFIRMED, Status.STUCK, Status.REPLACED, Status.REORGED, Status.DROPPED)


def apply_event(settlement_id: str, event: Mapping[str, Any], *, run_id: str | None,
                config: SettlementConfig) -> dict[str, Any]:
    """Record what the trigger saw and act on it (bump, adopt a replacement, re-broadcast); the next plan.

    ``event`` is one of the chain events of ``TransactionConfirmedTrigger``; its error and timeout
    events are the operator's to raise.
    """
    try:
        kind = Status(event.get("status"))
    except ValueError:
        kind = None
    if kind not in _CHAIN_EVENTS:
        raise PermanentError(f"unexpected trigger event {dict(event)!r}", system=SYSTEM, reason="trigger_error")
    with config.ledger() as ledger:
        row = ledger.load(settlement_id, lock=kind is not Status.STUCK)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        hook = config.hook(row["wallet"])
        match kind:
            case Status.CONFIRMED:
                _confirm(hook, ledger, row, event, run_id)
            case Status.STUCK:
                # bumpfee may add inputs: it selects coins like a funding does, so it takes the same
                # wallet lock (the wallet lock first, then the row, in the order sign_and_broadcast uses)
                ledger.rollback()
                with ledger.wallet_lock(hook.wallet):
                    row = ledger.load(settlement_id, lock=True)
                    assert row is not None
                    _bump(hook, ledger, row, event, run_id)
                    ledger.commit()
            case Status.REPLACED:
                _adopt_replacement(hook, ledger, row, str(event["replaced_by"]), run_id, reason="replaced_outside")
            case Status.REORGED | Status.DROPPED:
                row = _unconfirm(ledger, row, kind.value, txid=event.get("txid"),
                                 orphaned_block=event.get("orphaned_block"), run_id=run_id)
                if kind is Status.DROPPED or event.get("in_mempool") is False:
                    _broadcast(hook, ledger, row, run_id)
        ledger.commit()
    return confirmation_plan(settlement_id, config=config)


def _unconfirm(ledger: SettlementLedger, row: dict[str, Any], event: str, *, txid: str | None,
               orphaned_block: str | None, run_id: str | None) -> dict[str, Any]:
    """Back to ``broadcast`` when the settlement's transaction left its block (or the mempool); committed."""
    sid = row["id"]
    if row["status"] == "confirmed" or row["block_hash"]:
        ledger.update(sid, status="broadcast", confirmations=0, block_hash=None, block_height=None,
                      confirmed_at=None, dag_run_id=run_id)
    ledger.record_event(sid, event, status="broadcast", txid=txid, run_id=run_id, orphaned_block=orphaned_block)
    ledger.commit()
    row = ledger.load(sid, lock=True)
    assert row is not None
    return row


def _confirm(hook: BitcoinCoreHook, ledger: SettlementLedger, row: dict[str, Any], event: Mapping[str, Any],
             run_id: str | None) -> None:
    from tributary.bitcoin.amounts import btc_to_sats

    sid, winner = row["id"], str(event["txid"])
    fields: dict[str, Any] = {"status": "confirmed", "confirmations": int(event["confirmations"]),
                              "block_hash": event.get("blockhash"), "block_height": event.get("blockheight"),
                              "confirmed_at": NOW, "dag_run_id": run_id, "last_error": None}
    if winner != row["txid"]:
        # An earlier transaction of this settlement won the race against its replacement.
        tx = hook.get_transaction(winner)
        check_outputs(tx["hex"], payouts_from_row(row["payouts"], row["network"]))
        fields.update(txid=winner, raw_tx=tx["hex"], fee_sats=-btc_to_sats(str(tx.get("fee", 0))),
                      replaced_txids=[t for t in [*row["replaced_txids"], row["txid"]] if t != winner])
    ledger.update(sid, **fields)
    ledger.record_event(sid, "confirmed", status="confirmed", txid=winner, run_id=run_id,
                        confirmations=event["confirmations"], block_hash=event.get("blockhash"),
                        block_height=event.get("blockheight"), replaced=winner != row["txid"])


def _bump(hook: BitcoinCoreHook, ledger: SettlementLedger, row: dict[str, Any], event: Mapping[str, Any],
          run_id: str | None) -> None:
    """Replace-by-fee a transaction still unconfirmed after bump_after_minutes, within max_fee_sats."""
    from tributary.bitcoin.amounts import btc_to_sats
    from tributary.bitcoin.hook import BitcoinRpcError

    sid, txid = row["id"], row["txid"]
    if event.get("txid") != txid or row["status"] != "broadcast":
        return  # someone else already bumped or it confirmed meanwhile
    policy = FeePolicy.from_json(row["fee_policy"])
    try:
        entry = hook.call("getmempoolentry", txid, wallet="")
    except BitcoinRpcError as exc:
        if exc.code == -5:  # not in the mempool any more: mined, or dropped (the trigger will say which)
            return
        raise
    vsize, old_fee = int(entry["vsize"]), btc_to_sats(str(entry["fees"]["base"]))
    old_rate = old_fee / vsize
    new_rate = math.ceil(max(old_rate * 1.25, old_rate + 1.0) * 100) / 100
    if math.ceil(new_rate * vsize) > policy.max_fee_sats:
        ledger.update(sid, last_bump_at=NOW)
        ledger.record_event(sid, "bump_skipped", status="broadcast", txid=txid, run_id=run_id, old_fee_sats=old_fee,
                            needed_fee_sats=math.ceil(new_rate * vsize), max_fee_sats=policy.max_fee_sats)
        ledger.update(sid, bump_after_minutes=None)  # no further bump can stay within the cap
        return
    try:
        answer = hook.bump_fee(txid, {"fee_rate": Decimal(str(new_rate))})
    except BitcoinRpcError as exc:
        text = exc.rpc_message.lower()
        if "already bumped by transaction" in text:
            _adopt_replacement(hook, ledger, row, exc.rpc_message.rsplit(" ", 1)[-1], run_id, reason="bumped_before")
            return
        ledger.update(sid, last_bump_at=NOW)
        ledger.record_event(sid, "bump_failed", status="broadcast", txid=txid, run_id=run_id, error=exc.rpc_message)
        return
    _adopt_replacement(hook, ledger, row, str(answer["txid"]), run_id, reason="bumped", old_fee_sats=old_fee,
                       new_fee_sats=btc_to_sats(str(answer["fee"])), fee_rate=new_rate)


def _adopt_replacement(hook: BitcoinCoreHook, ledger: SettlementLedger, row: dict[str, Any], new_txid: str,
                       run_id: str | None, *, reason: str, **detail: Any) -> None:
    """Follow a replacement of the current transaction after checking it pays the same payouts."""
    from tributary.bitcoin.amounts import btc_to_sats

    sid, old = row["id"], row["txid"]
    if new_txid == old or new_txid in row["replaced_txids"]:
        return
    tx = hook.get_transaction(new_txid)
    _, extra = check_outputs(tx["hex"], payouts_from_row(row["payouts"], row["network"]))
    _check_change(hook, extra)
    ledger.update(sid, txid=new_txid, raw_tx=tx["hex"], replaced_txids=[*row["replaced_txids"], old],
                  fee_sats=-btc_to_sats(str(tx.get("fee", 0))), last_bump_at=NOW, dag_run_id=run_id)
    ledger.record_event(sid, "bumped" if reason == "bumped" else "replaced", status="broadcast", txid=new_txid,
                        run_id=run_id, old_txid=old, new_txid=new_txid, reason=reason, **detail)
