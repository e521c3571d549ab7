"""Record data encrypted for a recipient DID with standard JOSE: a JWE (general JSON serialization,
``application/jose+json``), ``alg`` ECDH-ES+A256KW over the recipient's X25519 key-agreement key,
``enc`` A256GCM. The DWN stores the JWE as the record's data; only the holder of the recipient's
private key can read it. The header's ``kid`` names the recipient's key-agreement key.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException

from tributary.core.errors import SecurityError
from tributary.dwn import SYSTEM
from tributary.dwn.identity import DidKey, b64url, x25519_public_of

MEDIA_TYPE = "application/jose+json"
ALG = "ECDH-ES+A256KW"
ENC = "A256GCM"


def key_agreement_kid(did: str) -> str:
    return f"{did}#key-agreement-x25519"


def encrypt_for(recipient_did: str, plaintext: bytes) -> bytes:
    """The JWE (JSON bytes) of ``plaintext`` readable only with ``recipient_did``'s private key."""
    public = jwk.JWK(kty="OKP", crv="X25519", x=b64url(x25519_public_of(recipient_did)))
    token = jwe.JWE(plaintext, protected=json.dumps({"enc": ENC, "cty": "application/octet-stream"}))
    token.add_recipient(public, header=json.dumps({"alg": ALG, "kid": key_agreement_kid(recipient_did)}))
    return token.serialize(compact=False).encode()


def decrypt_with(identity: DidKey, document: bytes) -> bytes:
    """Plaintext of a JWE made by :func:`encrypt_for`; a wrong key or a changed byte is a SecurityError."""
    private = identity.x25519_private()
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = x25519_public_of(identity.did)
    key = jwk.JWK(kty="OKP", crv="X25519", x=b64url(public), d=b64url(raw))
    token = jwe.JWE()
    try:
        token.deserialize(document.decode(), key=key)
    except (JWException, ValueError, UnicodeDecodeError) as exc:
        raise SecurityError(f"cannot decrypt record data for {identity.did}: {type(exc).__name__}", system=SYSTEM,
                            reason="dwn:decrypt") from exc
    return token.payload
