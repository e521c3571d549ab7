"""Core-shaped JSON for scripts, transactions and amounts.

Written by hand: no library renders Bitcoin Core's RPC JSON (``asm`` strings, script ``type``
names, ``addr()`` descriptors, 8-decimal amounts), so this module reproduces Core's
``ScriptToAsmStr``/``ScriptToUniv``/``TxToUniv`` output for the script kinds a devnet meets.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from bitcoin.core import CTransaction, b2lx
from bitcoin.core.script import OPCODE_NAMES, CScript, CScriptOp
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS
from embit.script import Script

COIN = 100_000_000
REGTEST = NETWORKS["regtest"]


class Amount(int):
    """Satoshis that serialise as a BTC JSON number with 8 decimals, like Core's ValueFromAmount."""

    def btc(self) -> str:
        sign = "-" if self < 0 else ""
        q, r = divmod(abs(int(self)), COIN)
        return f"{sign}{q}.{r:08d}"


_AMOUNT_MARK = "\x00amount:"
_AMOUNT_RE = re.compile(r'"\\u0000amount:(-?[0-9]+\.[0-9]{8})"')


def _mark(value: Any) -> Any:
    if isinstance(value, Amount):
        return _AMOUNT_MARK + value.btc()
    if isinstance(value, dict):
        return {k: _mark(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON with Amount values written as bare numbers such as 50.00000000."""
    return _AMOUNT_RE.sub(r"\1", json.dumps(_mark(value)))


def to_sats(value: Any) -> int:
    """Parse a BTC JSON amount (number or string) into satoshis, as Core's AmountFromValue."""
    from .errors import TYPE_ERROR, RPCError

    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise RPCError(TYPE_ERROR, "Amount is not a number or string")
    try:
        dec = Decimal(str(value))
    except Exception:
        raise RPCError(TYPE_ERROR, "Invalid amount") from None
    sats = dec * COIN
    if sats != sats.to_integral_value():
        raise RPCError(TYPE_ERROR, "Invalid amount")
    if sats < 0:
        raise RPCError(TYPE_ERROR, "Amount out of range")
    return int(sats)


def script_type(spk: bytes) -> str:
    n = len(spk)
    if n == 22 and spk[0] == 0 and spk[1] == 20:
        return "witness_v0_keyhash"
    if n == 34 and spk[0] == 0 and spk[1] == 32:
        return "witness_v0_scripthash"
    if n == 34 and spk[0] == 0x51 and spk[1] == 32:
        return "witness_v1_taproot"
    if n == 4 and spk == bytes.fromhex("51024e73"):
        return "anchor"
    if n == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return "pubkeyhash"
    if n == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return "scripthash"
    if n >= 1 and spk[0] == 0x6A:
        return "nulldata"
    if n in (35, 67) and spk[-1] == 0xAC and spk[0] in (33, 65):
        return "pubkey"
    if 4 <= n <= 42 and (spk[0] == 0 or 0x51 <= spk[0] <= 0x60) and spk[1] == n - 2:
        return "witness_unknown"
    return "nonstandard"


def address_of(spk: bytes) -> str | None:
    if script_type(spk) in (
        "witness_v0_keyhash",
        "witness_v0_scripthash",
        "witness_v1_taproot",
        "pubkeyhash",
        "scripthash",
        "witness_unknown",
        "anchor",
    ):
        try:
            return Script(spk).address(REGTEST)
        except Exception:
            return None
    return None


def descriptor_of(spk: bytes) -> str:
    addr = address_of(spk)
    if addr is not None:
        return add_checksum(f"addr({addr})")
    return add_checksum(f"raw({spk.hex()})")


def _scriptnum(data: bytes) -> int:
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def asm(script: bytes) -> str:
    """Core's ScriptToAsmStr (without signature-hash decoding)."""
    parts: list[str] = []
    try:
        for op, data, _sop_idx in CScript(script).raw_iter():
            if op == 0:
                parts.append("0")
            elif data is not None and op <= 0x4E:
                if len(data) <= 4:
                    parts.append(str(_scriptnum(data)))
                else:
                    parts.append(data.hex())
            elif op == 0x4F:
                parts.append("-1")
            elif 0x51 <= op <= 0x60:
                parts.append(str(op - 0x50))
            else:
                parts.append(OPCODE_NAMES.get(CScriptOp(op), "OP_UNKNOWN"))
    except Exception:
        parts.append("[error]")
    return " ".join(parts)


def script_pubkey_json(spk: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"asm": asm(spk), "desc": descriptor_of(spk), "hex": spk.hex()}
    addr = address_of(spk)
    if addr is not None:
        out["address"] = addr
    out["type"] = script_type(spk)
    return out


def tx_weight(tx: CTransaction) -> int:
    base = len(tx.serialize(params={"include_witness": False}))
    total = len(tx.serialize())
    return base * 3 + total


def tx_vsize(tx: CTransaction) -> int:
    return (tx_weight(tx) + 3) // 4


def wtxid(tx: CTransaction) -> str:
    return b2lx(tx.GetHash())


def tx_json(tx: CTransaction, fee: int | None = None, include_hex: bool = True) -> dict[str, Any]:
    """Core's TxToUniv: the decoderawtransaction / getrawtransaction verbose shape."""
    raw = tx.serialize()
    vin = []
    for i, txin in enumerate(tx.vin):
        wit = []
        if tx.wit is not None and i < len(tx.wit.vtxinwit):
            wit = [w.hex() for w in tx.wit.vtxinwit[i].scriptWitness.stack]
        if tx.is_coinbase():
            entry: dict[str, Any] = {"coinbase": bytes(txin.scriptSig).hex()}
        else:
            entry = {
                "txid": b2lx(txin.prevout.hash),
                "vout": txin.prevout.n,
                "scriptSig": {"asm": asm(bytes(txin.scriptSig)), "hex": bytes(txin.scriptSig).hex()},
            }
        if wit:
            entry["txinwitness"] = wit
        entry["sequence"] = txin.nSequence
        vin.append(entry)
    vout = [
        {"value": Amount(o.nValue), "n": n, "scriptPubKey": script_pubkey_json(bytes(o.scriptPubKey))}
        for n, o in enumerate(tx.vout)
    ]
    out: dict[str, Any] = {
        "txid": b2lx(tx.GetTxid()),
        "hash": b2lx(tx.GetHash()),
        "version": tx.nVersion,
        "size": len(raw),
        "vsize": tx_vsize(tx),
        "weight": tx_weight(tx),
        "locktime": tx.nLockTime,
        "vin": vin,
        "vout": vout,
    }
    if fee is not None:
        out["fee"] = Amount(fee)
    if include_hex:
        out["hex"] = raw.hex()
    return out
