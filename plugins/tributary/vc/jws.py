"""Compact JWS (RFC 7515) with the DID signing algorithms: EdDSA (alias Ed25519), ES256K, ES256."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tributary.core.errors import DataError
from tributary.did import keys
from tributary.did.encoding import b64url_decode, b64url_encode
from tributary.vc import SYSTEM


@dataclass(frozen=True)
class Jws:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def encode_json(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def sign(header: dict[str, Any], payload: dict[str, Any], private_jwk: keys.Jwk) -> str:
    signing_input = f"{encode_json(header)}.{encode_json(payload)}"
    return f"{signing_input}.{b64url_encode(keys.sign(private_jwk, signing_input.encode()))}"


def parse(token: str) -> Jws:
    """Split and decode a compact JWS; ``DataError(reason='malformed')`` when it is not one."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise DataError("a JWT has three base64url parts", system=SYSTEM, reason="malformed")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise DataError("a JWT part is not base64url JSON", system=SYSTEM, reason="malformed") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise DataError("JWT header and payload must be JSON objects", system=SYSTEM, reason="malformed")
    return Jws(header, payload, f"{parts[0]}.{parts[1]}".encode(), signature)


def alg_matches_key(alg: str, jwk: keys.Jwk) -> bool:
    return keys.ALG_CURVE.get(alg) == jwk.get("crv")
