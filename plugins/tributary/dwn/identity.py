"""The DWN signing identity: an Ed25519 ``did:key`` built on :mod:`tributary.did` (one did:key for the project).

DWN code depends only on :class:`DidKey`, :func:`public_key_of`, :func:`x25519_public_of` and
:func:`verify`; the DID, its multibase value, the JWKs and the EdDSA signatures all come from
``tributary.did`` (``didkey``, ``keys``, ``encoding``). What the did package has no use for stays here:
the tenant secret formats of the ``tributary_dwn`` Connection and the X25519 key-agreement key derived
from the Ed25519 key (the birational map the did:key spec uses), which the JWE encryption needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tributary.core.errors import PermanentError, SecurityError
from tributary.did import didkey, keys
from tributary.did.document import PortableDid, ResolutionError, parse_did
from tributary.did.encoding import b64url_decode, b64url_encode, multibase_decode
from tributary.dwn import SYSTEM

b64url = b64url_encode
__all__ = ["DidKey", "b64url", "b64url_decode", "did_from_public_key", "public_key_of", "verify",
           "x25519_public_of"]

_P = 2**255 - 19


def did_from_public_key(public: bytes) -> str:
    return didkey.did_from_jwk(keys.public_jwk_from_bytes("Ed25519", public))


def _public_jwk_of(did: str) -> keys.Jwk:
    try:
        method, value = parse_did(did)
    except ResolutionError:
        raise SecurityError(f"malformed DID {str(did)[:60]!r}", system=SYSTEM, reason="did:malformed") from None
    if method != "key":
        raise SecurityError(f"not a did:key: {did[:60]!r}", system=SYSTEM, reason="did:unsupported")
    try:
        crv, raw = multibase_decode(value)
    except ValueError as exc:
        raise SecurityError(f"malformed did:key {did[:60]!r}", system=SYSTEM, reason="did:malformed") from exc
    if crv != "Ed25519" or len(raw) != 32:
        raise SecurityError(f"did:key {did[:60]!r} is not an Ed25519 key", system=SYSTEM, reason="did:unsupported")
    return keys.public_jwk_from_bytes(crv, raw)


def public_key_of(did: str) -> bytes:
    """The raw Ed25519 public key of an Ed25519 ``did:key``; anything else is a security error."""
    return keys.public_bytes(_public_jwk_of(did))


def x25519_public_of(did: str) -> bytes:
    """The X25519 key-agreement public key of an Ed25519 did:key (Montgomery u = (1 + y) / (1 - y))."""
    y = int.from_bytes(public_key_of(did), "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def verify(did: str, message: bytes, signature: bytes) -> bool:
    return keys.verify(_public_jwk_of(did), message, signature)


@dataclass(frozen=True, eq=False)
class DidKey:
    """An Ed25519 did:key with its private JWK (``tributary.did.keys`` form). ``repr`` never shows the key."""

    jwk: keys.Jwk = field(repr=False)

    def __post_init__(self) -> None:
        if self.jwk.get("crv") != "Ed25519" or "d" not in self.jwk:
            raise ValueError("a DWN identity is an Ed25519 private JWK")

    def __repr__(self) -> str:
        return f"DidKey({self.did})"

    @classmethod
    def generate(cls) -> DidKey:
        return cls(keys.generate("Ed25519"))

    @classmethod
    def from_portable(cls, portable: PortableDid) -> DidKey:
        """The signer of an Ed25519 did:key made by ``tributary.did.create_did('key')`` (or the key store)."""
        if portable.method != "key":
            raise PermanentError(f"{portable.uri}: a DWN identity is a did:key", system=SYSTEM,
                                 reason="config:private_key")
        wanted = keys.thumbprint(_public_jwk_of(portable.uri))
        for jwk in portable.private_keys:
            if jwk.get("crv") == "Ed25519" and keys.thumbprint(jwk) == wanted:
                return cls(jwk)
        raise PermanentError(f"{portable.uri}: its private key is missing", system=SYSTEM, reason="config:private_key")

    @classmethod
    def from_secret(cls, secret: str) -> DidKey:
        """From a Connection password: 64 hex chars (the 32-byte seed) or an OKP/Ed25519 private JWK."""
        text = (secret or "").strip()
        try:
            if text.startswith("{"):
                given = json.loads(text)
                if given.get("kty") != "OKP" or given.get("crv") != "Ed25519" or "d" not in given:
                    raise ValueError("JWK must be an OKP Ed25519 private key")
                seed = b64url_decode(given["d"])
            else:
                seed = bytes.fromhex(text.removeprefix("0x"))
            if len(seed) != 32:
                raise ValueError("an Ed25519 private key is 32 bytes")
            jwk = keys.private_jwk_from_bytes("Ed25519", seed)
            if text.startswith("{") and given.get("x") not in (None, jwk["x"]):
                raise ValueError("the JWK's x is not the public key of its d")
            return cls(jwk)
        except (ValueError, TypeError, AttributeError) as exc:
            raise PermanentError(f"invalid DWN tenant private key ({exc.__class__.__name__})", system=SYSTEM,
                                 reason="config:private_key") from None

    @cached_property
    def public_bytes(self) -> bytes:
        return keys.public_bytes(self.jwk)

    @cached_property
    def did(self) -> str:
        return didkey.did_from_jwk(self.jwk)

    @property
    def key_id(self) -> str:
        """``did#<multibase>``: the verification method id of the did:key document."""
        return f"{self.did}#{parse_did(self.did)[1]}"

    def seed_hex(self) -> str:
        return b64url_decode(self.jwk["d"]).hex()

    def private_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.jwk["x"], "d": self.jwk["d"]}

    def sign(self, message: bytes) -> bytes:
        return keys.sign(self.jwk, message)

    def x25519_private(self) -> X25519PrivateKey:
        """The key-agreement private key matching :func:`x25519_public_of` (RFC 8032 scalar of the seed)."""
        scalar = bytearray(hashlib.sha512(b64url_decode(self.jwk["d"])).digest()[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        return X25519PrivateKey.from_private_bytes(bytes(scalar))
