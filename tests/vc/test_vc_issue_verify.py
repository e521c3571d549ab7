"""Issue and verify VC-JWTs with every DID method; tampered, expired, not-yet-valid and revoked credentials."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tributary.core.errors import DataError, SecurityError
from tributary.did import keys
from tributary.did.document import PortableDid
from tributary.did.encoding import b64url_decode, b64url_encode
from tributary.did.resolver import ResolverConfig, create_did
from tributary.vc import bitstring, status_list
from tributary.vc.vcjwt import create_credential, issue_vc, verify_vc
from tributary.vc.verdict import check_credential, credential_digest, record_verdict


def _issuer(method: str, crv: str, did_devnet: dict[str, Any], config: ResolverConfig) -> PortableDid:
    web = did_devnet["web"]
    return create_did(method, crv=crv, host=web.did_host, path=f"issuers/{uuid.uuid4().hex[:8]}",
                      document_root=web.document_root, config=config)


@pytest.mark.devnet
@pytest.mark.parametrize("method,crv", [("key", "Ed25519"), ("key", "secp256k1"), ("key", "P-256"),
                                        ("jwk", "Ed25519"), ("jwk", "secp256k1"), ("web", "Ed25519"),
                                        ("web", "secp256k1"), ("dht", "Ed25519"), ("dht", "secp256k1")])
def test_issued_credentials_verify_for_every_method(method: str, crv: str, did_devnet: dict[str, Any],
                                                    did_config: ResolverConfig) -> None:
    issuer = _issuer(method, crv, did_devnet, did_config)
    holder = create_did("jwk")
    credential = create_credential(issuer.uri, {"id": holder.uri, "name": "Ada"}, types=["KycCredential"],
                                   expires=datetime.now(UTC) + timedelta(days=1))
    # did:dht signs with its Ed25519 identity key by default; ask for the second key to use its curve.
    kid = issuer.document["verificationMethod"][-1]["id"]
    token = issue_vc(issuer, credential, kid=kid)
    verified = verify_vc(token, config=did_config)
    assert verified.vc == credential and verified.subject == holder.uri
    assert verified.header["alg"] == keys.DEFAULT_ALG[crv] and verified.header["kid"] == kid
    assert verified.checked == ["structure", "data_model", "validity_period", "issuer_key", "signature"]


def _resign_payload(token: str, change: dict[str, Any]) -> str:
    import json

    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["vc"]["credentialSubject"].update(change)
    return f"{header}.{b64url_encode(json.dumps(claims).encode())}.{signature}"


@pytest.mark.devnet
def test_a_tampered_payload_or_a_foreign_key_is_a_security_error(did_config: ResolverConfig) -> None:
    issuer = create_did("key", crv="secp256k1")
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:alice", "level": "basic"}))
    with pytest.raises(SecurityError) as failure:
        verify_vc(_resign_payload(token, {"level": "admin"}), config=did_config)
    assert failure.value.reason == "bad_signature"

    impostor = create_did("key", crv="secp256k1")
    header, payload, _ = token.split(".")
    bad = f"{header}.{payload}.{b64url_encode(keys.sign(impostor.private_keys[0], f'{header}.{payload}'.encode()))}"
    with pytest.raises(SecurityError, match="does not verify"):
        verify_vc(bad, config=did_config)


@pytest.mark.devnet
def test_a_kid_of_another_did_or_an_unknown_fragment_is_rejected(did_config: ResolverConfig) -> None:
    import json

    issuer, other = create_did("jwk"), create_did("jwk")
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:bob"}))
    _, payload, signature = token.split(".")
    for kid, reason in ((f"{other.uri}#0", "issuer_key_mismatch"), (f"{issuer.uri}#9", "unknown_key")):
        new_header = b64url_encode(json.dumps({"typ": "JWT", "alg": "EdDSA", "kid": kid}).encode())
        with pytest.raises(SecurityError) as failure:
            verify_vc(f"{new_header}.{payload}.{signature}", config=did_config)
        assert failure.value.reason == reason


@pytest.mark.unit
def test_expired_and_not_yet_valid_credentials_are_data_errors() -> None:
    issuer = create_did("key")
    now = datetime.now(UTC)
    expired = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:c"}, issued=now - timedelta(days=2),
                                                 expires=now - timedelta(days=1)))
    with pytest.raises(DataError) as failure:
        verify_vc(expired)
    assert failure.value.reason == "expired"
    future = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:c"}, issued=now + timedelta(days=1)))
    with pytest.raises(DataError) as failure:
        verify_vc(future)
    assert failure.value.reason == "not_yet_valid"
    assert verify_vc(expired, now=(now - timedelta(hours=36)).timestamp()).issuer == issuer.uri


@pytest.mark.postgres
@pytest.mark.devnet
def test_revoking_sets_the_bit_and_verification_then_fails(pg3: Any, did_devnet: dict[str, Any],
                                                           did_config: ResolverConfig) -> None:
    web = did_devnet["web"]
    issuer = _issuer("web", "Ed25519", did_devnet, did_config)
    list_id = f"list-{uuid.uuid4().hex[:8]}"
    url_path = f"status/{list_id}.jwt"
    status_list.create_list(pg3, list_id, issuer.uri, f"{web.url}/{url_path}")
    entries = [status_list.allocate(pg3, list_id) for _ in range(2)]
    assert [e["statusListIndex"] for e in entries] == ["0", "1"]
    status_list.publish(pg3, list_id, issuer, web.document_root, url_path)
    tokens = [issue_vc(issuer, create_credential(issuer.uri, {"id": f"did:example:{i}"}, status=e))
              for i, e in enumerate(entries)]
    for token in tokens:
        assert verify_vc(token, config=did_config).checked[-1] == "status:revocation"

    status_list.revoke(pg3, list_id, 1, issuer, web.document_root, url_path)
    # a resolver reuses the status list it fetched for cache_ttl (default 300 s, the Bitstring Status List
    # default ttl); a new one (the next task) fetches the revoked list
    assert verify_vc(tokens[1], config=did_config).checked[-1] == "status:revocation"
    did_config = dataclasses.replace(did_config)
    assert verify_vc(tokens[0], config=did_config).checked[-1] == "status:revocation"
    with pytest.raises(SecurityError) as failure:
        verify_vc(tokens[1], config=did_config)
    assert failure.value.reason == "revoked"
    verdict = check_credential(tokens[1], config=did_config)
    assert verdict["valid"] is False and verdict["reasons"] == ["security:revoked"]
    assert "signature" in verdict["checked"] and verdict["issuer"] == issuer.uri


@pytest.mark.unit
def test_bitstring_encoding_counts_bits_from_the_most_significant_bit() -> None:
    bits = bitstring.new_bits()
    bitstring.set_bit(bits, 0)
    bitstring.set_bit(bits, 9)
    assert bits[:2] == bytes([0x80, 0x40]) and len(bits) * 8 == bitstring.MIN_BITS
    decoded = bitstring.decode(bitstring.encode(bits))
    assert bitstring.get_bit(decoded, 0) and bitstring.get_bit(decoded, 9) and not bitstring.get_bit(decoded, 1)


@pytest.mark.postgres
def test_verdicts_report_expectations_and_are_upserted_by_run(pg3: Any) -> None:
    issuer, holder = create_did("jwk", crv="secp256k1"), create_did("key")
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": holder.uri}, types=["EmailCredential"]))
    good = check_credential(token, expected_subject=holder.uri, expected_issuer=issuer.uri,
                            expected_type="EmailCredential")
    assert good["valid"] and good["reasons"] == [] and good["types"] == ["VerifiableCredential", "EmailCredential"]
    assert good["checked"][-3:] == ["expected_issuer", "expected_subject", "expected_type"]
    wrong = check_credential(token, expected_subject="did:example:someone-else", expected_type="Passport")
    assert not wrong["valid"] and wrong["reasons"] == ["expectation:subject", "expectation:type"]

    run_id = f"manual__{uuid.uuid4().hex}"
    record_verdict(pg3, run_id, credential_digest(token), good)
    record_verdict(pg3, run_id, credential_digest(token), wrong)
    with pg3.cursor() as cur:
        cur.execute("SELECT valid, reasons, subject FROM vc_verifications WHERE run_id = %s", (run_id,))
        rows = cur.fetchall()
    assert rows == [(False, ["expectation:subject", "expectation:type"], holder.uri)]


@pytest.mark.postgres
@pytest.mark.devnet
def test_credentials_signed_before_a_did_web_rotation_verify_until_the_old_key_is_retired(
        pg3: Any, did_devnet: dict[str, Any], did_config: ResolverConfig) -> None:
    from tributary.did.keystore import KeyStore
    from tributary.did.rotation import retire_expired, rotate_web

    web = did_devnet["web"]
    store = KeyStore(pg3, "kek for the rotation test 0123")
    issuer = _issuer("web", "Ed25519", did_devnet, did_config)
    store.save(issuer)
    before = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:old"}))
    rotated = rotate_web(store, issuer.uri, web.document_root, grace=timedelta(days=1))
    after = issue_vc(rotated, create_credential(issuer.uri, {"id": "did:example:new"}))
    assert verify_vc(before, config=did_config).header["kid"] != verify_vc(after, config=did_config).header["kid"]

    with pg3.cursor() as cur:
        cur.execute("UPDATE did_keys SET retire_after = now() - interval '1 second' WHERE did = %s"
                    " AND status = 'retiring'", (issuer.uri,))
    pg3.commit()
    retire_expired(store, issuer.uri, web.document_root)
    did_config.fetcher.clear_cache()  # the document fetched above is reused for cache_ttl otherwise
    with pytest.raises(SecurityError) as failure:
        verify_vc(before, config=did_config)
    assert failure.value.reason == "unknown_key"
    assert verify_vc(after, config=did_config).subject == "did:example:new"
