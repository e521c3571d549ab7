"""Consensus-serialised Bitcoin blocks -> flat rows for the tables blocks / transactions / inputs / outputs.

Pure logic, no Airflow import. Deserialisation is python-bitcoinlib's (``CBlockHeader`` and
``CTransaction.stream_deserialize``, segwit included); this module walks the block itself so it knows
each transaction's byte span: sizes and the wtxid come from the raw bytes instead of re-serialising,
and the merkle root is recomputed from the txids and checked against the header (a corrupt or
truncated block is a :class:`~tributary.core.errors.DataError`, never silently half-parsed).

Hashes are hex in display order (what Bitcoin Core prints). Amounts are integer satoshis.
A fee is known only when the values of all spent outputs are: from earlier transactions of the same
block or batch (:func:`parse_blocks`), or from a ``lookup`` callback (e.g. the warehouse or RPC).

Output scripts are classified here (:func:`script_type`); their addresses come from
:mod:`tributary.bitcoin.addresses`, the one encoder, for the network passed in. Raw files:
:func:`iter_block_file` reads the framed ``blk*.dat`` layout (magic, little-endian length, block),
plain or bz2/gzip-compressed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from bitcoin.core import CBlock, CBlockHeader, CTransaction, b2lx
from bitcoin.core.script import CScript, CScriptInvalidError
from bitcoin.core.serialize import Hash, SerializationTruncationError, VarIntSerializer

from tributary.bitcoin.addresses import address_encoder, address_kind, normalize_network, small_int
from tributary.bitcoin.addresses import script_address as script_address  # re-exported: callers of the parser
from tributary.core.errors import DataError

Outpoint = tuple[str, int]
# Given outpoints whose values are not in the batch, return the values (satoshis) it knows.
PrevoutLookup = Callable[[Sequence[Outpoint]], Mapping[Outpoint, int]]

# --------------------------------------------------------------------------- networks
# Network magic of the framed block files, by Bitcoin Core's chain name (getblockchaininfo "chain").
MAGIC = {"main": bytes.fromhex("f9beb4d9"), "test": bytes.fromhex("0b110907"),
         "testnet4": bytes.fromhex("1c163f28"), "signet": bytes.fromhex("0a03cf40"),
         "regtest": bytes.fromhex("fabfb5da")}
_NETWORK_OF_MAGIC = {magic: name for name, magic in MAGIC.items()}


# --------------------------------------------------------------------------- rows
class BlockRow(NamedTuple):
    hash: str
    height: int | None
    prev_hash: str
    merkle_root: str
    time: int  # header timestamp, seconds since the epoch
    version: int
    bits: int
    nonce: int
    size: int
    stripped_size: int
    weight: int
    tx_count: int


class TransactionRow(NamedTuple):
    block_hash: str
    txid: str
    wtxid: str
    idx: int  # position in the block
    is_coinbase: bool
    has_witness: bool
    version: int
    locktime: int
    size: int
    vsize: int
    weight: int
    input_count: int
    output_count: int
    output_value: int
    fee: int | None  # NULL for the coinbase and when a spent output's value is unknown


class InputRow(NamedTuple):
    block_hash: str
    txid: str
    idx: int
    prev_txid: str | None  # NULL for the coinbase input
    prev_vout: int | None
    script_sig: str
    witness: tuple[str, ...] | None  # NULL when the transaction carries no witness at all
    sequence: int
    value: int | None  # value of the spent output when known


class OutputRow(NamedTuple):
    block_hash: str
    txid: str
    idx: int
    value: int
    script_pubkey: str
    script_type: str
    address: str | None


@dataclass
class ParsedBlock:
    block: BlockRow
    transactions: list[TransactionRow]
    inputs: list[InputRow]
    outputs: list[OutputRow]

    @property
    def hash(self) -> str:
        return self.block.hash

    @property
    def fees_known(self) -> bool:
        return all(t.fee is not None for t in self.transactions if not t.is_coinbase)


@dataclass
class PrevoutCache:
    """Output values seen in a batch, so transactions spending them get a fee without a lookup."""

    values: dict[Outpoint, int] = field(default_factory=dict)

    def add(self, outputs: Iterable[OutputRow]) -> None:
        for row in outputs:
            self.values[(row.txid, row.idx)] = row.value


# --------------------------------------------------------------------------- scripts
def _valid_pubkey_size(key: bytes) -> bool:
    return (len(key) == 33 and key[0] in (2, 3)) or (len(key) == 65 and key[0] in (4, 6, 7))


def _is_push_only(script: bytes) -> bool:
    try:
        return all(op <= 0x60 for op, _, _ in CScript(script).raw_iter())
    except CScriptInvalidError:
        return False


def _multisig(script: bytes) -> bool:
    if len(script) < 3 or script[-1] != 0xAE:  # OP_CHECKMULTISIG
        return False
    try:
        ops = list(CScript(script[:-1]).raw_iter())
    except CScriptInvalidError:
        return False
    if len(ops) < 3:
        return False
    required, total = small_int(ops[0][0]), small_int(ops[-1][0])
    keys = ops[1:-1]
    if not required or not total or total != len(keys) or required > total:
        return False
    return all(data is not None and op <= 0x4E and _valid_pubkey_size(data) for op, data, _ in keys)


def script_type(script: bytes) -> str:
    """Bitcoin Core's output type names: p2pkh, p2sh, p2wpkh, p2wsh, p2tr, anchor, witness_unknown,
    nulldata, p2pk, multisig, nonstandard."""
    kind = address_kind(script)
    if kind is not None:
        return kind
    size = len(script)
    if size >= 1 and script[0] == 0x6A and _is_push_only(script[1:]):  # OP_RETURN
        return "nulldata"
    if script[-1:] == b"\xac" and size in (35, 67) and script[0] == size - 2 and _valid_pubkey_size(script[1:-1]):
        return "p2pk"
    if _multisig(script):
        return "multisig"
    return "nonstandard"


# --------------------------------------------------------------------------- blocks
def bip34_height(coinbase: CTransaction) -> int | None:
    """The height a version>=2 block commits to in its coinbase scriptSig (BIP34), if it parses."""
    script = bytes(coinbase.vin[0].scriptSig) if coinbase.vin else b""
    if not script:
        return None
    if 0x51 <= script[0] <= 0x60:
        return script[0] - 0x50
    length = script[0]
    if not 1 <= length <= 8 or len(script) < 1 + length:
        return None
    return int.from_bytes(script[1:1 + length], "little", signed=True)


def _vsize(weight: int) -> int:
    return (weight + 3) // 4


def parse_block(
    block: bytes | CBlock,
    *,
    height: int | None = None,
    network: str = "main",
    known: PrevoutCache | None = None,
    lookup: PrevoutLookup | None = None,
) -> ParsedBlock:
    """Rows of one block. ``known`` (updated with this block's outputs) and ``lookup`` resolve prevouts."""
    raw = block.serialize() if isinstance(block, CBlock) else bytes(block)
    network = normalize_network(network)
    encode_address = address_encoder(network)
    known = known if known is not None else PrevoutCache()
    stream = io.BytesIO(raw)
    try:
        header = CBlockHeader.stream_deserialize(stream)
        count = VarIntSerializer.stream_deserialize(stream)
        spans: list[tuple[CTransaction, bytes]] = []
        for _ in range(count):
            start = stream.tell()
            tx = CTransaction.stream_deserialize(stream)
            spans.append((tx, raw[start:stream.tell()]))
    except (SerializationTruncationError, struct.error, ValueError) as exc:
        raise DataError(f"block does not deserialise: {exc}", system="bitcoin", reason="malformed_block") from exc
    if stream.tell() != len(raw):
        raise DataError(f"block has {len(raw) - stream.tell()} trailing bytes", system="bitcoin",
                        reason="malformed_block")
    if not spans:
        raise DataError("block has no transactions", system="bitcoin", reason="malformed_block")
    block_hash = b2lx(header.GetHash())

    txid_bytes: list[bytes] = []
    transactions: list[TransactionRow] = []
    outputs: list[OutputRow] = []
    pending_inputs: list[list[Any]] = []  # InputRow fields; value filled after lookups
    tx_inputs: list[list[int]] = []  # per transaction: indexes into pending_inputs
    missing: list[Outpoint] = []
    stripped_total = 80 + len(VarIntSerializer.serialize(count))
    for index, (tx, tx_raw) in enumerate(spans):
        wtxid_raw = Hash(tx_raw)
        witness = tx.has_witness()
        stripped = tx.serialize({"include_witness": False}) if witness else tx_raw
        txid_raw = Hash(stripped) if witness else wtxid_raw
        txid_bytes.append(txid_raw)
        txid = b2lx(txid_raw)
        coinbase = index == 0 and tx.is_coinbase()
        weight = len(stripped) * 3 + len(tx_raw)
        stripped_total += len(stripped)

        mine: list[int] = []
        for n, txin in enumerate(tx.vin):
            wit = None
            if witness:
                stack = tx.wit.vtxinwit[n].scriptWitness.stack if n < len(tx.wit.vtxinwit) else ()
                wit = tuple(bytes(item).hex() for item in stack)
            if coinbase:
                prev: Outpoint | None = None
                value = None
            else:
                prev = (b2lx(txin.prevout.hash), txin.prevout.n)
                value = known.values.get(prev)
                if value is None:
                    missing.append(prev)
            mine.append(len(pending_inputs))
            pending_inputs.append([block_hash, txid, n, prev[0] if prev else None, prev[1] if prev else None,
                                   bytes(txin.scriptSig).hex(), wit, txin.nSequence, value])
        tx_inputs.append(mine)

        output_value = 0
        for n, txout in enumerate(tx.vout):
            script = bytes(txout.scriptPubKey)
            kind = script_type(script)
            row = OutputRow(block_hash, txid, n, txout.nValue, script.hex(), kind,
                            encode_address(script, kind))
            outputs.append(row)
            known.values[(txid, n)] = txout.nValue
            output_value += txout.nValue

        transactions.append(TransactionRow(block_hash, txid, b2lx(wtxid_raw), index, coinbase, witness,
                                           tx.nVersion, tx.nLockTime, len(tx_raw), _vsize(weight), weight,
                                           len(tx.vin), len(tx.vout), output_value, None))

    merkle_root = CBlock.build_merkle_tree_from_txids(txid_bytes)[-1]
    if merkle_root != header.hashMerkleRoot:
        raise DataError(f"block {block_hash}: merkle root does not match its transactions", system="bitcoin",
                        reason="merkle_mismatch")

    if missing:
        # Values from earlier transactions of this very block were not in ``known`` when first asked.
        found: dict[Outpoint, int] = {p: known.values[p] for p in missing if p in known.values}
        rest = [p for p in dict.fromkeys(missing) if p not in found]
        if rest and lookup is not None:
            found.update(lookup(rest))
        for fields in pending_inputs:
            if fields[8] is None and fields[3] is not None:
                fields[8] = found.get((fields[3], fields[4]))

    inputs = [InputRow(*fields) for fields in pending_inputs]
    for i, tx_row in enumerate(transactions):
        if tx_row.is_coinbase:
            continue
        values = [inputs[j].value for j in tx_inputs[i]]
        if values and all(v is not None for v in values):
            transactions[i] = tx_row._replace(fee=sum(values) - tx_row.output_value)  # type: ignore[arg-type]

    size = len(raw)
    block_row = BlockRow(block_hash, height, b2lx(header.hashPrevBlock), b2lx(header.hashMerkleRoot),
                         header.nTime, header.nVersion, header.nBits, header.nNonce, size, stripped_total,
                         stripped_total * 3 + size, len(transactions))
    return ParsedBlock(block_row, transactions, inputs, outputs)


def parse_blocks(
    blocks: Iterable[bytes | CBlock],
    *,
    first_height: int | None = None,
    network: str = "main",
    lookup: PrevoutLookup | None = None,
    known: PrevoutCache | None = None,
) -> Iterator[ParsedBlock]:
    """Parse consecutive blocks; outputs of earlier blocks of the batch price later spends."""
    known = known if known is not None else PrevoutCache()
    for offset, block in enumerate(blocks):
        height = None if first_height is None else first_height + offset
        yield parse_block(block, height=height, network=network, known=known, lookup=lookup)


# --------------------------------------------------------------------------- files
def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        head = probe.read(3)
    if head == b"BZh":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_block_file(path: str | Path, *, network: str | None = None) -> Iterator[bytes]:
    """Raw blocks of a framed block file (Core's ``blk*.dat`` layout; btcd's test files).

    Each record: 4-byte network magic, 4-byte little-endian length, the block. Zero padding at the
    end (Core preallocates its files) ends the file. A magic of another network than ``network``,
    an unknown magic or a truncated record is a DataError.
    """
    expected = MAGIC[normalize_network(network)] if network else None
    with _open(Path(path)) as stream:
        record = 0
        while True:
            head = stream.read(8)
            if len(head) < 8 or head[:4] == b"\0\0\0\0":
                if head.strip(b"\0"):
                    raise DataError(f"{path}: truncated record header after {record} blocks", system="bitcoin",
                                    reason="malformed_block_file")
                return
            magic, length = head[:4], struct.unpack("<I", head[4:])[0]
            if magic not in _NETWORK_OF_MAGIC or (expected is not None and magic != expected):
                raise DataError(f"{path}: record {record} has magic {magic.hex()}"
                                + (f", expected {expected.hex()}" if expected else ""),
                                system="bitcoin", reason="malformed_block_file")
            block = stream.read(length)
            if len(block) != length:
                raise DataError(f"{path}: record {record} truncated ({len(block)} of {length} bytes)",
                                system="bitcoin", reason="malformed_block_file")
            yield block
            record += 1


def read_block(path: str | Path) -> bytes:
    """A file holding one bare serialised block (e.g. ``getblock <hash> 0`` output decoded from hex)."""
    with _open(Path(path)) as stream:
        data = stream.read()
    try:  # a hex dump rather than bytes
        text = data.strip()
        if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text[:200]):
            return bytes.fromhex(text.decode())
    except ValueError:
        pass
    return data
