"""The bitstring of a Bitstring Status List (W3C; also StatusList2021): bits, their encoding, entry types.

A list is a bitstring (>= 131,072 bits, so one credential hides in the crowd), GZIP-compressed and
base64url-encoded (``u`` multibase prefix for BitstringStatusList). Bit ``i`` counts from the most
significant bit of the first byte. Verifying (``vcjwt``) and issuing (``status_list``) both read it,
so it sits below both of them.
"""

from __future__ import annotations

import gzip

from tributary.core.errors import DataError, PermanentError
from tributary.core.fetch import DEFAULT_MAX_DECOMPRESSED_BYTES, inflate
from tributary.did.encoding import b64url_decode, b64url_encode
from tributary.vc import SYSTEM

MIN_BITS = 131_072
ENTRY_TYPES = ("BitstringStatusListEntry", "StatusList2021Entry")


def new_bits(size: int = MIN_BITS) -> bytearray:
    return bytearray((max(size, MIN_BITS) + 7) // 8)


def set_bit(bits: bytearray, index: int, value: bool = True) -> None:
    if not 0 <= index < len(bits) * 8:
        raise PermanentError(f"status index {index} outside the list", system=SYSTEM, reason="status_index")
    mask = 0x80 >> (index % 8)
    bits[index // 8] = bits[index // 8] | mask if value else bits[index // 8] & ~mask


def get_bit(bits: bytes, index: int) -> bool:
    if not 0 <= index < len(bits) * 8:
        raise DataError(f"status index {index} outside the list", system=SYSTEM, reason="status_index")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def encode(bits: bytes) -> str:
    return "u" + b64url_encode(gzip.compress(bytes(bits), mtime=0))


def decode(encoded: str, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> bytes:
    """The bits of ``encodedList``, inflated in bounded steps: a list that is a gzip bomb stops at
    ``max_bytes`` with ``DataError('status_list_too_large')``, never one unbounded decompress."""
    try:
        raw = b64url_decode(encoded[1:] if encoded.startswith("u") else encoded)
    except ValueError:
        raise DataError("encodedList is not base64url GZIP", system=SYSTEM, reason="status_list_malformed") from None
    try:
        return inflate(raw, max_bytes, system=SYSTEM, what="encodedList", gzip_only=True)
    except DataError as exc:
        if exc.reason == "fetch:decompressed_too_large":
            raise DataError(f"encodedList inflates past {max_bytes} bytes", system=SYSTEM,
                            reason="status_list_too_large") from None
        raise DataError("encodedList is not base64url GZIP", system=SYSTEM, reason="status_list_malformed") from None
