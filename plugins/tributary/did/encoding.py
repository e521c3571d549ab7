"""Byte encodings used by DID methods: base64url, base58btc multibase, multicodec, z-base-32."""

from __future__ import annotations

import base64

import base58

# multicodec varint prefixes of public keys (https://github.com/multiformats/multicodec)
MULTICODEC_PUB = {
    "Ed25519": b"\xed\x01",
    "secp256k1": b"\xe7\x01",
    "P-256": b"\x80\x24",
    "X25519": b"\xec\x01",
}
MULTICODEC_BY_PREFIX = {v: k for k, v in MULTICODEC_PUB.items()}

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_INDEX = {c: i for i, c in enumerate(ZBASE32)}


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or any(c in text for c in "+/="):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def multibase_encode(crv: str, public_key: bytes) -> str:
    """``z`` + base58btc(multicodec prefix + key bytes)."""
    return "z" + base58.b58encode(MULTICODEC_PUB[crv] + public_key).decode("ascii")


def multibase_decode(value: str) -> tuple[str, bytes]:
    if not value.startswith("z"):
        raise ValueError("only base58btc multibase ('z') is supported")
    raw = base58.b58decode(value[1:])
    crv = MULTICODEC_BY_PREFIX.get(raw[:2])
    if crv is None:
        raise ValueError(f"unsupported multicodec prefix {raw[:2].hex()}")
    return crv, raw[2:]


def zbase32_encode(data: bytes) -> str:
    bits = "".join(f"{b:08b}" for b in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(ZBASE32[int(bits[i:i + 5], 2)] for i in range(0, len(bits), 5))


def zbase32_decode(text: str) -> bytes:
    try:
        bits = "".join(f"{_ZBASE32_INDEX[c]:05b}" for c in text)
    except KeyError as exc:
        raise ValueError(f"invalid z-base-32 character {exc.args[0]!r}") from None
    usable = len(bits) - len(bits) % 8
    return bytes(int(bits[i:i + 8], 2) for i in range(0, usable, 8))
