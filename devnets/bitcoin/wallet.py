"""A descriptor-style HD wallet (BIP84 P2WPKH, ``bcrt1q...``) on top of the devnet chain.

Keys, PSBTs (BIP174), signing and finalisation come from embit; coin selection (largest first),
balances and Core's ``gettransaction`` bookkeeping are written here because they are wallet
policy, not library material.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitcoin.core import CTransaction, b2lx
from embit import bip32
from embit.descriptor.checksum import add_checksum
from embit.finalizer import finalize_psbt
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, p2wpkh
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from .chain import COINBASE_MATURITY, Chain, Coin
from .encoding import Amount
from .errors import (
    INVALID_ADDRESS_OR_KEY,
    INVALID_PARAMETER,
    WALLET_ERROR,
    WALLET_INSUFFICIENT_FUNDS,
    RPCError,
)

REGTEST = NETWORKS["regtest"]
HARDENED = 0x80000000
ACCOUNT_PATH = [84 + HARDENED, 1 + HARDENED, 0 + HARDENED]
INPUT_VSIZE = 68  # P2WPKH input with a 72-byte signature, as Core's size estimate
TX_OVERHEAD_VSIZE = 11  # version, locktime, counts and the segwit marker (10.5 rounded up)
CHANGE_DUST = 294
SEQUENCE_RBF = 0xFFFFFFFD
SEQUENCE_FINAL_LOCKTIME = 0xFFFFFFFE


def output_vsize(spk: bytes) -> int:
    return 8 + 1 + len(spk)


def decode_address(address: Any) -> bytes:
    if not isinstance(address, str):
        raise RPCError(-3, "JSON value of type " + type(address).__name__ + " is not of expected type string")
    try:
        script = Script.from_address(address)
    except Exception:
        script = None
    if script is None or not (address.startswith(("bcrt1", "m", "n", "2"))):
        raise RPCError(INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {address}")
    return script.data


@dataclass
class WalletCoin:
    txid: str
    vout: int
    coin: Coin
    confirmations: int
    trusted: bool


class Wallet:
    def __init__(self, name: str, path: Path, chain: Chain):
        self.name = name
        self.path = path
        self.chain = chain
        state = json.loads((path / "wallet.json").read_text())
        self.seed = bytes.fromhex(state["seed"])
        self.next_index = state["next_index"]  # {"0": receive, "1": change}
        self.labels: dict[str, str] = state.get("labels", {})
        self.txs: dict[str, dict[str, Any]] = state.get("txs", {})  # txid -> {"hex", "time"}
        self.replaces: dict[str, str] = state.get("replaces", {})
        # lockunspent: outpoint -> persistent. Only persistent locks are in wallet.json, so a restart
        # or an unload/load forgets the others, as Core's in-memory setLockedCoins does.
        self.locked: dict[tuple[str, int], bool] = {(t, int(n)): True for t, n in state.get("locked", [])}
        self.root = bip32.HDKey.from_seed(self.seed, version=REGTEST["xprv"])
        self.account = self.root.derive(ACCOUNT_PATH)
        self.scripts: dict[bytes, tuple[int, int]] = {}
        for branch in (0, 1):
            for index in range(self.next_index[str(branch)]):
                self._derive(branch, index)
        chain.listeners.append(self._on_chain_event)

    @classmethod
    def create(cls, name: str, path: Path, chain: Chain) -> Wallet:
        path.mkdir(parents=True)
        state = {"seed": os.urandom(32).hex(), "next_index": {"0": 0, "1": 0}}
        (path / "wallet.json").write_text(json.dumps(state))
        return cls(name, path, chain)

    def unload(self) -> None:
        self.chain.listeners.remove(self._on_chain_event)

    def save(self) -> None:
        state = {
            "seed": self.seed.hex(),
            "next_index": self.next_index,
            "labels": self.labels,
            "txs": self.txs,
            "replaces": self.replaces,
            "locked": sorted([t, n] for (t, n), persistent in self.locked.items() if persistent),
        }
        tmp = self.path / "wallet.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path / "wallet.json")

    # ----- keys -------------------------------------------------------------------------------
    def _derive(self, branch: int, index: int) -> bytes:
        key = self.account.derive([branch, index])
        spk = p2wpkh(key.key.get_public_key()).data
        self.scripts[spk] = (branch, index)
        return spk

    def new_script(self, change: bool = False, label: str = "") -> bytes:
        branch = "1" if change else "0"
        index = self.next_index[branch]
        self.next_index[branch] = index + 1
        spk = self._derive(int(branch), index)
        if not change:
            self.labels[Script(spk).address(REGTEST)] = label
        self.save()
        return spk

    def pubkey(self, spk: bytes):
        branch, index = self.scripts[spk]
        return self.account.derive([branch, index]).key.get_public_key()

    def descriptor(self, spk: bytes) -> str:
        branch, index = self.scripts[spk]
        origin = self.root.my_fingerprint.hex() + "/84h/1h/0h"
        return add_checksum(f"wpkh([{origin}/{branch}/{index}]{self.pubkey(spk).sec().hex()})")

    def parent_descriptor(self, spk: bytes) -> str:
        branch, _ = self.scripts[spk]
        origin = self.root.my_fingerprint.hex() + "/84h/1h/0h"
        xpub = self.account.to_public().to_string(version=REGTEST["xpub"])
        return add_checksum(f"wpkh([{origin}]{xpub}/{branch}/*)")

    def is_mine(self, spk: bytes) -> bool:
        return spk in self.scripts

    def is_change(self, spk: bytes) -> bool:
        return self.scripts.get(spk, (0, 0))[0] == 1

    # ----- transactions -----------------------------------------------------------------------
    def _prev_output(self, txid: str, n: int) -> tuple[int, bytes] | None:
        found = self.chain.find_tx(txid)
        tx = (
            found[0]
            if found
            else (CTransaction.deserialize(bytes.fromhex(self.txs[txid]["hex"])) if txid in self.txs else None)
        )
        if tx is None or n >= len(tx.vout):
            return None
        return tx.vout[n].nValue, bytes(tx.vout[n].scriptPubKey)

    def debit(self, tx: CTransaction) -> int:
        total = 0
        if tx.is_coinbase():
            return 0
        for txin in tx.vin:
            prev = self._prev_output(b2lx(txin.prevout.hash), txin.prevout.n)
            if prev is not None and self.is_mine(prev[1]):
                total += prev[0]
        return total

    def credit(self, tx: CTransaction) -> int:
        return sum(o.nValue for o in tx.vout if self.is_mine(bytes(o.scriptPubKey)))

    def involves(self, tx: CTransaction) -> bool:
        return self.credit(tx) > 0 or self.debit(tx) > 0

    def _on_chain_event(self, event: str, txid: str | None) -> None:
        if event == "accepted" and txid is not None and txid not in self.txs:
            tx = self.chain.mempool[txid].tx
            if self.involves(tx):
                self.txs[txid] = {"hex": tx.serialize().hex(), "time": int(time.time())}
                self.unlock_spent()
                self.save()

    # ----- locked coins (lockunspent) ---------------------------------------------------------
    def is_spent(self, txid: str, n: int) -> bool:
        """Spent by a transaction in the mempool or in the active chain."""
        if (txid, n) in self.chain.spent_by:
            return True
        return txid in self.chain.txindex and (txid, n) not in self.chain.utxo

    def unlock_spent(self) -> None:
        """Core's CWallet::AddToSpends unlocks every outpoint a wallet transaction spends (Core >= 24):
        a lock only ever holds back coins that are still unspent."""
        for outpoint in [o for o in self.locked if self.is_spent(*o)]:
            del self.locked[outpoint]

    def is_locked(self, txid: str, n: int) -> bool:
        self.unlock_spent()  # also coins spent in a block that never passed through our mempool
        return (txid, n) in self.locked

    def all_transactions(self) -> dict[str, tuple[CTransaction, Any]]:
        """Wallet transactions: those recorded from the mempool plus those in the active chain."""
        found: dict[str, tuple[CTransaction, Any]] = {}
        for block_hash in self.chain.active:
            entry = self.chain.index[block_hash]
            for tx in entry.block.vtx:
                if self.involves(tx):
                    found[b2lx(tx.GetTxid())] = (tx, entry)
        for txid, record in self.txs.items():
            if txid not in found:
                located = self.chain.find_tx(txid)
                tx = located[0] if located else CTransaction.deserialize(bytes.fromhex(record["hex"]))
                found[txid] = (tx, located[1] if located else None)
        return found

    def from_me_trusted(self, tx: CTransaction) -> bool:
        return all(
            (prev := self._prev_output(b2lx(i.prevout.hash), i.prevout.n)) is not None and self.is_mine(prev[1])
            for i in tx.vin
        )

    def coins(self, include_immature: bool = False) -> list[WalletCoin]:
        chain = self.chain
        result = []
        for (txid, n), coin in chain.utxo.items():
            if coin.spk in self.scripts and (txid, n) not in chain.spent_by:
                depth = chain.height - coin.height + 1
                if coin.coinbase and depth <= COINBASE_MATURITY and not include_immature:
                    continue
                result.append(WalletCoin(txid, n, coin, depth, True))
        for txid, mentry in chain.mempool.items():
            trusted = self.from_me_trusted(mentry.tx)
            for n, out in enumerate(mentry.tx.vout):
                spk = bytes(out.scriptPubKey)
                if spk in self.scripts and (txid, n) not in chain.spent_by:
                    result.append(WalletCoin(txid, n, Coin(out.nValue, spk, -1, False), 0, trusted))
        return result

    def balances(self) -> dict[str, Any]:
        trusted = pending = immature = 0
        for wc in self.coins(include_immature=True):
            if wc.coin.coinbase and wc.confirmations <= COINBASE_MATURITY:
                immature += wc.coin.value
            elif wc.trusted:
                trusted += wc.coin.value
            else:
                pending += wc.coin.value
        return {
            "mine": {"trusted": Amount(trusted), "untrusted_pending": Amount(pending), "immature": Amount(immature)},
            "lastprocessedblock": {"hash": self.chain.tip.hash, "height": self.chain.height},
        }

    # ----- funding and signing ----------------------------------------------------------------
    def fund(
        self,
        outputs: list[tuple[bytes, int]],
        fee_rate_sat_vb: float,
        subtract_from: list[int],
        locktime: int,
        replaceable: bool,
        inputs: list[tuple[str, int]] | None = None,
    ) -> tuple[Transaction, int, int]:
        """Select coins and add change; returns (unsigned tx, fee, change position or -1)."""
        available = sorted(self.coins(), key=lambda c: (c.confirmations == 0, -c.coin.value))
        available = [c for c in available if c.trusted and not self.is_locked(c.txid, c.vout)]
        chosen: list[WalletCoin] = []
        if inputs:
            by_outpoint = {(c.txid, c.vout): c for c in self.coins()}
            for outpoint in inputs:
                if outpoint not in by_outpoint:
                    raise RPCError(WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")  # not a spendable wallet coin
                chosen.append(by_outpoint[outpoint])
            available = [c for c in available if (c.txid, c.vout) not in inputs]
        target = sum(v for _, v in outputs)
        base_vsize = TX_OVERHEAD_VSIZE + sum(output_vsize(spk) for spk, _ in outputs)
        change_spk_len = 22

        def fee_for(n_inputs: int, with_change: bool) -> int:
            vsize = base_vsize + n_inputs * INPUT_VSIZE + (output_vsize(b"\x00" * change_spk_len) if with_change else 0)
            return int(-(-fee_rate_sat_vb * vsize // 1))

        while True:
            have = sum(c.coin.value for c in chosen)
            need = target if subtract_from else target + fee_for(len(chosen), True)
            if chosen and have >= need:
                break
            if not available:
                raise RPCError(WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")
            chosen.append(available.pop(0))
        values = [v for _, v in outputs]
        have = sum(c.coin.value for c in chosen)
        fee = fee_for(len(chosen), True)
        if subtract_from:
            share, rest = divmod(fee, len(subtract_from))
            for k, pos in enumerate(subtract_from):
                values[pos] -= share + (rest if k == 0 else 0)
                if values[pos] <= CHANGE_DUST:
                    raise RPCError(WALLET_ERROR, "The transaction amount is too small to pay the fee")
        change = have - sum(values) - fee
        change_pos = -1
        if change < CHANGE_DUST:  # no change output: the remainder goes to the fee, as Core does
            fee = have - sum(values)
        sequence = SEQUENCE_RBF if replaceable else SEQUENCE_FINAL_LOCKTIME
        vin = [TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=sequence) for c in chosen]
        vout = [TransactionOutput(v, Script(spk)) for (spk, _), v in zip(outputs, values, strict=False)]
        if change >= CHANGE_DUST:
            change_pos = len(vout)
            vout.append(TransactionOutput(change, Script(self.new_script(change=True))))
        return Transaction(version=2, vin=vin, vout=vout, locktime=locktime), fee, change_pos

    def to_psbt(self, tx: Transaction) -> PSBT:
        psbt = PSBT(tx)
        for i, txin in enumerate(tx.vin):
            txid = txin.txid.hex()
            prev = self.chain.find_tx(txid)
            prev_tx = prev[0] if prev else CTransaction.deserialize(bytes.fromhex(self.txs[txid]["hex"]))
            out = prev_tx.vout[txin.vout]
            spk = bytes(out.scriptPubKey)
            psbt.inputs[i].witness_utxo = TransactionOutput(out.nValue, Script(spk))
            psbt.inputs[i].non_witness_utxo = Transaction.parse(prev_tx.serialize())
            self._add_derivation(psbt.inputs[i], spk)
        for i, txout in enumerate(tx.vout):
            self._add_derivation(psbt.outputs[i], txout.script_pubkey.data)
        return psbt

    def _add_derivation(self, scope: Any, spk: bytes) -> None:
        if spk in self.scripts:
            branch, index = self.scripts[spk]
            scope.bip32_derivations[self.pubkey(spk)] = DerivationPath(
                self.root.my_fingerprint, [*ACCOUNT_PATH, branch, index]
            )

    def process_psbt(self, psbt: PSBT, sign: bool, finalize: bool) -> tuple[PSBT, bool]:
        for i, pinp in enumerate(psbt.inputs):
            spk = pinp.witness_utxo.script_pubkey.data if pinp.witness_utxo else None
            if spk is None and pinp.non_witness_utxo is not None:
                spk = pinp.non_witness_utxo.vout[psbt.tx.vin[i].vout].script_pubkey.data
            if spk is not None and spk in self.scripts and not pinp.bip32_derivations:
                self._add_derivation(pinp, spk)
        if sign:
            psbt.sign_with(self.root)
        complete = finalize_inputs(psbt) if finalize else all_final(psbt)
        return psbt, complete

    def sign_tx(self, tx: Transaction) -> CTransaction:
        psbt, complete = self.process_psbt(self.to_psbt(tx), True, True)
        if not complete:
            raise RPCError(WALLET_ERROR, "Signing transaction failed")
        return CTransaction.deserialize(finalize_psbt(psbt).serialize())


def all_final(psbt: PSBT) -> bool:
    return all(p.final_scriptwitness or p.final_scriptsig for p in psbt.inputs)


def finalize_inputs(psbt: PSBT) -> bool:
    """Turn partial signatures into final witnesses (BIP174 finalizer role) for P2WPKH inputs."""
    from embit.script import Witness

    for pinp in psbt.inputs:
        if pinp.final_scriptwitness or pinp.final_scriptsig:
            continue
        spk = pinp.witness_utxo.script_pubkey if pinp.witness_utxo else None
        if spk is None or spk.script_type() != "p2wpkh" or len(pinp.partial_sigs) != 1:
            continue
        ((pub, sig),) = pinp.partial_sigs.items()
        pinp.final_scriptwitness = Witness([sig, pub.sec()])
        pinp.partial_sigs = {}
        pinp.bip32_derivations = {}
    return all_final(psbt)


def parse_psbt(text: Any) -> PSBT:
    from .errors import DESERIALIZATION_ERROR

    try:
        return PSBT.from_string(text)
    except Exception as exc:
        raise RPCError(DESERIALIZATION_ERROR, f"TX decode failed {exc}") from None


def check_param(cond: bool, message: str) -> None:
    if not cond:
        raise RPCError(INVALID_PARAMETER, message)
