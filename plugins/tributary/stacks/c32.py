"""Stacks addresses: c32check encoding (Crockford base32 + a double-SHA256 checksum), hash160.

Written by hand (no maintained Python package implements it; see ``docs/stacks.md``), following
the reference ``c32check`` codec: a 20-byte hash160 and a version byte become
``"S" + c32(version) + c32(hash160 + checksum)``, where each leading zero byte becomes one ``0``.
"""

from __future__ import annotations

import hashlib
import re

C32_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_C32_INDEX = {ch: i for i, ch in enumerate(C32_ALPHABET)}

# Address versions (SIP-005): single-sig P2PKH and multi-sig P2SH, per network.
MAINNET_P2PKH = 22  # SP...
MAINNET_P2SH = 20  # SM...
TESTNET_P2PKH = 26  # ST...
TESTNET_P2SH = 21  # SN...
ADDRESS_VERSIONS = frozenset({MAINNET_P2PKH, MAINNET_P2SH, TESTNET_P2PKH, TESTNET_P2SH})

_CONTRACT_NAME = re.compile(r"^[a-zA-Z]([a-zA-Z0-9]|[-_])*$")


class AddressError(ValueError):
    """Not a valid c32check Stacks address or contract identifier."""


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)); pycryptodome's RIPEMD160 where OpenSSL no longer offers it."""
    digest = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", digest).digest()
    except ValueError:  # OpenSSL 3 without the legacy provider
        from Crypto.Hash import RIPEMD160

        return RIPEMD160.new(digest).digest()


def _checksum(version: int, data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(bytes([version]) + data).digest()).digest()[:4]


def c32_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 32)
        digits.append(C32_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "0" * zeros + "".join(reversed(digits))


def c32_decode(text: str, length: int) -> bytes:
    """Decode to exactly ``length`` bytes (the leading ``0`` digits stand for zero bytes)."""
    text = text.upper().replace("O", "0").replace("L", "1").replace("I", "1")
    number = 0
    for ch in text:
        if ch not in _C32_INDEX:
            raise AddressError(f"invalid c32 character {ch!r}")
        number = number * 32 + _C32_INDEX[ch]
    try:
        return number.to_bytes(length, "big")
    except OverflowError as exc:
        raise AddressError("c32 value is longer than expected") from exc


def encode_address(version: int, hash_bytes: bytes) -> str:
    if not 0 <= version < 32:
        raise AddressError(f"address version {version} is not 0..31")
    if len(hash_bytes) != 20:
        raise AddressError("an address hash is 20 bytes")
    return "S" + C32_ALPHABET[version] + c32_encode(hash_bytes + _checksum(version, hash_bytes))


def decode_address(address: str) -> tuple[int, bytes]:
    """``(version, hash160)`` of an ``S...`` address; checks the checksum."""
    if not isinstance(address, str) or len(address) < 5 or address[0] != "S":
        raise AddressError(f"not a Stacks address: {address!r}")
    version_char = address[1].upper()
    if version_char not in _C32_INDEX:
        raise AddressError(f"not a Stacks address: {address!r}")
    version = _C32_INDEX[version_char]
    payload = c32_decode(address[2:], 24)
    hash_bytes, checksum = payload[:20], payload[20:]
    if _checksum(version, hash_bytes) != checksum or encode_address(version, hash_bytes) != address.upper():
        raise AddressError(f"bad checksum in Stacks address {address!r}")
    return version, hash_bytes


def is_address(text: str) -> bool:
    try:
        decode_address(text)
    except AddressError:
        return False
    return True


def check_contract_name(name: str) -> str:
    if not (1 <= len(name) <= 128 and _CONTRACT_NAME.match(name)):
        raise AddressError(f"invalid contract name {name!r}")
    return name


def split_contract_id(contract_id: str) -> tuple[str, str]:
    """``"ST...ADDR.name"`` -> ``(address, name)``, both checked."""
    address, dot, name = contract_id.partition(".")
    if not dot:
        raise AddressError(f"not a contract identifier <address>.<name>: {contract_id!r}")
    decode_address(address)
    return address, check_contract_name(name)
