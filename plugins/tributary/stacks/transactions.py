"""Stacks transactions (SIP-005): build, sign and serialize contract-call and contract-deploy.

Written by hand for the same reason as :mod:`tributary.stacks.clarity` (no maintained Python
library); the bytes are compared with ``@stacks/transactions`` in ``tests/stacks/test_transactions.py``.
Only what Tributary sends is implemented: standard (not sponsored) authorization with a single-sig
P2PKH spending condition; post-conditions are an empty list (mode ``deny`` by default, so a contract
that moves the sender's assets aborts unless the caller chooses ``allow``).

Layout::

    version(1) chain_id(4) auth_type(1)=0x04
      hash_mode(1)=0x00 signer(20) nonce(8) fee(8) key_encoding(1) signature(65, recid||r||s)
    anchor_mode(1) post_condition_mode(1) post_conditions(4-byte count, 0 items) payload

Signing: the *initial sighash* is SHA-512/256 of the transaction whose spending condition is
cleared (nonce and fee zero, empty signature; signer and key encoding kept); the *presign sighash*
is SHA-512/256(initial || auth_type || fee || nonce); its recoverable secp256k1 signature (RFC 6979
deterministic nonce, low-S) is stored as ``recid || r || s``. The txid is SHA-512/256 of the signed bytes.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tributary.stacks.c32 import (
    MAINNET_P2PKH,
    TESTNET_P2PKH,
    check_contract_name,
    decode_address,
    encode_address,
    hash160,
)
from tributary.stacks.clarity import CV, check_name, serialize


class Network(enum.StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"

    @property
    def tx_version(self) -> int:
        return 0x00 if self is Network.MAINNET else 0x80

    @property
    def chain_id(self) -> int:
        return 0x00000001 if self is Network.MAINNET else 0x80000000

    @property
    def address_version(self) -> int:
        return MAINNET_P2PKH if self is Network.MAINNET else TESTNET_P2PKH


class AnchorMode(enum.IntEnum):
    ON_CHAIN_ONLY = 1
    OFF_CHAIN_ONLY = 2
    ANY = 3


class PostConditionMode(enum.IntEnum):
    ALLOW = 1
    DENY = 2


AUTH_STANDARD = 0x04
HASH_MODE_P2PKH = 0x00
KEY_COMPRESSED, KEY_UNCOMPRESSED = 0x00, 0x01
PAYLOAD_SMART_CONTRACT, PAYLOAD_CONTRACT_CALL, PAYLOAD_VERSIONED_SMART_CONTRACT = 0x01, 0x02, 0x06
EMPTY_SIGNATURE = bytes(65)


class TransactionError(ValueError):
    """A transaction that cannot be built or signed as asked (bad key, name, size)."""


def sha512_256(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


# ------------------------------------------------------------------------ keys
@dataclass(frozen=True)
class PrivateKey:
    """A secp256k1 key as stacks.js writes it: 64 hex (uncompressed public key) or 66 hex ending ``01``.

    ``repr`` never shows the secret.
    """

    secret: bytes = field(repr=False)
    compressed: bool

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        raw = text.strip().lower().removeprefix("0x")
        try:
            data = bytes.fromhex(raw)
        except ValueError:
            raise TransactionError("the private key is not hex") from None
        if len(data) == 33 and data[32] == 0x01:
            return cls(data[:32], True)
        if len(data) == 32:
            return cls(data, False)
        raise TransactionError("a Stacks private key is 32 bytes, or 33 bytes ending in 01 (compressed)")

    @property
    def public_key(self) -> bytes:
        from coincurve import PrivateKey as Secp

        return Secp(self.secret).public_key.format(compressed=self.compressed)

    def address(self, network: Network | str) -> str:
        return encode_address(Network(network).address_version, hash160(self.public_key))

    def sign_recoverable(self, digest: bytes) -> bytes:
        """65 bytes ``recid || r || s`` over a 32-byte digest (RFC 6979, low-S)."""
        from coincurve import PrivateKey as Secp

        rsv = Secp(self.secret).sign_recoverable(digest, hasher=None)  # r(32) s(32) recid(1)
        return bytes([rsv[64]]) + rsv[:64]


def recover_public_key(digest: bytes, signature: bytes, *, compressed: bool = True) -> bytes:
    """The public key that made a ``recid || r || s`` signature over ``digest``."""
    from coincurve import PublicKey

    key = PublicKey.from_signature_and_message(signature[1:] + signature[:1], digest, hasher=None)
    return key.format(compressed=compressed)


# ------------------------------------------------------------------------ payloads
def contract_call_payload(contract_address: str, contract_name: str, function: str, args: Sequence[CV]) -> bytes:
    version, hash_bytes = decode_address(contract_address)
    name = check_contract_name(contract_name).encode("ascii")
    fn = check_name(function).encode("ascii")
    body = b"".join(serialize(a) for a in args)
    return (bytes([PAYLOAD_CONTRACT_CALL, version]) + hash_bytes + bytes([len(name)]) + name
            + bytes([len(fn)]) + fn + struct.pack(">I", len(args)) + body)


def contract_deploy_payload(contract_name: str, source: str, clarity_version: int | None = None) -> bytes:
    """``smart-contract`` (0x01) without ``clarity_version``, else ``versioned-smart-contract`` (0x06)."""
    name = check_contract_name(contract_name).encode("ascii")
    code = source.encode("utf-8")
    if not source.isascii():
        raise TransactionError("Clarity source must be ASCII")
    body = bytes([len(name)]) + name + struct.pack(">I", len(code)) + code
    if clarity_version is None:
        return bytes([PAYLOAD_SMART_CONTRACT]) + body
    if clarity_version not in (1, 2, 3, 4):
        raise TransactionError(f"unknown Clarity version {clarity_version}")
    return bytes([PAYLOAD_VERSIONED_SMART_CONTRACT, clarity_version]) + body


# ------------------------------------------------------------------------ transactions
@dataclass(frozen=True)
class UnsignedTransaction:
    network: Network
    signer: bytes  # hash160 of the sender's public key
    nonce: int
    fee: int
    payload: bytes
    compressed: bool = True
    anchor_mode: AnchorMode = AnchorMode.ANY
    post_condition_mode: PostConditionMode = PostConditionMode.DENY
    chain_id: int | None = None  # None: the network's

    def serialize(self, signature: bytes = EMPTY_SIGNATURE) -> bytes:
        if not (0 <= self.nonce < 2**64 and 0 <= self.fee < 2**64):
            raise TransactionError("nonce and fee are unsigned 64-bit integers")
        if len(self.signer) != 20 or len(signature) != 65:
            raise TransactionError("signer is 20 bytes and the signature 65")
        chain_id = self.network.chain_id if self.chain_id is None else self.chain_id
        return (bytes([self.network.tx_version]) + struct.pack(">I", chain_id)
                + bytes([AUTH_STANDARD, HASH_MODE_P2PKH]) + self.signer + struct.pack(">QQ", self.nonce, self.fee)
                + bytes([KEY_COMPRESSED if self.compressed else KEY_UNCOMPRESSED]) + signature
                + bytes([int(self.anchor_mode), int(self.post_condition_mode)]) + struct.pack(">I", 0)
                + self.payload)

    def initial_sighash(self) -> bytes:
        # The origin's condition is "cleared" (stacks-core ``TransactionSpendingCondition::clear``):
        # nonce, fee and signature zero; signer and key encoding stay. (A sponsor's condition, not
        # used here, would be replaced by an all-zero one.)
        cleared = replace(self, nonce=0, fee=0)
        return sha512_256(cleared.serialize())

    def presign_sighash(self) -> bytes:
        return sha512_256(self.initial_sighash() + bytes([AUTH_STANDARD]) + struct.pack(">QQ", self.fee, self.nonce))

    def sign(self, key: PrivateKey) -> SignedTransaction:
        if hash160(key.public_key) != self.signer or key.compressed != self.compressed:
            raise TransactionError("the key does not belong to this transaction's sender")
        signature = key.sign_recoverable(self.presign_sighash())
        return SignedTransaction(self, signature)


@dataclass(frozen=True)
class SignedTransaction:
    unsigned: UnsignedTransaction
    signature: bytes

    @property
    def raw(self) -> bytes:
        return self.unsigned.serialize(self.signature)

    @property
    def txid(self) -> str:
        return sha512_256(self.raw).hex()

    def verify(self) -> bool:
        """The signature recovers to the sender's key hash (what the node checks first)."""
        try:
            public = recover_public_key(self.unsigned.presign_sighash(), self.signature,
                                        compressed=self.unsigned.compressed)
        except Exception:
            return False
        return hash160(public) == self.unsigned.signer


def _unsigned(key: PrivateKey, network: Network | str, nonce: int, fee: int, payload: bytes, *,
              anchor_mode: AnchorMode, post_condition_mode: PostConditionMode,
              chain_id: int | None) -> UnsignedTransaction:
    return UnsignedTransaction(Network(network), hash160(key.public_key), int(nonce), int(fee), payload,
                               compressed=key.compressed, anchor_mode=anchor_mode,
                               post_condition_mode=post_condition_mode, chain_id=chain_id)


def make_contract_call(key: PrivateKey, network: Network | str, *, contract_address: str, contract_name: str,
                       function: str, args: Sequence[CV], nonce: int, fee: int,
                       anchor_mode: AnchorMode = AnchorMode.ANY,
                       post_condition_mode: PostConditionMode = PostConditionMode.DENY,
                       chain_id: int | None = None) -> SignedTransaction:
    payload = contract_call_payload(contract_address, contract_name, function, args)
    return _unsigned(key, network, nonce, fee, payload, anchor_mode=anchor_mode,
                     post_condition_mode=post_condition_mode, chain_id=chain_id).sign(key)


def make_contract_deploy(key: PrivateKey, network: Network | str, *, contract_name: str, source: str,
                         nonce: int, fee: int, clarity_version: int | None = None,
                         anchor_mode: AnchorMode = AnchorMode.ANY,
                         post_condition_mode: PostConditionMode = PostConditionMode.DENY,
                         chain_id: int | None = None) -> SignedTransaction:
    payload = contract_deploy_payload(contract_name, source, clarity_version)
    return _unsigned(key, network, nonce, fee, payload, anchor_mode=anchor_mode,
                     post_condition_mode=post_condition_mode, chain_id=chain_id).sign(key)


def sender_address(raw: bytes) -> str:
    """The origin address of a serialized standard single-sig transaction (for ledgers and logs)."""
    if len(raw) < 27 or raw[5] != AUTH_STANDARD or raw[6] != HASH_MODE_P2PKH:
        raise TransactionError("not a standard single-sig P2PKH transaction")
    network = Network.MAINNET if raw[0] == 0x00 else Network.TESTNET
    return encode_address(network.address_version, raw[7:27])
