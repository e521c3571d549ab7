"""did:jwk (https://github.com/quartzjer/did-jwk): the DID is the base64url of the public JWK."""

from __future__ import annotations

import json
from typing import Any

from tributary.did import keys
from tributary.did.document import (
    SIGNING_PURPOSES,
    PortableDid,
    ResolutionError,
    parse_did,
    signing_document,
    verification_method,
)
from tributary.did.encoding import b64url_decode, b64url_encode


def did_from_jwk(jwk: keys.Jwk) -> str:
    public = keys.public_jwk(jwk)
    return "did:jwk:" + b64url_encode(json.dumps(public, separators=(",", ":")).encode())


def create(crv: str = "Ed25519", private_jwk: keys.Jwk | None = None) -> PortableDid:
    jwk = private_jwk or keys.generate(crv)
    did = did_from_jwk(jwk)
    return PortableDid(did, document(did), [jwk])


def document(did: str) -> dict[str, Any]:
    method, value = parse_did(did)
    if method != "jwk":
        raise ResolutionError("methodNotSupported", method)
    try:
        jwk = json.loads(b64url_decode(value))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResolutionError("invalidDid", "the method-specific id is not a base64url JWK") from exc
    if not isinstance(jwk, dict) or "kty" not in jwk or "d" in jwk:
        raise ResolutionError("invalidDid", "not a public JWK")
    use = jwk.get("use")
    purposes = SIGNING_PURPOSES if use != "enc" else ()
    doc = signing_document(did, [verification_method(did, "0", jwk)], purposes=purposes)
    if use != "sig":
        doc["keyAgreement"] = [f"{did}#0"]
    return doc
