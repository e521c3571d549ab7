"""JSON Web Keys for the three signing curves: generate, convert, sign and verify.

Ed25519 (JWS ``EdDSA``, also accepted as ``Ed25519``), secp256k1 (``ES256K``) and P-256 (``ES256``).
ECDSA signatures are the JWS form ``r || s`` (64 bytes), made deterministically (RFC 6979) and
low-S normalised on signing; verification accepts either S form, as the Web5 vectors ask.
Invalid keys raise ``ValueError``; a signature that does not match returns ``False``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from tributary.did.encoding import b64url_decode, b64url_encode

Jwk = dict[str, Any]

CURVES = {"secp256k1": ec.SECP256K1, "P-256": ec.SECP256R1}
ORDER = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "P-256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
DEFAULT_ALG = {"Ed25519": "EdDSA", "secp256k1": "ES256K", "P-256": "ES256"}
ALG_CURVE = {"EdDSA": "Ed25519", "Ed25519": "Ed25519", "ES256K": "secp256k1", "ES256": "P-256"}
SUPPORTED_CURVES = tuple(DEFAULT_ALG)


def _int_b64(value: int) -> str:
    return b64url_encode(value.to_bytes(32, "big"))


def thumbprint(jwk: Jwk) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    members = ("crv", "kty", "x") if jwk.get("kty") == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def public_jwk(jwk: Jwk) -> Jwk:
    return {k: v for k, v in jwk.items() if k != "d"}


def generate(crv: str = "Ed25519") -> Jwk:
    """A new private JWK with ``alg`` and ``kid`` (its thumbprint)."""
    if crv == "Ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        jwk = private_jwk_from_bytes(crv, raw)
    elif crv in CURVES:
        key = ec.generate_private_key(CURVES[crv]())
        jwk = private_jwk_from_bytes(crv, key.private_numbers().private_value.to_bytes(32, "big"))
    else:
        raise ValueError(f"unsupported curve {crv!r}")
    return jwk


def private_jwk_from_bytes(crv: str, secret: bytes) -> Jwk:
    if crv == "Ed25519":
        key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
        x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk: Jwk = {"kty": "OKP", "crv": crv, "x": b64url_encode(x), "d": b64url_encode(secret)}
    elif crv in CURVES:
        eckey = ec.derive_private_key(int.from_bytes(secret, "big"), CURVES[crv]())
        nums = eckey.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": crv, "x": _int_b64(nums.x), "y": _int_b64(nums.y), "d": b64url_encode(secret)}
    else:
        raise ValueError(f"unsupported curve {crv!r}")
    jwk["alg"] = DEFAULT_ALG[crv]
    jwk["kid"] = thumbprint(jwk)
    return jwk


def public_jwk_from_bytes(crv: str, raw: bytes) -> Jwk:
    """From raw (Ed25519) or SEC1 compressed/uncompressed (EC) public key bytes."""
    if crv == "Ed25519":
        if len(raw) != 32:
            raise ValueError("Ed25519 public key must be 32 bytes")
        return {"kty": "OKP", "crv": crv, "x": b64url_encode(raw)}
    if crv == "X25519":
        return {"kty": "OKP", "crv": crv, "x": b64url_encode(raw)}
    if crv in CURVES:
        nums = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[crv](), raw).public_numbers()
        return {"kty": "EC", "crv": crv, "x": _int_b64(nums.x), "y": _int_b64(nums.y)}
    raise ValueError(f"unsupported curve {crv!r}")


def public_bytes(jwk: Jwk) -> bytes:
    """Raw Ed25519 key, or the compressed SEC1 point of an EC key (as did:key and did:dht carry them)."""
    if jwk.get("kty") == "OKP":
        return b64url_decode(jwk["x"])
    key = _ec_public(jwk)
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def _ec_public(jwk: Jwk) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if jwk.get("kty") != "EC" or crv not in CURVES:
        raise ValueError(f"unsupported EC key {jwk.get('kty')}/{crv}")
    x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
    if len(x) != 32 or len(y) != 32:
        raise ValueError("EC coordinates must be 32 bytes")
    return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                         CURVES[crv]()).public_key()


def curve_of(jwk: Jwk) -> str:
    crv = jwk.get("crv")
    if crv not in SUPPORTED_CURVES:
        raise ValueError(f"unsupported key curve {crv!r}")
    return str(crv)


def sign(jwk: Jwk, data: bytes) -> bytes:
    if "d" not in jwk:
        raise ValueError("signing needs a private key (the JWK has no 'd')")
    crv = curve_of(jwk)
    secret = b64url_decode(jwk["d"])
    if crv == "Ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(secret).sign(data)
    value = int.from_bytes(secret, "big")
    if not 0 < value < ORDER[crv]:
        raise ValueError("private key out of range")
    key = ec.derive_private_key(value, CURVES[crv]())
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    if s > ORDER[crv] // 2:
        s = ORDER[crv] - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(jwk: Jwk, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` matches the public key; ``ValueError`` for a bad key."""
    if "d" in jwk:
        raise ValueError("verification takes a public key, not a private one")
    crv = curve_of(jwk)
    if crv == "Ed25519":
        raw = b64url_decode(jwk["x"])
        if len(raw) != 32:
            raise ValueError("Ed25519 public key must be 32 bytes")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
            return True
        except InvalidSignature:
            return False
    key = _ec_public(jwk)
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False
