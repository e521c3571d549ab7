"""Record data encrypted for a recipient DID (JWE ECDH-ES+A256KW / X25519 / A256GCM) through a real DWN."""

from __future__ import annotations

import json

import pytest

from tributary.core.errors import SecurityError
from tributary.dwn import messages as m
from tributary.dwn.encryption import MEDIA_TYPE, decrypt_with, encrypt_for
from tributary.dwn.hook import DwnHook
from tributary.dwn.identity import DidKey

PROTOCOL = "https://tributary.example/protocols/private-notes"


@pytest.mark.devnet
def test_jwe_round_trip_through_the_dwn_and_unreadable_without_the_key(tenant) -> None:
    hook = DwnHook(tenant.source_conn)
    hook.configure_protocol(m.flat_protocol(PROTOCOL))
    recipient = DidKey.generate()
    secret = b'{"diagnosis": "confidential"}'
    document = encrypt_for(recipient.did, secret)
    header = json.loads(document)
    assert header["header"]["alg"] == "ECDH-ES+A256KW" and header["header"]["epk"]["crv"] == "X25519"
    assert b"confidential" not in document

    message = hook.write_record(document, data_format=MEDIA_TYPE, protocol=PROTOCOL, protocol_path="record",
                                recipient=recipient.did)
    latest, stored = hook.read_record(message["recordId"])
    assert latest["descriptor"]["recipient"] == recipient.did
    assert stored == document and b"confidential" not in stored
    assert decrypt_with(recipient, stored) == secret
    with pytest.raises(SecurityError):
        decrypt_with(tenant.key, stored)  # the tenant stores it but cannot read it
    with pytest.raises(SecurityError):
        decrypt_with(DidKey.generate(), stored)


@pytest.mark.unit
def test_a_changed_ciphertext_does_not_decrypt() -> None:
    recipient = DidKey.generate()
    document = json.loads(encrypt_for(recipient.did, b"hello world"))
    tag = document["tag"]
    document["tag"] = ("A" if tag[0] != "A" else "B") + tag[1:]
    with pytest.raises(SecurityError):
        decrypt_with(recipient, json.dumps(document).encode())
