"""Bitcoin settlements: pay a list of payouts with ONE wallet transaction, exactly once.

Three layers, top to bottom:

* **validation** (pure): addresses are decoded locally against the node's chain (base58check version
  bytes, bech32 / bech32m with the network's HRP, BIP173/BIP350 rules), amounts are exact decimals
  (positive, at most 8 decimals, not dust for the output's script, at most 21M BTC). A bad payout is
  a :class:`DataError` naming every reason, raised before anything is funded or signed.
* **ledger** (SQL on ``btc_settlements`` / ``btc_settlement_events``, include/sql/bitcoin/003): one
  row per settlement id, bound to the fingerprint of its payouts; every step appends an event.
* **workflow** (hook + ledger), each step safe to run twice:
  ``claim`` -> ``sign_and_broadcast`` (walletcreatefundedpsbt -> walletprocesspsbt -> finalizepsbt,
  the signed tx stored *before* sendrawtransaction, so a retry re-broadcasts the same bytes) ->
  ``confirmation_plan`` / ``apply_event`` (driven by ``triggers.TransactionConfirmedTrigger``:
  confirmed, stuck -> RBF ``bumpfee``, replaced, reorged / dropped -> re-broadcast).

:class:`SettlementConfirmationOperator` (bottom) is the deferrable task that loops plan -> trigger ->
event until the settlement is confirmed, without holding a worker slot while it waits.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow.sdk import BaseOperator

from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError

SYSTEM = "bitcoin"
SATS_PER_BTC = 100_000_000
MAX_MONEY_SATS = 21_000_000 * SATS_PER_BTC
DUST_RELAY_SAT_PER_KVB = 3000  # Core's -dustrelayfee default
STATUSES = ("pending", "signed", "broadcast", "confirmed", "failed")
SETTLEMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_MAX_FEE_SATS = 100_000
_BASE58_PREFIXES = {"main": (0, 5), "test": (111, 196), "testnet4": (111, 196), "signet": (111, 196),
                    "regtest": (111, 196)}
_BECH32_HRP = {"main": "bc", "test": "tb", "testnet4": "tb", "signet": "tb", "regtest": "bcrt"}
_BECH32M_CONST = 0x2BC830A3
# Reject texts meaning "these inputs are spent by another transaction" (Core's -25 / -26 messages).
_CONFLICT_MARKERS = ("missingorspent", "missing inputs", "mempool-conflict", "insufficient fee", "replacement")


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
    def from_json(cls, policy: Mapping[str, Any] | None) -> FeePolicy:
        policy = dict(policy or {})
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
    if amount.as_tuple().exponent < -8 and amount != amount.quantize(Decimal("0.00000001")):
        raise ValueError(f"amount {value!r} has more than 8 decimals")
    sats = int(amount * SATS_PER_BTC)
    if sats <= 0:
        raise ValueError(f"amount {value!r} is not positive")
    if sats > MAX_MONEY_SATS:
        raise ValueError(f"amount {value!r} exceeds 21,000,000 BTC")
    return sats


def _bech32_decode(address: str) -> tuple[str, list[int], str]:
    from bitcoin.segwit_addr import CHARSET, bech32_hrp_expand, bech32_polymod

    if address.lower() != address and address.upper() != address:
        raise ValueError("mixed-case bech32")
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address) or len(address) > 90:
        raise ValueError("not bech32")
    hrp, data = address[:pos], [CHARSET.find(c) for c in address[pos + 1:]]
    if -1 in data:
        raise ValueError("invalid bech32 character")
    const = bech32_polymod(bech32_hrp_expand(hrp) + data)
    encoding = "bech32" if const == 1 else "bech32m" if const == _BECH32M_CONST else None
    if encoding is None:
        raise ValueError("bad bech32 checksum")
    return hrp, data[:-6], encoding


def address_script(address: str, network: str) -> bytes:
    """The scriptPubKey an address pays to on ``network`` (Core chain name); ValueError with the reason."""
    from bitcoin.base58 import Base58Error, CBase58Data
    from bitcoin.segwit_addr import convertbits

    if not isinstance(address, str) or not address or address != address.strip():
        raise ValueError("address is empty or not a string")
    hrp_expected = _BECH32_HRP[network]
    lowered = address.lower()
    known_hrps = {h: n for n, h in _BECH32_HRP.items()}
    hrp_guess = lowered[:lowered.rfind("1")] if "1" in lowered else ""
    if hrp_guess in known_hrps or lowered.startswith(hrp_expected + "1"):
        hrp, data, encoding = _bech32_decode(address)
        if hrp != hrp_expected:
            raise ValueError(f"bech32 address of network {known_hrps.get(hrp, hrp)!r} (hrp {hrp!r}), "
                             f"not {network} (hrp {hrp_expected!r})")
        if not data:
            raise ValueError("empty witness program")
        version, program = data[0], convertbits(data[1:], 5, 8, False)
        if program is None or version > 16 or not 2 <= len(program) <= 40:
            raise ValueError("invalid witness program")
        if version == 0 and len(program) not in (20, 32):
            raise ValueError("invalid v0 witness program length")
        if (version == 0) != (encoding == "bech32"):
            raise ValueError(f"witness v{version} must use {'bech32' if version == 0 else 'bech32m'}")
        return bytes([version + 0x50 if version else 0, len(program)]) + bytes(program)
    try:
        data = CBase58Data(address)
    except (Base58Error, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid base58check or bech32 address ({type(exc).__name__})") from None
    if len(data) != 20:
        raise ValueError("base58 payload is not 20 bytes")
    p2pkh, p2sh = _BASE58_PREFIXES[network]
    if data.nVersion == p2pkh:
        return b"\x76\xa9\x14" + bytes(data) + b"\x88\xac"
    if data.nVersion == p2sh:
        return b"\xa9\x14" + bytes(data) + b"\x87"
    owners = [n for n, prefixes in _BASE58_PREFIXES.items() if data.nVersion in prefixes]
    raise ValueError(f"base58 version {data.nVersion} belongs to {owners or 'no known network'}, not {network}")


def dust_threshold(script_pubkey: bytes) -> int:
    """Core's GetDustThreshold at the default dust relay fee (294 sat for P2WPKH, 546 for P2PKH, ...)."""
    size = 8 + 1 + len(script_pubkey)
    is_witness = len(script_pubkey) >= 4 and (script_pubkey[0] == 0 or 0x51 <= script_pubkey[0] <= 0x60) \
        and script_pubkey[1] + 2 == len(script_pubkey)
    size += 67 if is_witness else 148
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
        canonical = address.lower() if address.lower().startswith(_BECH32_HRP[network] + "1") else address
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


# =========================================================================== ledger (SQL)
_COLUMNS = ("id", "status", "network", "wallet", "payouts", "payouts_sha256", "total_sats", "fee_policy",
            "confirmations_required", "bump_after_minutes", "txid", "raw_tx", "replaced_txids", "fee_sats",
            "confirmations", "block_hash", "block_height", "source", "dag_run_id", "last_error", "created_at",
            "updated_at", "signed_at", "broadcast_at", "last_bump_at", "confirmed_at")


def _row(values: Sequence[Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    row = dict(zip(_COLUMNS, values, strict=True))
    for key in ("payouts", "fee_policy"):
        if isinstance(row[key], str):
            row[key] = json.loads(row[key])
    row["replaced_txids"] = list(row["replaced_txids"] or [])
    return row


def load(db: Any, settlement_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    with db.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM btc_settlements WHERE id = %s"
                    + (" FOR UPDATE" if lock else ""), (settlement_id,))
        return _row(cur.fetchone())


def update(db: Any, settlement_id: str, **fields: Any) -> None:
    if not fields:
        return
    assignments, values = [], []
    for key, value in fields.items():
        if key not in _COLUMNS:
            raise KeyError(key)
        if key in ("payouts", "fee_policy"):
            assignments.append(f"{key} = %s::jsonb")
            value = json.dumps(value)
        elif value == "now()":
            assignments.append(f"{key} = now()")
            continue
        else:
            assignments.append(f"{key} = %s")
        values.append(value)
    with db.cursor() as cur:
        cur.execute(f"UPDATE btc_settlements SET {', '.join(assignments)}, updated_at = now() WHERE id = %s",
                    (*values, settlement_id))


def record_event(db: Any, settlement_id: str, event: str, *, status: str | None = None, txid: str | None = None,
                 run_id: str | None = None, **detail: Any) -> None:
    with db.cursor() as cur:
        cur.execute("INSERT INTO btc_settlement_events (settlement_id, event, status, txid, detail, dag_run_id)"
                    " VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
                    (settlement_id, event, status, txid, json.dumps(detail, default=str), run_id))
    print(f"settlement {settlement_id}: {event}" + (f" -> {status}" if status else "")
          + (f" txid {txid}" if txid else "") + (f" {json.dumps(detail, default=str)}" if detail else ""))


def events(db: Any, settlement_id: str) -> list[dict[str, Any]]:
    with db.cursor() as cur:
        cur.execute("SELECT event, status, txid, detail, dag_run_id, at FROM btc_settlement_events"
                    " WHERE settlement_id = %s ORDER BY id", (settlement_id,))
        return [dict(zip(("event", "status", "txid", "detail", "dag_run_id", "at"), r, strict=True))
                for r in cur.fetchall()]


def pending_ids(db: Any, limit: int) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT id FROM btc_settlements WHERE status = 'pending' ORDER BY created_at, id LIMIT %s",
                    (limit,))
        return [r[0] for r in cur.fetchall()]


def known_txids(db: Any) -> set[str]:
    with db.cursor() as cur:
        cur.execute("SELECT txid FROM btc_settlements WHERE txid IS NOT NULL"
                    " UNION SELECT unnest(replaced_txids) FROM btc_settlements")
        return {r[0] for r in cur.fetchall()}


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a run reports for a settlement (JSON-safe; XCom of the DAG's tasks)."""
    return {
        "settlement_id": row["id"], "status": row["status"], "network": row["network"], "txid": row["txid"],
        "replaced_txids": list(row["replaced_txids"]), "fee_sats": row["fee_sats"],
        "confirmations": row["confirmations"], "confirmations_required": row["confirmations_required"],
        "block_hash": row["block_hash"], "block_height": row["block_height"], "total_sats": row["total_sats"],
        "payouts": row["payouts"], "last_error": row["last_error"],
    }


def summaries(ids: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
    """What the ledger says of each of a run's settlements (once each, in order)."""
    with warehouse(settings.warehouse_conn_id) as db:
        rows = [row for sid in dict.fromkeys(ids) if (row := load(db, sid)) is not None]
    return [summary(row) for row in rows]


def run_outcome(result: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
                claim_error: Mapping[str, Any] | None) -> None:
    """Fail the run with the class that explains it, once its summaries are published."""
    if claim_error:  # the run settled nothing: fail it with the claim's class and reason
        error = DataError if claim_error["error_class"] == "data" else PermanentError
        raise error(f"claim failed: {claim_error['message']}", system="bitcoin", reason="claim_failed")
    if rejected:
        raise DataError(f"{len(rejected)} settlement(s) rejected: {list(rejected)}", system="bitcoin",
                        reason="invalid_payouts", quarantined=len(rejected))
    failed = [r for r in result if r["status"] != "confirmed"]
    if failed:
        raise PermanentError(f"{len(failed)} settlement(s) not confirmed: "
                             + ", ".join(f"{r['settlement_id']} ({r['status']}: {r['last_error']})" for r in failed),
                             system="bitcoin", reason="settlement_failed")


@contextmanager
def warehouse(conn_id: str) -> Iterator[Any]:
    from tributary.storage.warehouse import connect, ensure_schema

    db = connect(conn_id)
    try:
        ensure_schema(db)
        yield db
    finally:
        db.rollback()
        db.close()


@contextmanager
def wallet_lock(db: Any, wallet: str | None) -> Iterator[None]:
    """One funding+broadcast at a time per wallet: two settlements must never select the same coins."""
    key = f"btc_settlement_wallet:{wallet or ''}"
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    db.commit()
    try:
        yield
    finally:
        db.rollback()
        with db.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        db.commit()


def fail(db: Any, settlement_id: str, error: BaseException, run_id: str | None) -> None:
    """Mark a settlement failed (only while nothing was broadcast) and record why."""
    db.rollback()
    row = load(db, settlement_id, lock=True)
    if row is None or row["status"] != "pending" or row["raw_tx"]:
        db.rollback()  # a signed transaction may be out there: such a row is never marked failed here
        return
    from tributary.core.errors import classify

    message = f"[{classify(error).error_class}] {error}"[:2000]
    update(db, settlement_id, status="failed", last_error=message, dag_run_id=run_id)
    record_event(db, settlement_id, "failed", status="failed", txid=row["txid"], run_id=run_id,
                 error=message, reason=classify(error).reason)
    db.commit()


# =========================================================================== workflow (hook + ledger)
@dataclass(frozen=True)
class Settings:
    conn_id: str = "tributary_bitcoin"
    warehouse_conn_id: str = "tributary_warehouse"
    wallet: str | None = None

    def hook(self, wallet: str | None = None) -> Any:
        """The node; calls go to ``wallet`` (a settlement's own), else this setting's, else the Connection's."""
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(self.conn_id, wallet=wallet or self.wallet)


def node_network(hook: Any) -> str:
    return str(hook.check_chain()["chain"])


def claim(params: Mapping[str, Any], *, run_id: str | None, settings: Settings) -> tuple[list[str], list[dict]]:
    """Register or pick up the settlements of a run: (ids to settle, rejected [{settlement_id, error}]).

    With ``payouts``: one settlement ``settlement_id`` (registered, or matched against its ledger row).
    Without: that one id when given, else up to ``max_settlements`` pending rows of the table. A row
    whose payouts fail validation is marked failed (nothing signed) and returned in ``rejected``.
    """
    hook = settings.hook()
    network = node_network(hook)
    wallet = hook.wallet
    settlement_id = params.get("settlement_id") or None
    payouts = params.get("payouts") or []
    with warehouse(settings.warehouse_conn_id) as db:
        if payouts:
            if not settlement_id:
                raise DataError("settlement_id is required with payouts", system=SYSTEM, reason="invalid_params")
            try:
                valid = validate_payouts(payouts, network)
                policy = FeePolicy.from_json(params.get("fee_policy"))
            except DataError as exc:
                _register_rejected(db, settlement_id, payouts, params, network, exc, run_id)
                raise
            _register(db, settlement_id, valid, policy, params, network, wallet, run_id)
            return [settlement_id], []
        ids = [settlement_id] if settlement_id else pending_ids(db, int(params.get("max_settlements") or 50))
        accepted, rejected = [], []
        for sid in ids:
            row = load(db, sid, lock=True)
            if row is None:
                raise PermanentError(f"settlement {sid!r} does not exist and no payouts were given", system=SYSTEM,
                                     reason="unknown_settlement")
            if row["status"] != "pending" or row["payouts_sha256"]:
                if settlement_id:
                    record_event(db, sid, "retriggered", status=row["status"], txid=row["txid"], run_id=run_id)
                db.commit()
                accepted.append(sid)
                continue
            try:
                valid = validate_payouts(row["payouts"], row["network"] or network)
                policy = FeePolicy.from_json(row["fee_policy"])
                if row["network"] and row["network"] != network:
                    raise PermanentError(f"settlement is for {row['network']}, the node is on {network}",
                                         system=SYSTEM, reason="network_mismatch")
            except (DataError, PermanentError) as exc:
                fail(db, sid, exc, run_id)
                rejected.append({"settlement_id": sid, "error": str(exc)})
                continue
            update(db, sid, payouts=[p.to_json() for p in valid], payouts_sha256=fingerprint(valid),
                   total_sats=sum(p.amount_sats for p in valid), fee_policy=policy.to_json(), network=network,
                   wallet=row["wallet"] or wallet, dag_run_id=run_id)
            record_event(db, sid, "validated", status="pending", run_id=run_id, payouts=len(valid))
            db.commit()
            accepted.append(sid)
        print(f"claimed {len(accepted)} settlement(s), rejected {len(rejected)}")
        return accepted, rejected


def _register(db: Any, sid: str, valid: list[Payout], policy: FeePolicy, params: Mapping[str, Any], network: str,
              wallet: str | None, run_id: str | None) -> None:
    digest = fingerprint(valid)
    with db.cursor() as cur:
        cur.execute("INSERT INTO btc_settlements (id, status, network, wallet, payouts, payouts_sha256, total_sats,"
                    " fee_policy, confirmations_required, bump_after_minutes, source, dag_run_id)"
                    " VALUES (%s, 'pending', %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s, 'rest', %s)"
                    " ON CONFLICT (id) DO NOTHING",
                    (sid, network, wallet, json.dumps([p.to_json() for p in valid]), digest,
                     sum(p.amount_sats for p in valid), json.dumps(policy.to_json()),
                     int(params.get("confirmations") or 1), params.get("bump_after_minutes"), run_id))
        inserted = cur.rowcount == 1
    row = load(db, sid, lock=True)
    assert row is not None
    if inserted:
        record_event(db, sid, "registered", status="pending", run_id=run_id, payouts=len(valid),
                     total_sats=row["total_sats"])
    elif row["status"] == "failed" and not row["raw_tx"] and row["payouts_sha256"] != digest:
        # A rejected settlement never signed anything: it may be registered again with corrected payouts.
        update(db, sid, status="pending", network=network, wallet=wallet,
               payouts=[p.to_json() for p in valid], payouts_sha256=digest,
               total_sats=sum(p.amount_sats for p in valid),
               fee_policy=policy.to_json(), confirmations_required=int(params.get("confirmations") or 1),
               bump_after_minutes=params.get("bump_after_minutes"), last_error=None, dag_run_id=run_id)
        record_event(db, sid, "registered", status="pending", run_id=run_id, payouts=len(valid), retry_of_failed=True)
    else:
        stored = row["payouts_sha256"]
        if stored is None:  # inserted by another system and not validated yet
            try:
                stored = fingerprint(validate_payouts(row["payouts"], network))
            except DataError:
                stored = "invalid"
        if stored != digest:
            db.rollback()
            raise PermanentError(f"settlement id reused with different payouts: {sid!r} is already registered "
                                 f"(status {row['status']}) with other payouts", system=SYSTEM,
                                 reason="settlement_id_reused")
        if row["status"] == "failed" and not row["raw_tx"]:
            update(db, sid, status="pending", last_error=None, dag_run_id=run_id)
            record_event(db, sid, "registered", status="pending", run_id=run_id, retry_of_failed=True)
        else:
            if row["payouts_sha256"] is None:
                update(db, sid, payouts=[p.to_json() for p in valid], payouts_sha256=digest, network=network,
                       wallet=wallet, total_sats=sum(p.amount_sats for p in valid))
            record_event(db, sid, "retriggered", status=row["status"], txid=row["txid"], run_id=run_id)
    db.commit()


def _register_rejected(db: Any, sid: str | None, payouts: Any, params: Mapping[str, Any], network: str,
                       error: DataError, run_id: str | None) -> None:
    if not sid:
        return
    with db.cursor() as cur:
        cur.execute("INSERT INTO btc_settlements (id, status, network, payouts, fee_policy, confirmations_required,"
                    " source, dag_run_id, last_error)"
                    " VALUES (%s, 'failed', %s, %s::jsonb, %s::jsonb, %s, 'rest', %s, %s)"
                    " ON CONFLICT (id) DO NOTHING",
                    (sid, network, json.dumps(payouts, default=str), json.dumps(params.get("fee_policy") or {},
                                                                                default=str),
                     int(params.get("confirmations") or 1), run_id, f"[data] {error}"[:2000]))
        inserted = cur.rowcount == 1
    if inserted:
        record_event(db, sid, "rejected", status="failed", run_id=run_id, error=str(error))
    db.commit()


def _wallet_payment(hook: Any, payouts: Sequence[Payout], exclude: set[str]) -> dict[str, Any] | None:
    """A wallet transaction (not conflicted, not in the ledger) paying exactly these payouts, if any."""
    from tributary.bitcoin.hook import btc_to_sats

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


def _broadcast(hook: Any, db: Any, row: dict[str, Any], run_id: str | None) -> dict[str, Any]:
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
            db.rollback()
            update(db, sid, status="failed", last_error=f"[permanent] {error}"[:2000], dag_run_id=run_id)
            record_event(db, sid, "failed", status="failed", txid=txid, run_id=run_id, error=str(error))
            db.commit()
            raise error from exc
        print(f"settlement {sid}: broadcast of {txid} refused ({exc.reject_reason}); a related transaction is known")
    first = row["status"] == "signed"
    if first or row["status"] != "broadcast":
        update(db, sid, status="broadcast", broadcast_at="now()" if first else row["broadcast_at"], dag_run_id=run_id)
    record_event(db, sid, "broadcast" if first else "rebroadcast", status="broadcast", txid=txid, run_id=run_id)
    db.commit()
    return load(db, sid) or row


def sign_and_broadcast(settlement_id: str, *, run_id: str | None, settings: Settings) -> dict[str, Any]:
    """Fund, sign and broadcast the settlement's one transaction — or find that it already was.

    Order of writes makes it safe to repeat at any point: the signed transaction and its txid are
    committed to the ledger before ``sendrawtransaction``; a repeat re-broadcasts those bytes, which
    the node answers as already known.
    """
    from tributary.bitcoin.hook import BitcoinRpcError, btc_to_sats

    with warehouse(settings.warehouse_conn_id) as db:
        row = load(db, settlement_id)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        hook = settings.hook(row["wallet"])
        with wallet_lock(db, hook.wallet):
            row = load(db, settlement_id, lock=True)
            assert row is not None
            status = row["status"]
            if status == "failed":
                raise PermanentError(f"settlement {settlement_id} failed earlier: {row['last_error']}",
                                     system=SYSTEM, reason="settlement_failed")
            if status == "confirmed":
                state = chain_state(hook, row)
                if state["winner"] is not None:
                    record_event(db, settlement_id, "already_settled", status="confirmed", txid=row["txid"],
                                 run_id=run_id, confirmations=state["confirmations"])
                    db.commit()
                    return summary(row)
                update(db, settlement_id, status="broadcast", confirmations=0, block_hash=None, block_height=None,
                       confirmed_at=None, dag_run_id=run_id)
                record_event(db, settlement_id, "reorged", status="broadcast", txid=row["txid"], run_id=run_id,
                             orphaned_block=row["block_hash"])
                db.commit()
                row = load(db, settlement_id, lock=True)
                assert row is not None
            if status == "pending":
                _flush_signed(hook, db, row["wallet"], settlement_id, run_id)
                row = load(db, settlement_id, lock=True)
                assert row is not None
                payouts = payouts_from_row(row["payouts"], row["network"])
                if row["payouts_sha256"] != fingerprint(payouts):
                    raise SecurityError(f"settlement {settlement_id}: stored payouts do not match their fingerprint",
                                        system=SYSTEM, reason="ledger_tampered")
                found = _wallet_payment(hook, payouts, known_txids(db))
                if found is not None:
                    update(db, settlement_id, status="signed", txid=found["txid"], raw_tx=found["hex"],
                           fee_sats=-btc_to_sats(str(found.get("fee", 0))), signed_at="now()", dag_run_id=run_id)
                    record_event(db, settlement_id, "adopted_wallet_transaction", status="signed", txid=found["txid"],
                                 run_id=run_id)
                else:
                    policy = FeePolicy.from_json(row["fee_policy"])
                    outputs = [{p.address: Decimal(p.amount_btc)} for p in payouts]
                    try:
                        funded = hook.wallet_create_funded_psbt([], outputs, 0, policy.funding_options())
                    except BitcoinRpcError as exc:
                        fail(db, settlement_id, exc, run_id)
                        raise
                    fee = btc_to_sats(str(funded["fee"]))
                    if fee > policy.max_fee_sats:
                        error = PermanentError(f"fee {fee} sat exceeds max_fee_sats {policy.max_fee_sats}; nothing "
                                               "was signed", system=SYSTEM, reason="fee_above_max")
                        fail(db, settlement_id, error, run_id)
                        raise error
                    processed = hook.wallet_process_psbt(funded["psbt"], True, "ALL", True, False)
                    final = hook.finalize_psbt(processed["psbt"], True)
                    if not final.get("complete") or not final.get("hex"):
                        raise PermanentError("the wallet could not sign every input of the PSBT", system=SYSTEM,
                                             reason="psbt_incomplete")
                    txid, extra = check_outputs(final["hex"], payouts)
                    _check_change(hook, extra)
                    update(db, settlement_id, status="signed", txid=txid, raw_tx=final["hex"], fee_sats=fee,
                           signed_at="now()", dag_run_id=run_id, last_error=None)
                    record_event(db, settlement_id, "signed", status="signed", txid=txid, run_id=run_id, fee_sats=fee,
                                 fee_policy=policy.to_json())
                db.commit()  # the signed transaction is durable before anything is broadcast
                row = load(db, settlement_id, lock=True)
                assert row is not None
            result = _broadcast(hook, db, row, run_id)
            return summary(result)


def _flush_signed(hook: Any, db: Any, wallet: str | None, current: str, run_id: str | None) -> None:
    """Broadcast other settlements' signed-but-never-broadcast transactions (a run died in between)
    before funding a new one: until they are in the mempool the wallet sees their coins as unspent and
    could fund this settlement with them, and the two transactions would then conflict."""
    with db.cursor() as cur:
        cur.execute("SELECT id FROM btc_settlements WHERE status = 'signed' AND wallet IS NOT DISTINCT FROM %s"
                    " AND id <> %s ORDER BY signed_at", (wallet, current))
        others = [r[0] for r in cur.fetchall()]
    db.commit()
    for other in others:
        row = load(db, other, lock=True)
        if row is None or row["status"] != "signed":
            db.rollback()
            continue
        try:
            _broadcast(hook, db, row, run_id)
        except Exception as exc:  # that settlement's own run reports it; this one goes on
            db.rollback()
            print(f"settlement {other}: broadcast of its signed transaction before funding {current} failed: {exc}")


def _check_change(hook: Any, extra: Sequence[tuple[bytes, int]]) -> None:
    from tributary.bitcoin.parse import script_address

    if len(extra) > 1:
        raise SecurityError(f"the funded transaction has {len(extra)} outputs besides the payouts", system=SYSTEM,
                            reason="outputs_mismatch")
    for script, _value in extra:
        address = script_address(script, node_network(hook))
        if address is None or not hook.call("getaddressinfo", address).get("ismine"):
            raise SecurityError(f"the extra output {address or script.hex()} is not the wallet's change",
                                system=SYSTEM, reason="outputs_mismatch")


def chain_state(hook: Any, row: Mapping[str, Any]) -> dict[str, Any]:
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


def confirmation_plan(settlement_id: str, *, settings: Settings) -> dict[str, Any]:
    """``{"done": summary}`` when settled, else what the trigger must watch: txids, depth, bump deadline."""
    with warehouse(settings.warehouse_conn_id) as db:
        row = load(db, settlement_id)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        if row["status"] == "failed":
            raise PermanentError(f"settlement {settlement_id} failed: {row['last_error']}", system=SYSTEM,
                                 reason="settlement_failed")
        if row["status"] == "confirmed":
            return {"done": summary(row)}
        if row["status"] not in ("broadcast",) or not row["txid"]:
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


def apply_event(settlement_id: str, event: Mapping[str, Any], *, run_id: str | None,
                settings: Settings) -> dict[str, Any]:
    """Record what the trigger saw and act on it (bump, adopt a replacement, re-broadcast)."""
    kind = event.get("status")
    with warehouse(settings.warehouse_conn_id) as db:
        row = load(db, settlement_id, lock=True)
        if row is None:
            raise PermanentError(f"unknown settlement {settlement_id!r}", system=SYSTEM, reason="unknown_settlement")
        hook = settings.hook(row["wallet"])
        if kind == "error":
            raise PermanentError(f"confirmation watch failed: {event.get('message')}", system=SYSTEM,
                                 reason="trigger_error")
        if kind == "confirmed":
            _confirm(hook, db, row, event, run_id)
        elif kind == "stuck":
            _bump(hook, db, row, event, run_id)
        elif kind == "replaced":
            _adopt_replacement(hook, db, row, str(event["replaced_by"]), run_id, reason="replaced_outside")
        elif kind in ("reorged", "dropped"):
            if row["status"] == "confirmed" or row["block_hash"]:
                update(db, settlement_id, status="broadcast", confirmations=0, block_hash=None, block_height=None,
                       confirmed_at=None, dag_run_id=run_id)
            record_event(db, settlement_id, kind, status="broadcast", txid=event.get("txid"), run_id=run_id,
                         orphaned_block=event.get("orphaned_block"))
            db.commit()
            row = load(db, settlement_id, lock=True)
            assert row is not None
            if kind == "dropped" or event.get("in_mempool") is False:
                _broadcast(hook, db, row, run_id)
        else:
            raise PermanentError(f"unexpected trigger event {dict(event)!r}", system=SYSTEM, reason="trigger_error")
        db.commit()
    return confirmation_plan(settlement_id, settings=settings)


def _confirm(hook: Any, db: Any, row: dict[str, Any], event: Mapping[str, Any], run_id: str | None) -> None:
    from tributary.bitcoin.hook import btc_to_sats

    sid, winner = row["id"], str(event["txid"])
    fields: dict[str, Any] = {"status": "confirmed", "confirmations": int(event["confirmations"]),
                              "block_hash": event.get("blockhash"), "block_height": event.get("blockheight"),
                              "confirmed_at": "now()", "dag_run_id": run_id, "last_error": None}
    if winner != row["txid"]:
        # An earlier transaction of this settlement won the race against its replacement.
        tx = hook.get_transaction(winner)
        check_outputs(tx["hex"], payouts_from_row(row["payouts"], row["network"]))
        fields.update(txid=winner, raw_tx=tx["hex"], fee_sats=-btc_to_sats(str(tx.get("fee", 0))),
                      replaced_txids=[t for t in [*row["replaced_txids"], row["txid"]] if t != winner])
    update(db, sid, **fields)
    record_event(db, sid, "confirmed", status="confirmed", txid=winner, run_id=run_id,
                 confirmations=event["confirmations"], block_hash=event.get("blockhash"),
                 block_height=event.get("blockheight"), replaced=winner != row["txid"])


def _bump(hook: Any, db: Any, row: dict[str, Any], event: Mapping[str, Any], run_id: str | None) -> None:
    """Replace-by-fee a transaction still unconfirmed after bump_after_minutes, within max_fee_sats."""
    from tributary.bitcoin.hook import BitcoinRpcError, btc_to_sats

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
        update(db, sid, last_bump_at="now()")
        record_event(db, sid, "bump_skipped", status="broadcast", txid=txid, run_id=run_id, old_fee_sats=old_fee,
                     needed_fee_sats=math.ceil(new_rate * vsize), max_fee_sats=policy.max_fee_sats)
        update(db, sid, bump_after_minutes=None)  # no further bump can stay within the cap
        return
    try:
        answer = hook.bump_fee(txid, {"fee_rate": Decimal(str(new_rate))})
    except BitcoinRpcError as exc:
        text = exc.rpc_message.lower()
        if "already bumped by transaction" in text:
            _adopt_replacement(hook, db, row, exc.rpc_message.rsplit(" ", 1)[-1], run_id, reason="bumped_before")
            return
        update(db, sid, last_bump_at="now()")
        record_event(db, sid, "bump_failed", status="broadcast", txid=txid, run_id=run_id, error=exc.rpc_message)
        return
    _adopt_replacement(hook, db, row, str(answer["txid"]), run_id, reason="bumped", old_fee_sats=old_fee,
                       new_fee_sats=btc_to_sats(str(answer["fee"])), fee_rate=new_rate)


def _adopt_replacement(hook: Any, db: Any, row: dict[str, Any], new_txid: str, run_id: str | None, *, reason: str,
                       **detail: Any) -> None:
    """Follow a replacement of the current transaction after checking it pays the same payouts."""
    from tributary.bitcoin.hook import btc_to_sats

    sid, old = row["id"], row["txid"]
    if new_txid == old or new_txid in row["replaced_txids"]:
        return
    tx = hook.get_transaction(new_txid)
    _, extra = check_outputs(tx["hex"], payouts_from_row(row["payouts"], row["network"]))
    _check_change(hook, extra)
    update(db, sid, txid=new_txid, raw_tx=tx["hex"], replaced_txids=[*row["replaced_txids"], old],
           fee_sats=-btc_to_sats(str(tx.get("fee", 0))), last_bump_at="now()", dag_run_id=run_id)
    record_event(db, sid, "bumped" if reason == "bumped" else "replaced", status="broadcast", txid=new_txid,
                 run_id=run_id, old_txid=old, new_txid=new_txid, reason=reason, **detail)


# =========================================================================== the deferrable task
class SettlementConfirmationOperator(BaseOperator):
    """Waits (deferred, no worker slot) until a settlement's transaction has N confirmations.

    Each wake-up records the trigger's event in the ledger and acts on it (RBF after
    ``bump_after_minutes``, adopt a replacement, re-broadcast after a reorg or a drop), then defers
    again on the settlement's current set of txids. Returns the settlement's summary.
    """

    template_fields = ("settlement_id",)
    ui_color = "#f7931a"

    def __init__(self, *, settlement_id: str, conn_id: str = "tributary_bitcoin",
                 warehouse_conn_id: str = "tributary_warehouse", poll_interval: float = 30.0,
                 wait_timeout: timedelta = timedelta(days=2), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settlement_id = settlement_id
        self.conn_id = conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def _settings(self) -> Settings:
        return Settings(self.conn_id, self.warehouse_conn_id)

    def _poll_interval(self, context: Mapping[str, Any]) -> float:
        params = context.get("params") or {}
        return float(params.get("poll_interval_seconds") or self.poll_interval)

    def execute(self, context: Any) -> dict[str, Any]:
        from tributary.core.failfast import raise_classified

        try:
            plan = confirmation_plan(self.settlement_id, settings=self._settings())
        except Exception as exc:
            raise_classified(exc, SYSTEM)
            raise
        return self._wait(plan, context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from tributary.core.failfast import raise_classified

        print(f"settlement {self.settlement_id}: trigger event {event}")
        try:
            plan = apply_event(self.settlement_id, event or {}, run_id=context["run_id"], settings=self._settings())
        except Exception as exc:
            raise_classified(exc, SYSTEM)
            raise
        return self._wait(plan, context)

    def _wait(self, plan: Mapping[str, Any], context: Any) -> dict[str, Any]:
        from tributary.bitcoin.triggers import TransactionConfirmedTrigger

        if "done" in plan:
            print(f"settlement {self.settlement_id}: confirmed in {plan['done']['txid']} "
                  f"({plan['done']['confirmations']} confirmations)")
            return dict(plan["done"])
        print(f"settlement {self.settlement_id}: waiting for {plan['confirmations']} confirmation(s) of "
              f"{plan['txids']}" + (f", fee bump at {time.strftime('%H:%M:%S', time.gmtime(plan['bump_at']))} UTC"
                                    if plan["bump_at"] else ""))
        self.defer(trigger=TransactionConfirmedTrigger(
            txids=list(plan["txids"]), confirmations=int(plan["confirmations"]), conn_id=self.conn_id,
            wallet=plan.get("wallet"), poll_interval=self._poll_interval(context), bump_at=plan.get("bump_at"),
            seen_blocks=dict(plan.get("seen_blocks") or {})),
            method_name="execute_complete", timeout=self.wait_timeout)
