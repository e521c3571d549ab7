"""Block tree, active chain, UTXO set, mempool and mining of the regtest devnet.

The kernel (kernel.py) is the consensus authority: each block is accepted only after
libbitcoinkernel validated it, and each mempool input is script-checked by it. This module keeps
what the kernel's C API does not expose: a UTXO/tx index for RPC lookups, the mempool with Core's
acceptance policy (fee floor, BIP125 replacement), ``invalidateblock``/``reconsiderblock`` (the
kernel has no such call, so the devnet's own view of the active chain is authoritative for RPC),
and block assembly (coinbase with BIP34 height, witness commitment, regtest proof of work).
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from bitcoin.core import (
    CBlock,
    CMutableTransaction,
    COutPoint,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    b2lx,
    lx,
)
from bitcoin.core.script import OP_0, OP_RETURN, CScript, CScriptWitness

from .encoding import Amount, tx_vsize, tx_weight
from .errors import (
    VERIFY_ALREADY_IN_CHAIN,
    VERIFY_ERROR,
    VERIFY_REJECTED,
    RPCError,
)
from .kernel import BlockRejected, Kernel

REGTEST_BITS = 0x207FFFFF
REGTEST_TARGET = 0x7FFFFF << (8 * (0x20 - 3))
BLOCK_WORK = (1 << 256) // (REGTEST_TARGET + 1)
HALVING_INTERVAL = 150
COINBASE_MATURITY = 100
MAX_BLOCK_WEIGHT = 4_000_000
MIN_RELAY_SAT_PER_KVB = 1000
INCREMENTAL_SAT_PER_KVB = 1000
WITNESS_MAGIC = bytes.fromhex("aa21a9ed")
DUST = {
    "witness_v0_keyhash": 294,
    "witness_v0_scripthash": 330,
    "witness_v1_taproot": 330,
    "pubkeyhash": 546,
    "scripthash": 540,
}


def subsidy(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def format_money(sats: int) -> str:
    """Core's FormatMoney: at least 2 decimals, trailing zeros trimmed."""
    text = Amount(sats).btc().rstrip("0")
    whole, frac = text.split(".")
    return f"{whole}.{frac:0<2}"


class Rejected(RPCError):
    """A mempool rejection: ``reason`` is Core's reject string for testmempoolaccept."""

    def __init__(self, code: int, reason: str):
        super().__init__(code, reason)
        self.reason = reason


@dataclass
class Coin:
    value: int
    spk: bytes
    height: int
    coinbase: bool


@dataclass
class BlockEntry:
    hash: str
    block: CBlock
    raw: bytes
    height: int
    prev: str | None
    seq: int
    fees: dict[str, int] = field(default_factory=dict)  # txid -> fee, filled when connected


@dataclass
class MempoolEntry:
    tx: CTransaction
    txid: str
    fee: int
    vsize: int
    weight: int
    time: int
    height: int
    parents: set[str]

    @property
    def feerate(self) -> float:
        return self.fee / self.vsize


class Chain:
    def __init__(self, datadir: Path):
        self.dir = datadir / "regtest"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kernel = Kernel(self.dir / "kernel")
        self.db = sqlite3.connect(self.dir / "devnet.sqlite3", check_same_thread=False)
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS blocks (seq INTEGER PRIMARY KEY, hash TEXT UNIQUE, raw BLOB);"
            "CREATE TABLE IF NOT EXISTS invalid (hash TEXT PRIMARY KEY);"
            "CREATE TABLE IF NOT EXISTS mempool (seq INTEGER PRIMARY KEY, raw BLOB, time INTEGER);"
        )
        self.index: dict[str, BlockEntry] = {}
        self.invalid: set[str] = {row[0] for row in self.db.execute("SELECT hash FROM invalid")}
        self.active: list[str] = []
        self.utxo: dict[tuple[str, int], Coin] = {}
        self.txindex: dict[str, tuple[str, int]] = {}  # txid -> (block hash, position)
        self.mempool: dict[str, MempoolEntry] = {}
        self.spent_by: dict[tuple[str, int], str] = {}  # outpoint -> mempool txid
        self.replaced_by: dict[str, str] = {}
        self.listeners: list = []  # callables(event, txid) for wallets
        genesis = self.kernel.genesis()
        self._add_entry(genesis, seq=0)
        for seq, raw in self.db.execute("SELECT seq, raw FROM blocks ORDER BY seq"):
            self._add_entry(bytes(raw), seq)
            self.kernel.process_block(bytes(raw))  # a no-op when the kernel already stored it
        self._activate_best(initial=True)
        saved = list(self.db.execute("SELECT raw, time FROM mempool ORDER BY seq"))
        self.db.execute("DELETE FROM mempool")
        self.db.commit()
        for raw, when in saved:
            with contextlib.suppress(RPCError):
                self.accept(CTransaction.deserialize(bytes(raw)), when=when)

    # ----- block tree -------------------------------------------------------------------------
    def _add_entry(self, raw: bytes, seq: int) -> BlockEntry:
        block = CBlock.deserialize(raw)
        block_hash = b2lx(block.GetHash())
        prev = b2lx(block.hashPrevBlock) if seq else None
        height = self.index[prev].height + 1 if prev else 0
        entry = BlockEntry(block_hash, block, raw, height, prev, seq)
        self.index[block_hash] = entry
        return entry

    @property
    def tip(self) -> BlockEntry:
        return self.index[self.active[-1]]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def chainwork(self, entry: BlockEntry) -> int:
        return BLOCK_WORK * (entry.height + 1)

    def is_active(self, block_hash: str) -> bool:
        entry = self.index.get(block_hash)
        return entry is not None and entry.height < len(self.active) and self.active[entry.height] == block_hash

    def is_invalid(self, block_hash: str) -> bool:
        if not self.invalid:
            return False
        cursor: str | None = block_hash
        while cursor is not None:
            if cursor in self.invalid:
                return True
            cursor = self.index[cursor].prev
        return False

    def median_time_past(self, entry: BlockEntry) -> int:
        times = []
        cursor: BlockEntry | None = entry
        while cursor is not None and len(times) < 11:
            times.append(cursor.block.nTime)
            cursor = self.index[cursor.prev] if cursor.prev else None
        return sorted(times)[len(times) // 2]

    def next_hash(self, entry: BlockEntry) -> str | None:
        if self.is_active(entry.hash) and entry.height + 1 < len(self.active):
            return self.active[entry.height + 1]
        return None

    def best_candidate(self) -> BlockEntry:
        # Equal work per regtest block: most work == greatest height; ties go to the first seen.
        valid = [e for e in self.index.values() if not self.is_invalid(e.hash)]
        return max(valid, key=lambda e: (e.height, -e.seq))

    def _path_to(self, entry: BlockEntry) -> list[str]:
        path = []
        cursor: BlockEntry | None = entry
        while cursor is not None:
            path.append(cursor.hash)
            cursor = self.index[cursor.prev] if cursor.prev else None
        return path[::-1]

    def _connect(self, entry: BlockEntry) -> None:
        entry.fees = {}
        for pos, tx in enumerate(entry.block.vtx):
            txid = b2lx(tx.GetTxid())
            if not tx.is_coinbase():
                value_in = 0
                for txin in tx.vin:
                    coin = self.utxo.pop((b2lx(txin.prevout.hash), txin.prevout.n))
                    value_in += coin.value
                entry.fees[txid] = value_in - sum(o.nValue for o in tx.vout)
            for n, out in enumerate(tx.vout):
                spk = bytes(out.scriptPubKey)
                if spk[:1] != bytes([OP_RETURN]):
                    self.utxo[(txid, n)] = Coin(out.nValue, spk, entry.height, tx.is_coinbase())
            self.txindex[txid] = (entry.hash, pos)
        self.active.append(entry.hash)

    def _activate_best(self, initial: bool = False) -> None:
        best = self.best_candidate()
        if self.active and best.hash == self.active[-1]:
            return
        if self.active and best.prev == self.active[-1]:
            self._connect(best)
            self._remove_mined(best)
            return
        old_active = list(self.active)
        self.active, self.utxo, self.txindex = [], {}, {}
        for block_hash in self._path_to(best):
            self._connect(self.index[block_hash])
        if initial:
            return
        # Reorg: transactions of disconnected blocks go back to the mempool when still valid.
        kept = set(self.active)
        resurrect = [tx for h in old_active if h not in kept for tx in self.index[h].block.vtx[1:]]
        old_pool = sorted(self.mempool.values(), key=lambda e: e.time)
        self.mempool, self.spent_by = {}, {}
        for tx in resurrect:
            self._try_accept(tx)
        for mentry in old_pool:
            self._try_accept(mentry.tx, when=mentry.time)
        for listener in self.listeners:
            listener("reorg", None)

    def _try_accept(self, tx: CTransaction, when: int | None = None) -> None:
        with contextlib.suppress(RPCError):
            self.accept(tx, when=when)

    def _remove_mined(self, entry: BlockEntry) -> None:
        for tx in entry.block.vtx[1:]:
            txid = b2lx(tx.GetTxid())
            if txid in self.mempool:
                self._drop(txid)
            for txin in tx.vin:  # anything else spending these outpoints is now a conflict
                other = self.spent_by.get((b2lx(txin.prevout.hash), txin.prevout.n))
                if other is not None:
                    self._drop_with_descendants(other)

    def submit_block(self, raw: bytes) -> BlockEntry:
        block = CBlock.deserialize(raw)
        block_hash = b2lx(block.GetHash())
        if block_hash in self.index:
            return self.index[block_hash]
        if b2lx(block.hashPrevBlock) not in self.index:
            raise BlockRejected("prev-blk-not-found")
        self._check_coinbase_amount(block)
        self.kernel.process_block(raw)
        seq = max(e.seq for e in self.index.values()) + 1
        self.db.execute("INSERT INTO blocks (seq, hash, raw) VALUES (?, ?, ?)", (seq, block_hash, raw))
        self.db.commit()
        entry = self._add_entry(raw, seq)
        self._activate_best()
        return entry

    def _check_coinbase_amount(self, block: CBlock) -> None:
        """Name Core's "bad-cb-amount" for a block on our tip (the kernel would only say "consensus")."""
        if b2lx(block.hashPrevBlock) != self.tip.hash or not block.vtx:
            return
        fees = 0
        created: dict[tuple[str, int], int] = {}
        for tx in block.vtx[1:]:
            value_in = 0
            for txin in tx.vin:
                outpoint = (b2lx(txin.prevout.hash), txin.prevout.n)
                coin = self.utxo.get(outpoint)
                value = coin.value if coin is not None else created.get(outpoint)
                if value is None:
                    return  # missing inputs: leave the verdict to the kernel
                value_in += value
            txid = b2lx(tx.GetTxid())
            created.update({(txid, n): o.nValue for n, o in enumerate(tx.vout)})
            fees += value_in - sum(o.nValue for o in tx.vout)
        if sum(o.nValue for o in block.vtx[0].vout) > subsidy(self.height + 1) + fees:
            raise BlockRejected("bad-cb-amount")

    def invalidate(self, block_hash: str) -> None:
        if self.index[block_hash].height == 0:
            raise RPCError(-1, "Genesis block cannot be invalidated")
        self.invalid.add(block_hash)
        self.db.execute("INSERT OR IGNORE INTO invalid (hash) VALUES (?)", (block_hash,))
        self.db.commit()
        self._activate_best()

    def reconsider(self, block_hash: str) -> None:
        entry = self.index[block_hash]
        ancestors = set(self._path_to(entry))
        cleared = {h for h in self.invalid if h in ancestors or entry.hash in self._path_to(self.index[h])}
        self.invalid -= cleared
        self.db.executemany("DELETE FROM invalid WHERE hash = ?", [(h,) for h in cleared])
        self.db.commit()
        self._activate_best()

    # ----- mining -----------------------------------------------------------------------------
    def _select_transactions(self) -> list[MempoolEntry]:
        chosen: list[MempoolEntry] = []
        chosen_ids: set[str] = set()
        weight = 4000
        pending = sorted(self.mempool.values(), key=lambda e: e.feerate, reverse=True)
        progress = True
        while pending and progress:
            progress = False
            for mentry in list(pending):
                if mentry.parents <= chosen_ids and weight + mentry.weight <= MAX_BLOCK_WEIGHT:
                    chosen.append(mentry)
                    chosen_ids.add(mentry.txid)
                    weight += mentry.weight
                    pending.remove(mentry)
                    progress = True
                    break
        return chosen

    def build_block(self, payout_spk: bytes, txs: list[CTransaction] | None = None) -> bytes:
        prev = self.tip
        height = prev.height + 1
        if txs is None:
            selected = self._select_transactions()
            txs = [m.tx for m in selected]
            fees = sum(m.fee for m in selected)
        else:
            fees = 0
            for tx in txs:
                mentry = self.mempool.get(b2lx(tx.GetTxid()))
                fees += mentry.fee if mentry else 0
        coinbase = CMutableTransaction(
            [CTxIn(COutPoint(), CScript([height, OP_0]), 0xFFFFFFFF)],
            [CTxOut(subsidy(height) + fees, CScript(payout_spk))],
            0,
            2,
            CTxWitness([CTxInWitness(CScriptWitness([b"\x00" * 32]))]),
        )
        # BIP141 commitment: the coinbase's wtxid counts as zero in the witness merkle tree.
        wtxids = [b"\x00" * 32] + [tx.GetHash() for tx in txs]
        witness_root = CBlock.build_merkle_tree_from_txids(wtxids)[-1]
        commitment = sha256d(witness_root + b"\x00" * 32)
        coinbase.vout.append(CTxOut(0, CScript(bytes([OP_RETURN, 36]) + WITNESS_MAGIC + commitment)))
        vtx = [CTransaction.from_tx(coinbase), *list(txs)]
        merkle_root = CBlock.build_merkle_tree_from_txs(vtx)[-1]
        ntime = max(int(time.time()), self.median_time_past(prev) + 1)
        header = struct.pack("<i", 0x20000000) + lx(prev.hash) + merkle_root + struct.pack("<II", ntime, REGTEST_BITS)
        nonce = 0
        while True:
            block_hash = sha256d(header + struct.pack("<I", nonce))
            if int.from_bytes(block_hash, "little") <= REGTEST_TARGET:
                if b2lx(block_hash) not in self.index:
                    break
                # Same parent, payout and second as a known (e.g. invalidated) block: move on in time.
                ntime += 1
                header = header[:68] + struct.pack("<II", ntime, REGTEST_BITS)
                nonce = -1
            nonce += 1
        block = CBlock(0x20000000, lx(prev.hash), merkle_root, ntime, REGTEST_BITS, nonce, vtx)
        return block.serialize()

    def mine(self, payout_spk: bytes) -> str:
        raw = self.build_block(payout_spk)
        return self.submit_block(raw).hash

    # ----- mempool ----------------------------------------------------------------------------
    def lookup_coin(self, outpoint: tuple[str, int]) -> Coin | None:
        coin = self.utxo.get(outpoint)
        if coin is not None:
            return coin
        parent = self.mempool.get(outpoint[0])
        if parent is not None and outpoint[1] < len(parent.tx.vout):
            out = parent.tx.vout[outpoint[1]]
            return Coin(out.nValue, bytes(out.scriptPubKey), -1, False)  # -1: unconfirmed (MEMPOOL_HEIGHT)
        return None

    def descendants(self, txid: str) -> set[str]:
        found: set[str] = set()
        stack = [txid]
        while stack:
            current = stack.pop()
            for child in self.mempool.values():
                if current in child.parents and child.txid not in found:
                    found.add(child.txid)
                    stack.append(child.txid)
        return found

    def ancestors(self, txid: str) -> set[str]:
        found: set[str] = set()
        stack = [txid]
        while stack:
            for parent in self.mempool[stack.pop()].parents:
                if parent not in found and parent in self.mempool:
                    found.add(parent)
                    stack.append(parent)
        return found

    def _drop(self, txid: str) -> None:
        mentry = self.mempool.pop(txid)
        for txin in mentry.tx.vin:
            self.spent_by.pop((b2lx(txin.prevout.hash), txin.prevout.n), None)

    def _drop_with_descendants(self, txid: str) -> list[str]:
        gone = [txid, *self.descendants(txid)]
        for t in gone:
            if t in self.mempool:
                self._drop(t)
        return gone

    def _script_failure(self, tx: CTransaction, index: int, coin: Coin) -> str:
        # The kernel reports pass/fail only; name the failure as Core's interpreter would for
        # the common P2WPKH case, otherwise with Core's generic false-stack message.
        witness = tx.wit.vtxinwit[index].scriptWitness.stack if not tx.wit.is_null() else []
        if coin.spk[:2] == b"\x00\x14":
            if len(witness) != 2:
                return "Witness program hash mismatch" if witness else "Witness program was passed an empty witness"
            if hashlib.new("ripemd160", hashlib.sha256(witness[1]).digest()).digest() != coin.spk[2:]:
                return "Witness program hash mismatch"
            return "Signature must be zero for failed CHECK(MULTI)SIG operation"
        return "Script evaluated without error but finished with a false/empty top stack element"

    def accept(
        self, tx: CTransaction, test_only: bool = False, max_fee_sat_per_kvb: int | None = None, when: int | None = None
    ) -> MempoolEntry:
        """Core's AcceptToMemoryPool for one transaction (full-RBF policy, as Core 28)."""
        txid = b2lx(tx.GetTxid())
        if tx.is_coinbase():
            raise Rejected(VERIFY_REJECTED, "coinbase")
        if not tx.vin:
            raise Rejected(VERIFY_REJECTED, "bad-txns-vin-empty")
        if not tx.vout:
            raise Rejected(VERIFY_REJECTED, "bad-txns-vout-empty")
        outpoints = [(b2lx(i.prevout.hash), i.prevout.n) for i in tx.vin]
        if len(set(outpoints)) != len(outpoints):
            raise Rejected(VERIFY_REJECTED, "bad-txns-inputs-duplicate")
        if any(o.nValue < 0 or o.nValue > 21_000_000 * 100_000_000 for o in tx.vout):
            raise Rejected(VERIFY_REJECTED, "bad-txns-vout-toolarge")
        if len(tx.serialize(params={"include_witness": False})) < 65:
            raise Rejected(VERIFY_REJECTED, "tx-size-small")
        if txid in self.mempool:
            raise Rejected(VERIFY_REJECTED, "txn-already-in-mempool")
        if tx.nVersion < 1 or tx.nVersion > 3:
            raise Rejected(VERIFY_REJECTED, "version")
        from .encoding import script_type

        for out in tx.vout:
            kind = script_type(bytes(out.scriptPubKey))
            if kind == "nonstandard":
                raise Rejected(VERIFY_REJECTED, "scriptpubkey")
            if out.nValue < DUST.get(kind, 0):
                raise Rejected(VERIFY_REJECTED, "dust")
        next_height = self.height + 1
        if tx.nLockTime and not all(i.nSequence == 0xFFFFFFFF for i in tx.vin):
            limit = next_height if tx.nLockTime < 500_000_000 else self.median_time_past(self.tip)
            if tx.nLockTime >= limit:
                raise Rejected(VERIFY_REJECTED, "non-final")
        conflicts = {self.spent_by[o] for o in outpoints if o in self.spent_by}
        coins: list[Coin] = []
        for outpoint in outpoints:
            coin = self.lookup_coin(outpoint)
            if coin is None:
                if txid in self.txindex and any((txid, n) in self.utxo for n in range(len(tx.vout))):
                    raise Rejected(VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
                raise Rejected(VERIFY_ERROR, "bad-txns-inputs-missingorspent")
            coins.append(coin)
        if txid in self.txindex and any((txid, n) in self.utxo for n in range(len(tx.vout))):
            raise Rejected(VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
        parents = {o[0] for o in outpoints if o[0] in self.mempool}
        for coin in coins:
            if coin.coinbase and next_height - coin.height < COINBASE_MATURITY:
                raise Rejected(
                    VERIFY_REJECTED,
                    "bad-txns-premature-spend-of-coinbase, tried to spend "
                    f"coinbase at depth {next_height - coin.height}",
                )
        value_in = sum(c.value for c in coins)
        value_out = sum(o.nValue for o in tx.vout)
        if value_in < value_out:
            raise Rejected(
                VERIFY_REJECTED,
                f"bad-txns-in-belowout, value in ({format_money(value_in)}) < value out ({format_money(value_out)})",
            )
        fee = value_in - value_out
        vsize = tx_vsize(tx)
        min_fee = MIN_RELAY_SAT_PER_KVB * vsize // 1000
        if fee < min_fee:
            raise Rejected(VERIFY_REJECTED, f"min relay fee not met, {fee} < {min_fee}")
        if max_fee_sat_per_kvb is not None and fee > max_fee_sat_per_kvb * vsize // 1000:
            raise Rejected(VERIFY_ERROR, "max-fee-exceeded")
        if conflicts:
            evicted = set(conflicts)
            for c in conflicts:
                evicted |= self.descendants(c)
            if parents & evicted:
                raise Rejected(
                    VERIFY_REJECTED,
                    f"bad-txns-spends-conflicting-tx, {txid} spends conflicting "
                    f"transaction {sorted(parents & evicted)[0]}",
                )
            for c in conflicts:
                old = self.mempool[c]
                if fee * old.vsize <= old.fee * vsize:
                    raise Rejected(
                        VERIFY_REJECTED,
                        f"insufficient fee, rejecting replacement {txid}; new "
                        f"feerate {Amount(fee * 1000 // vsize).btc()} BTC/kvB <= old feerate "
                        f"{Amount(old.fee * 1000 // old.vsize).btc()} BTC/kvB",
                    )
            old_fees = sum(self.mempool[e].fee for e in evicted)
            required = INCREMENTAL_SAT_PER_KVB * vsize // 1000
            if fee - old_fees < required:
                raise Rejected(
                    VERIFY_REJECTED,
                    f"insufficient fee, rejecting replacement {txid}, not enough "
                    f"additional fees to relay; {Amount(fee - old_fees).btc()} < "
                    f"{Amount(required).btc()}",
                )
        raw = tx.serialize()
        spent = [(c.value, c.spk) for c in coins]
        for index, coin in enumerate(coins):
            if not self.kernel.verify_input(raw, index, spent):
                raise Rejected(
                    VERIFY_REJECTED, f"mandatory-script-verify-flag-failed ({self._script_failure(tx, index, coin)})"
                )
        mentry = MempoolEntry(tx, txid, fee, vsize, tx_weight(tx), when or int(time.time()), self.height, parents)
        if test_only:
            return mentry
        for c in conflicts:
            for gone in self._drop_with_descendants(c):
                self.replaced_by[gone] = txid
        self.mempool[txid] = mentry
        for outpoint in outpoints:
            self.spent_by[outpoint] = txid
        for listener in self.listeners:
            listener("accepted", txid)
        return mentry

    def save_mempool(self) -> None:
        self.db.execute("DELETE FROM mempool")
        ordered = sorted(self.mempool.values(), key=lambda e: (len(self.ancestors(e.txid)), e.time))
        self.db.executemany(
            "INSERT INTO mempool (raw, time) VALUES (?, ?)", [(m.tx.serialize(), m.time) for m in ordered]
        )
        self.db.commit()

    def find_tx(self, txid: str) -> tuple[CTransaction, BlockEntry | None] | None:
        if txid in self.mempool:
            return self.mempool[txid].tx, None
        if txid in self.txindex:
            block_hash, pos = self.txindex[txid]
            entry = self.index[block_hash]
            return entry.block.vtx[pos], entry
        return None

    def close(self) -> None:
        self.save_mempool()
        self.db.close()
        self.kernel.close()
