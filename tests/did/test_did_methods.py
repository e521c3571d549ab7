"""Create -> resolve round trips for every method, against the local Pkarr relay and HTTPS server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import requests

from tributary.core.errors import PermanentError
from tributary.did import diddht, keys
from tributary.did.document import find_method
from tributary.did.resolver import ResolverConfig, create_did, publish_dht, resolve, resolve_document


@pytest.mark.unit
@pytest.mark.parametrize("method", ["key", "jwk"])
@pytest.mark.parametrize("crv", ["Ed25519", "secp256k1", "P-256"])
def test_key_and_jwk_dids_resolve_to_their_own_public_key(method: str, crv: str) -> None:
    portable = create_did(method, crv=crv)
    document = resolve_document(portable.uri)
    kid, private = portable.signing_key()
    method_entry = find_method(document, kid)
    assert method_entry is not None and method_entry["publicKeyJwk"]["crv"] == crv
    assert keys.verify(method_entry["publicKeyJwk"], b"msg", keys.sign(private, b"msg"))
    assert all("d" not in m["publicKeyJwk"] for m in document["verificationMethod"])
    assert private["d"] not in str(document)


@pytest.mark.devnet
@pytest.mark.parametrize("crv", ["Ed25519", "secp256k1"])
def test_did_web_round_trip_over_https_with_a_trusted_private_ca(crv: str, did_devnet: dict[str, Any],
                                                                  did_config: ResolverConfig) -> None:
    web = did_devnet["web"]
    for path in (None, f"users/{crv.lower()}"):
        portable = create_did("web", crv=crv, host=web.did_host, path=path, document_root=web.document_root)
        assert "%3A" in portable.uri
        result = resolve(portable.uri, did_config)
        assert result["didResolutionMetadata"] == {}
        assert result["didDocument"] == portable.document


@pytest.mark.devnet
def test_did_web_refuses_a_server_whose_ca_is_not_trusted(did_devnet: dict[str, Any]) -> None:
    web = did_devnet["web"]
    portable = create_did("web", host=web.did_host, document_root=web.document_root)
    with pytest.raises(PermanentError) as failure:
        resolve(portable.uri, ResolverConfig(timeout=5, allow_networks=("127.0.0.1/32",)))
    assert failure.value.reason == "tls"


@pytest.mark.devnet
def test_did_web_unknown_path_is_not_found(did_devnet: dict[str, Any], did_config: ResolverConfig) -> None:
    did = f"did:web:{did_devnet['web'].did_host.replace(':', '%3A')}:nobody"
    assert resolve(did, did_config)["didResolutionMetadata"] == {"error": "notFound"}


@pytest.mark.devnet
@pytest.mark.parametrize("crv", ["Ed25519", "secp256k1", "P-256"])
def test_did_dht_round_trip_through_the_pkarr_relay(crv: str, did_config: ResolverConfig) -> None:
    services = [{"id": "dwn", "type": "DecentralizedWebNode", "serviceEndpoint": ["https://dwn.example/1"]}]
    portable = create_did("dht", crv=crv, config=did_config, services=services)
    result = resolve(portable.uri, did_config)
    assert result["didResolutionMetadata"] == {}
    assert result["didDocumentMetadata"]["versionId"] == portable.metadata["versionId"]
    assert result["didDocument"] == {"@context": ["https://www.w3.org/ns/did/v1"], **portable.document}
    kid, private = portable.signing_key()
    assert keys.verify(find_method(result["didDocument"], kid)["publicKeyJwk"], b"m", keys.sign(private, b"m"))


@pytest.mark.devnet
def test_did_dht_relay_and_resolver_reject_forged_or_stale_packets(did_config: ResolverConfig,
                                                                   did_devnet: dict[str, Any]) -> None:
    portable = create_did("dht", config=did_config)
    url = f"{did_config.pkarr_url}/{portable.uri.split(':')[2]}"
    body = requests.get(url, timeout=5).content
    # Another key signing the same identifier: the relay refuses it.
    forged = diddht.sign_payload(keys.generate("Ed25519"), body[72:], int.from_bytes(body[64:72], "big") + 1)
    assert requests.put(url, data=forged, timeout=5).status_code == 400
    # An older seq: refused with 409 (the resolver's client says so as a permanent error).
    with pytest.raises(PermanentError, match="seq"):
        publish_dht(portable, did_config, seq=1)
    # A relay that serves a tampered packet: resolution reports invalidSignature, not a document.
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    did_devnet["relay"].records[portable.uri.split(":")[2]] = tampered
    assert resolve(portable.uri, did_config)["didResolutionMetadata"] == {"error": "invalidSignature"}


@pytest.mark.devnet
def test_did_dht_unreachable_relay_is_transient(did_config: ResolverConfig) -> None:
    from tributary.core.errors import TransientError

    portable = create_did("dht", publish=False)
    with pytest.raises(TransientError):
        resolve(portable.uri, replace(did_config, pkarr_url="http://127.0.0.1:9", timeout=1))
