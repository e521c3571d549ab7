"""Private keys encrypted at rest in did_keys; key rotation of did:web and did:dht."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from tributary.core.errors import SecurityError
from tributary.did.document import find_method
from tributary.did.encoding import b64url_decode
from tributary.did.keystore import KeyStore
from tributary.did.resolver import ResolverConfig, create_did, resolve, resolve_document
from tributary.did.rotation import retire_expired, rotate_dht, rotate_web

KEK = "correct horse battery staple 42"


@pytest.mark.postgres
def test_private_keys_are_encrypted_at_rest_and_open_only_with_the_right_kek(pg3: Any) -> None:
    portable = create_did("jwk", crv="secp256k1")
    KeyStore(pg3, KEK).save(portable)
    secret = portable.private_keys[0]["d"]
    with pg3.cursor() as cur:
        cur.execute("SELECT public_jwk::text, private_jwk_enc FROM did_keys WHERE did = %s", (portable.uri,))
        public_text, blob = cur.fetchone()
        cur.execute("SELECT document::text FROM did_registry WHERE did = %s", (portable.uri,))
        document_text = cur.fetchone()[0]
    raw_secret = b64url_decode(secret)
    for stored in (bytes(blob), public_text.encode(), document_text.encode()):
        assert secret.encode() not in stored and raw_secret not in stored
    assert '"d"' not in public_text
    assert KeyStore(pg3, KEK).load(portable.uri).private_keys == portable.private_keys
    with pytest.raises(SecurityError) as failure:
        KeyStore(pg3, "a different key-encryption key").load(portable.uri)
    assert failure.value.reason == "kek_mismatch"


@pytest.mark.postgres
def test_a_ciphertext_moved_to_another_row_does_not_open(pg3: Any) -> None:
    store = KeyStore(pg3, KEK)
    first, second = create_did("key"), create_did("key")
    store.save(first)
    store.save(second)
    with pg3.cursor() as cur:
        cur.execute("UPDATE did_keys SET private_jwk_enc = (SELECT private_jwk_enc FROM did_keys WHERE did = %s)"
                    " WHERE did = %s", (first.uri, second.uri))
    pg3.commit()
    with pytest.raises(SecurityError):
        store.load(second.uri)


@pytest.mark.postgres
@pytest.mark.devnet
def test_did_web_rotation_keeps_the_old_key_for_the_grace_period_then_drops_it(
        pg3: Any, did_devnet: dict[str, Any], did_config: ResolverConfig) -> None:
    web = did_devnet["web"]
    # Each resolution must see the published document, not the resolver's TTL cache of the previous one.
    did_config = dataclasses.replace(did_config, cache_ttl=0)
    store = KeyStore(pg3, KEK)
    portable = create_did("web", host=web.did_host, path="rotating", document_root=web.document_root)
    store.save(portable)
    old_kid, _ = portable.signing_key()

    rotated = rotate_web(store, portable.uri, web.document_root, grace=timedelta(days=7))
    new_kid, _ = rotated.signing_key()
    assert new_kid != old_kid
    document = resolve_document(portable.uri, did_config)
    assert document["verificationMethod"][0]["id"] == new_kid  # the new key signs from now on
    assert find_method(document, old_kid) is not None and old_kid in document["assertionMethod"]

    with pg3.cursor() as cur:  # the grace period ends
        cur.execute("UPDATE did_keys SET retire_after = now() - interval '1 second' WHERE status = 'retiring'"
                    " AND did = %s", (portable.uri,))
    pg3.commit()
    retire_expired(store, portable.uri, web.document_root)
    document = resolve_document(portable.uri, did_config)
    assert find_method(document, old_kid) is None and [m["id"] for m in document["verificationMethod"]] == [new_kid]

    immediate = rotate_web(store, portable.uri, web.document_root, grace=None)
    document = resolve_document(portable.uri, did_config)
    assert [m["id"] for m in document["verificationMethod"]] == [immediate.signing_key()[0]]


@pytest.mark.postgres
@pytest.mark.devnet
def test_did_dht_rotation_publishes_a_new_key_with_a_higher_seq(pg3: Any, did_config: ResolverConfig) -> None:
    store = KeyStore(pg3, KEK)
    portable = create_did("dht", crv="secp256k1", config=did_config)
    store.save(portable, version=int(portable.metadata["versionId"]))
    before = resolve(portable.uri, did_config)
    old_keys = {m["id"] for m in before["didDocument"]["verificationMethod"]}

    rotated = rotate_dht(store, portable.uri, did_config)
    after = resolve(portable.uri, did_config)
    assert int(after["didDocumentMetadata"]["versionId"]) > int(before["didDocumentMetadata"]["versionId"])
    new_keys = {m["id"] for m in after["didDocument"]["verificationMethod"]}
    assert f"{portable.uri}#0" in new_keys and len(new_keys - old_keys) == 1 and len(old_keys - new_keys) == 1
    assert store.version(portable.uri) == int(after["didDocumentMetadata"]["versionId"])
    assert json.loads(json.dumps(store.load(portable.uri).document)) == rotated.document
