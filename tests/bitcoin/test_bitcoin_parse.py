"""Consensus parsing of real mainnet blocks (and a constructed segwit one) into flat rows."""

from __future__ import annotations

import bz2
import hashlib
import itertools
import json
import struct
from collections import Counter

import pytest
from bitcoin.core import CBlock as CoreBlock
from bitcoin.core import COutPoint, CTransaction, CTxIn, CTxOut, b2lx
from bitcoin.core.script import CScript

from tests._shared import SHARED
from tributary.bitcoin.addresses import script_address
from tributary.bitcoin.parse import (
    PrevoutCache,
    bip34_height,
    iter_block_file,
    parse_block,
    parse_blocks,
    read_block,
    script_type,
)
from tributary.core.errors import DataError

pytestmark = pytest.mark.unit

DATA = SHARED / "data" / "bitcoin"

GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
BLOCK_1 = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"
# Computed from the file and cross-checked by its own coinbase (BIP34 height 413567) and merkle root.
BLOCK_413567 = "0000000000000000025aff8be8a55df8f89c77296db6198f272d6577325d4069"


def test_genesis_block_parses_to_its_well_known_rows() -> None:
    genesis = parse_block(next(iter_block_file(DATA / "btcd_blk_0_to_4.dat")), height=0)
    assert genesis.block.hash == GENESIS
    assert genesis.block.prev_hash == "0" * 64
    assert genesis.block.merkle_root == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    assert (genesis.block.time, genesis.block.nonce, genesis.block.bits) == (1231006505, 2083236893, 0x1D00FFFF)
    assert (genesis.block.size, genesis.block.weight, genesis.block.tx_count) == (285, 1140, 1)
    [coinbase] = genesis.transactions
    assert coinbase.txid == genesis.block.merkle_root and coinbase.is_coinbase and coinbase.fee is None
    assert coinbase.output_value == 50 * 100_000_000
    [output] = genesis.outputs
    assert (output.script_type, output.address) == ("p2pk", None)
    assert genesis.inputs[0].prev_txid is None and genesis.inputs[0].sequence == 0xFFFFFFFF


def test_framed_file_of_blocks_1_to_255_chains_from_genesis() -> None:
    blocks = list(parse_blocks(iter_block_file(DATA / "btcd_blocks1-256", network="main"), first_height=1))
    assert len(blocks) == 255
    assert blocks[0].block.hash == BLOCK_1 and blocks[0].block.prev_hash == GENESIS
    assert all(b.block.prev_hash == a.block.hash for a, b in itertools.pairwise(blocks))
    assert blocks[-1].block.height == 255
    assert sum(len(b.transactions) for b in blocks) == sum(b.block.tx_count for b in blocks)
    assert blocks[0].outputs[0].value == 50 * 100_000_000


def test_spends_inside_a_batch_get_input_values_and_fees() -> None:
    blocks = list(parse_blocks(iter_block_file(DATA / "btcd_blk_0_to_4.dat"), first_height=0))
    assert [b.block.tx_count for b in blocks] == [1, 1, 2, 3, 2]
    spends = [t for b in blocks for t in b.transactions if not t.is_coinbase]
    assert len(spends) == 4 and all(t.fee == 0 for t in spends)
    assert all(b.fees_known for b in blocks)
    assert all(i.value == 50 * 100_000_000 for b in blocks[2:3] for i in b.inputs if i.prev_txid)


def test_unknown_prevouts_leave_the_fee_null_or_come_from_the_lookup() -> None:
    raw = list(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
    alone = parse_block(raw[2])
    assert alone.transactions[1].fee is None and alone.inputs[1].value is None
    asked: list[list[tuple[str, int]]] = []

    def lookup(outpoints):
        asked.append(list(outpoints))
        return {p: 50 * 100_000_000 for p in outpoints}

    priced = parse_block(raw[2], lookup=lookup)
    assert priced.transactions[1].fee == 0 and len(asked) == 1


def test_block_413567_has_1557_transactions() -> None:
    raw = read_block(DATA / "block413567.raw")
    block = parse_block(raw, height=413567)
    assert block.block.hash == BLOCK_413567
    assert block.block.tx_count == len(block.transactions) == 1557
    assert block.block.size == len(raw) == 999_887
    assert block.block.weight == 4 * block.block.size  # no witness data before segwit activation
    assert (len(block.inputs), len(block.outputs)) == (4887, 3581)
    assert [t.idx for t in block.transactions] == list(range(1557))
    assert len({t.txid for t in block.transactions}) == 1557
    assert sum(t.output_value for t in block.transactions) == sum(o.value for o in block.outputs)
    assert Counter(o.script_type for o in block.outputs) == {"p2pkh": 2841, "p2sh": 737, "nulldata": 3}
    assert all(o.address and o.address[0] in "13" for o in block.outputs if o.script_type != "nulldata")
    assert bip34_height(CoreBlock.deserialize(raw).vtx[0]) == 413567


def test_block_277647_from_its_framed_file() -> None:
    [raw] = list(iter_block_file(DATA / "btcd_277647.dat"))
    block = parse_block(raw, height=277647)
    assert block.block.hash == "0000000000000000054a714e580b16c583701712ab91060e92dbde6eb1e052a8"
    assert block.block.tx_count == 213
    assert bip34_height(CoreBlock.deserialize(raw).vtx[0]) == 277647


def _segwit_block() -> tuple[CoreBlock, dict, bytes]:
    vectors = json.loads((DATA / "bip341-wallet-test-vectors.json").read_text())
    case = vectors["keyPathSpending"][0]
    signed = bytes.fromhex(case["auxiliary"]["fullySignedTx"])
    tx = CTransaction.deserialize(signed)
    coinbase = CTransaction([CTxIn(COutPoint(), CScript(b"\x03\x01\x02\x03"))],
                            [CTxOut(50 * 100_000_000, CScript(bytes.fromhex("0014" + "11" * 20)))])
    block = CoreBlock(nVersion=0x20000000, hashPrevBlock=b"\x22" * 32, nTime=1_700_000_000, nBits=0x207FFFFF,
                      nNonce=7, vtx=[coinbase, tx])
    return block, case, signed


def test_segwit_transaction_has_distinct_wtxid_weight_and_witness_rows() -> None:
    block, case, signed = _segwit_block()
    spent = {(b2lx(txin.prevout.hash), txin.prevout.n): utxo["amountSats"]
             for txin, utxo in zip(CTransaction.deserialize(signed).vin, case["given"]["utxosSpent"], strict=True)}
    parsed = parse_block(block.serialize(), network="main", lookup=lambda points: {p: spent[p] for p in points})
    tx = parsed.transactions[1]
    stripped = CTransaction.deserialize(signed).serialize({"include_witness": False})
    assert tx.has_witness
    assert tx.wtxid == b2lx(hashlib.sha256(hashlib.sha256(signed).digest()).digest())
    assert tx.txid == b2lx(hashlib.sha256(hashlib.sha256(stripped).digest()).digest()) != tx.wtxid
    assert tx.size == len(signed) and tx.weight == 3 * len(stripped) + len(signed)
    assert tx.vsize == -(-tx.weight // 4) < tx.size
    assert tx.fee == sum(spent.values()) - tx.output_value == 84_000_000
    inputs = [i for i in parsed.inputs if i.txid == tx.txid]
    assert [len(i.witness or ()) for i in inputs] == [1, 1, 0, 1, 1, 2, 1, 1, 1]
    assert len(bytes.fromhex(inputs[0].witness[0])) in (64, 65)  # a BIP340 signature (+ sighash byte)
    assert parsed.transactions[0].has_witness is False and parsed.inputs[0].witness is None
    assert parsed.block.stripped_size < parsed.block.size
    assert parsed.block.weight == 3 * parsed.block.stripped_size + parsed.block.size
    assert parsed.outputs[0].script_type == "p2wpkh" and parsed.outputs[0].address.startswith("bc1q")


def test_taproot_addresses_match_bip341_vectors() -> None:
    vectors = json.loads((DATA / "bip341-wallet-test-vectors.json").read_text())
    for case in vectors["scriptPubKey"]:
        script = bytes.fromhex(case["expected"]["scriptPubKey"])
        assert script_type(script) == "p2tr"
        assert script_address(script, "main") == case["expected"]["bip350Address"]


@pytest.mark.parametrize(("script", "kind", "network", "address"), [
    ("0014751e76e8199196d454941c45d1b3a323f1433bd6", "p2wpkh", "main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ("0014751e76e8199196d454941c45d1b3a323f1433bd6", "p2wpkh", "test", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),
    ("00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262", "p2wsh", "main",
     "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3"),
    ("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac", "p2pkh", "main", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
    ("a914748284390f9e263a4b766a75d0633c50426eb87587", "p2sh", "main", "3CK4fEwbMP7heJarmU4eqA3sMbVJyEnU3V"),
    ("51024e73", "anchor", "main", "bc1pfeessrawgf"),
    ("6a0b68656c6c6f20776f726c64", "nulldata", "main", None),
    ("6a", "nulldata", "main", None),
    ("5121" + "02" + "11" * 32 + "21" + "03" + "22" * 32 + "52ae", "multisig", "main", None),
    ("ac", "nonstandard", "main", None),
    ("4c", "nonstandard", "main", None),  # truncated push
    ("0015" + "11" * 21, "nonstandard", "main", None),  # v0 program of a wrong length
])
def test_script_types_and_addresses(script: str, kind: str, network: str, address: str | None) -> None:
    raw = bytes.fromhex(script)
    assert script_type(raw) == kind
    assert script_address(raw, network) == address


def test_regtest_addresses_use_the_regtest_prefixes() -> None:
    p2wpkh = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
    assert script_address(p2wpkh, "regtest").startswith("bcrt1q")
    p2pkh = bytes.fromhex("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac")
    assert script_address(p2pkh, "regtest")[0] in "mn"


def test_a_tampered_block_is_a_data_error() -> None:
    raw = bytearray(read_block(DATA / "block413567.raw"))
    raw[-10] ^= 0xFF  # inside the last transaction: its txid, and so the merkle root, changes
    with pytest.raises(DataError, match="merkle root"):
        parse_block(bytes(raw))
    with pytest.raises(DataError):
        parse_block(bytes(raw[:5000]))


def test_block_files_may_be_bz2_compressed_and_wrong_magic_is_refused(tmp_path) -> None:
    plain = (DATA / "btcd_blk_0_to_4.dat").read_bytes()
    packed = tmp_path / "blk.dat.bz2"
    packed.write_bytes(bz2.compress(plain + b"\0" * 64))  # zero padding ends a Core block file
    assert list(iter_block_file(packed)) == list(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
    with pytest.raises(DataError, match="expected fabfb5da"):
        list(iter_block_file(DATA / "btcd_blk_0_to_4.dat", network="regtest"))
    truncated = tmp_path / "short.dat"
    truncated.write_bytes(plain[:8] + plain[8:100])
    with pytest.raises(DataError, match="truncated"):
        list(iter_block_file(truncated))
    assert struct.unpack("<I", plain[4:8])[0] == 285


def test_prevout_cache_carries_values_across_calls() -> None:
    raw = list(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
    cache = PrevoutCache()
    for block in raw[:2]:
        parse_block(block, known=cache)
    assert parse_block(raw[2], known=cache).transactions[1].fee == 0
