"""A minimal ``did:key`` (Ed25519) identity: enough to sign DWN messages and to verify their authors.

Temporary: the DID package (``tributary.did``, built in parallel) will replace this module; until then
DWN code depends only on :class:`DidKey`, :func:`public_key_of` and :func:`x25519_public_of`.

``did:key:z6Mk...`` = ``"z"`` + base58btc(multicodec ``0xed01`` + 32-byte Ed25519 public key); the
verification method id is ``did#<same multibase value>`` (the did:key method spec). Its key-agreement
key is the X25519 key derived from the Ed25519 key (birational map, as the did:key spec does).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tributary.core.errors import PermanentError, SecurityError

ED25519_MULTICODEC = b"\xed\x01"
DID_KEY_PREFIX = "did:key:"
_P = 2**255 - 19


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def did_from_public_key(public: bytes) -> str:
    return DID_KEY_PREFIX + "z" + base58.b58encode(ED25519_MULTICODEC + public).decode("ascii")


def public_key_of(did: str) -> bytes:
    """The raw Ed25519 public key of an Ed25519 ``did:key``; anything else is a security error."""
    if not did.startswith(DID_KEY_PREFIX + "z"):
        raise SecurityError(f"not a did:key with a base58btc key: {did[:60]!r}", system="dwn", reason="did:unsupported")
    try:
        decoded = base58.b58decode(did[len(DID_KEY_PREFIX) + 1:])
    except ValueError as exc:
        raise SecurityError(f"malformed did:key {did[:60]!r}", system="dwn", reason="did:malformed") from exc
    if decoded[:2] != ED25519_MULTICODEC or len(decoded) != 34:
        raise SecurityError(f"did:key {did[:60]!r} is not an Ed25519 key", system="dwn", reason="did:unsupported")
    return decoded[2:]


def x25519_public_of(did: str) -> bytes:
    """The X25519 key-agreement public key of an Ed25519 did:key (Montgomery u = (1 + y) / (1 - y))."""
    y = int.from_bytes(public_key_of(did), "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def verify(did: str, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key_of(did)).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class DidKey:
    """An Ed25519 did:key with its private key. ``repr`` never shows the key."""

    private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"DidKey({self.did})"

    @classmethod
    def generate(cls) -> DidKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret: str) -> DidKey:
        """From a Connection password: 64 hex chars (the 32-byte seed) or an OKP/Ed25519 private JWK."""
        text = (secret or "").strip()
        try:
            if text.startswith("{"):
                jwk = json.loads(text)
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" not in jwk:
                    raise ValueError("JWK must be an OKP Ed25519 private key")
                seed = b64url_decode(jwk["d"])
            else:
                seed = bytes.fromhex(text.removeprefix("0x"))
            if len(seed) != 32:
                raise ValueError("an Ed25519 private key is 32 bytes")
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise PermanentError(f"invalid DWN tenant private key ({exc.__class__.__name__})", system="dwn",
                                 reason="config:private_key") from None

    @cached_property
    def public_bytes(self) -> bytes:
        return _raw_public(self.private.public_key())

    @cached_property
    def did(self) -> str:
        return did_from_public_key(self.public_bytes)

    @property
    def key_id(self) -> str:
        return f"{self.did}#{self.did[len(DID_KEY_PREFIX):]}"

    def seed_hex(self) -> str:
        return self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption()).hex()

    def private_jwk(self) -> dict[str, str]:
        seed = bytes.fromhex(self.seed_hex())
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.public_bytes), "d": b64url(seed)}

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def x25519_private(self) -> X25519PrivateKey:
        """The key-agreement private key matching :func:`x25519_public_of` (RFC 8032 scalar of the seed)."""
        scalar = bytearray(hashlib.sha512(bytes.fromhex(self.seed_hex())).digest()[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        return X25519PrivateKey.from_private_bytes(bytes(scalar))
