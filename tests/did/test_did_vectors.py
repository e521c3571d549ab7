"""The shared did:key, did:jwk, did:web, did:dht, crypto and portable-DID vectors: one test per file."""

from __future__ import annotations

import json
from typing import Any

import base58
import pytest

from tests._shared import SHARED
from tributary.did import diddht, didkey, keys
from tributary.did.document import PortableDid
from tributary.did.encoding import b64url_decode
from tributary.did.resolver import ResolverConfig, resolve

SPECS = SHARED / "specs"
WEB5 = SPECS / "web5" / "test-vectors"
DID_KEY = SPECS / "did" / "did-key"
UNSUPPORTED_DID_KEY_PREFIXES = ("z82L", "z2J9")  # P-384 and P-521: not supported (documented)


def web5_vectors(name: str) -> list[dict[str, Any]]:
    return json.loads((WEB5 / name).read_text())["vectors"]


def did_key_vectors(name: str) -> list[tuple[str, dict[str, Any]]]:
    data = json.loads((DID_KEY / name).read_text())
    if "didDocument" in data and len(data) == 1:  # x25519.json: {"didDocument": {did: document}}
        return [(did, {"didDocument": doc}) for did, doc in data["didDocument"].items()]
    return list(data.items())


def _key_bytes(method: dict[str, Any]) -> bytes:
    if "publicKeyBase58" in method:
        return base58.b58decode(method["publicKeyBase58"])
    return keys.public_bytes(method["publicKeyJwk"]) if method["publicKeyJwk"]["kty"] == "EC" \
        else b64url_decode(method["publicKeyJwk"]["x"])


def _vid(vector: Any) -> str:
    return vector[0][:40] if isinstance(vector, tuple) else vector["description"][:60]


# ----------------------------------------------------------------------------- did:key
@pytest.mark.unit
@pytest.mark.parametrize("vector", [v for f in ("ed25519-x25519.json", "secp256k1.json", "nist-curves.json",
                                                "x25519.json") for v in did_key_vectors(f)], ids=_vid)
def test_did_key_vectors(vector: tuple[str, dict[str, Any]]) -> None:
    did, data = vector
    result = resolve(did)
    if did.split(":")[2].startswith(UNSUPPORTED_DID_KEY_PREFIXES):
        assert result["didResolutionMetadata"]["error"] == "invalidDid"
        return
    document = result["didDocument"]
    expected = data["didDocument"]
    assert document["id"] == expected["id"] == did
    # The first verification method carries the same key under the same id.
    mine, theirs = document["verificationMethod"][0], expected["verificationMethod"][0]
    assert mine["id"] == theirs["id"]
    mine_bytes = keys.public_bytes(mine["publicKeyJwk"]) if mine["publicKeyJwk"]["kty"] == "EC" \
        else b64url_decode(mine["publicKeyJwk"]["x"])
    theirs_bytes = _key_bytes(theirs)
    if mine["publicKeyJwk"]["kty"] == "EC" and len(theirs_bytes) == 65:
        theirs_bytes = keys.public_bytes(keys.public_jwk_from_bytes(mine["publicKeyJwk"]["crv"], theirs_bytes))
    assert mine_bytes == theirs_bytes
    for purpose in ("assertionMethod", "authentication", "keyAgreement"):
        if purpose in expected and purpose in document:
            assert expected[purpose][0] == document[purpose][0]
    # Creating from the vector's private key gives the same DID.
    secret = None
    if "seed" in data and data.get("verificationKeyPair", {}).get("type", "").startswith("Ed25519"):
        secret, crv = bytes.fromhex(data["seed"]), "Ed25519"
    elif "privateKeyBase58" in data.get("verificationKeyPair", {}):
        secret, crv = base58.b58decode(data["verificationKeyPair"]["privateKeyBase58"]), "secp256k1"
    elif "privateKeyJwk" in data.get("verificationMethod", {}):
        jwk = data["verificationMethod"]["privateKeyJwk"]
        secret, crv = b64url_decode(jwk["d"]), jwk["crv"]
    if secret is not None:
        assert didkey.create(crv, keys.private_jwk_from_bytes(crv, secret)).uri == did


# ----------------------------------------------------------------------------- did:jwk, did:web, did:dht
@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("did_jwk/resolve.json"), ids=_vid)
def test_did_jwk_resolve_vectors(vector: dict[str, Any]) -> None:
    assert resolve(vector["input"], methods=("jwk",)) == vector["output"]


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("did_web/resolve.json"), ids=_vid)
def test_did_web_resolve_vectors(vector: dict[str, Any]) -> None:
    served = vector["input"].get("mockServer", {})
    result = resolve(vector["input"]["didUri"], ResolverConfig(fetch=served.get), methods=("web",))
    expected = vector["output"]
    assert result["didDocument"] == expected["didDocument"]
    assert result["didResolutionMetadata"] == expected["didResolutionMetadata"]
    assert result["didDocumentMetadata"] == expected["didDocumentMetadata"]


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("did_dht/create.json"), ids=_vid)
def test_did_dht_create_vectors(vector: dict[str, Any]) -> None:
    given = vector["input"]
    document = diddht.build_document(
        given["identityPublicJwk"], additional=given.get("additionalVerificationMethods", []),
        services=given.get("services", []), controller=given.get("controller"),
        also_known_as=given.get("alsoKnownAs"))
    assert document == vector["output"]
    # The DNS packet carries the whole document.
    packet = diddht.to_packet(document)
    assert len(packet) <= diddht.MAX_PACKET
    assert diddht.from_packet(document["id"], packet) == vector["output"]


@pytest.mark.devnet
@pytest.mark.parametrize("vector", web5_vectors("did_dht/resolve.json"), ids=_vid)
def test_did_dht_resolve_vectors(vector: dict[str, Any], did_config: ResolverConfig) -> None:
    # notFound comes from the (empty) local relay; the other errors are raised before any request.
    result = resolve(vector["input"]["didUri"], did_config, methods=("dht",))
    assert result["didDocument"] is None
    assert result["didResolutionMetadata"] == vector["output"]["didResolutionMetadata"]


# ----------------------------------------------------------------------------- crypto
def _crypto(vector: dict[str, Any], operation: str) -> None:
    given = vector["input"]
    call = (lambda: keys.sign(given["key"], bytes.fromhex(given["data"])).hex()) if operation == "sign" else \
        (lambda: keys.verify(given["key"], bytes.fromhex(given["data"]), bytes.fromhex(given["signature"])))
    if vector.get("errors"):
        with pytest.raises(ValueError):
            call()
    else:
        assert call() == vector["output"]


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("crypto_ed25519/sign.json"), ids=_vid)
def test_crypto_ed25519_sign_vectors(vector: dict[str, Any]) -> None:
    _crypto(vector, "sign")


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("crypto_ed25519/verify.json"), ids=_vid)
def test_crypto_ed25519_verify_vectors(vector: dict[str, Any]) -> None:
    _crypto(vector, "verify")


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("crypto_es256k/sign.json"), ids=_vid)
def test_crypto_es256k_sign_vectors(vector: dict[str, Any]) -> None:
    _crypto(vector, "sign")


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("crypto_es256k/verify.json"), ids=_vid)
def test_crypto_es256k_verify_vectors(vector: dict[str, Any]) -> None:
    _crypto(vector, "verify")


@pytest.mark.unit
@pytest.mark.parametrize("vector", web5_vectors("portable_did/parse.json"), ids=_vid)
def test_portable_did_parse_vectors(vector: dict[str, Any]) -> None:
    if vector.get("errors"):
        with pytest.raises(ValueError):
            PortableDid.from_dict(vector["input"])
    else:
        parsed = PortableDid.from_dict(vector["input"])
        assert parsed.to_dict() == vector["input"]
        assert parsed.signing_key()[1]["d"] == vector["input"]["privateKeys"][0]["d"]
