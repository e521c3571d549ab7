"""did:key (https://w3c-ccg.github.io/did-method-key/): the DID *is* the multibase public key.

Supported: Ed25519 (``z6Mk``), secp256k1 (``zQ3s``), P-256 (``zDn``); X25519 (``z6LS``) resolves as a
key-agreement-only document. Documents use ``JsonWebKey`` verification methods.
"""

from __future__ import annotations

from typing import Any

from tributary.did import keys
from tributary.did.document import (
    DID_CONTEXT,
    PortableDid,
    ResolutionError,
    parse_did,
    signing_document,
    verification_method,
)
from tributary.did.encoding import multibase_decode, multibase_encode


def did_from_jwk(jwk: keys.Jwk) -> str:
    return "did:key:" + multibase_encode(keys.curve_of(jwk), keys.public_bytes(jwk))


def create(crv: str = "Ed25519", private_jwk: keys.Jwk | None = None) -> PortableDid:
    jwk = private_jwk or keys.generate(crv)
    did = did_from_jwk(jwk)
    return PortableDid(did, document(did), [jwk])


def document(did: str) -> dict[str, Any]:
    method, value = parse_did(did)
    if method != "key":
        raise ResolutionError("methodNotSupported", method)
    try:
        crv, raw = multibase_decode(value)
        jwk = keys.public_jwk_from_bytes(crv, raw)
    except ValueError as exc:
        raise ResolutionError("invalidDid", str(exc)) from exc
    vm = verification_method(did, value, jwk)
    if crv == "X25519":
        return {"@context": [DID_CONTEXT], "id": did, "verificationMethod": [vm], "keyAgreement": [vm["id"]]}
    jwk["alg"] = keys.DEFAULT_ALG[crv]
    return signing_document(did, [verification_method(did, value, jwk)])
