"""Message construction against the real server: CIDs, data CIDs (one and several UnixFS chunks),
records write/query/read/delete, ProtocolsConfigure, and signature verification."""

from __future__ import annotations

import copy
import os

import pytest

from tributary.core.errors import ErrorClass, SecurityError, classify
from tributary.dwn import messages as m
from tributary.dwn.cid import CHUNK_SIZE, compute_cid, compute_data_cid
from tributary.dwn.hook import DwnHook, DwnReplyError
from tributary.dwn.identity import DidKey, did_from_public_key, public_key_of, x25519_public_of

PROTOCOL = "https://tributary.example/protocols/notes"


@pytest.mark.unit
def test_did_key_round_trips_and_derives_the_key_agreement_key() -> None:
    key = DidKey.generate()
    assert key.did.startswith("did:key:z6Mk")
    assert did_from_public_key(public_key_of(key.did)) == key.did
    assert DidKey.from_secret(key.seed_hex()).did == key.did
    import json
    assert DidKey.from_secret(json.dumps(key.private_jwk())).did == key.did
    from cryptography.hazmat.primitives import serialization
    derived = key.x25519_private().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert derived == x25519_public_of(key.did)
    assert "seed" not in repr(key) and key.seed_hex() not in repr(key)


@pytest.mark.unit
def test_cids_match_known_values() -> None:
    # the CIDv1 of an empty raw block: a fixed, widely published value
    assert compute_data_cid(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert compute_cid({"a": 1}).startswith("bafyrei")
    assert compute_data_cid(b"x" * 10).startswith("bafkrei")          # one chunk: a raw leaf
    assert compute_data_cid(b"x" * (CHUNK_SIZE + 1)).startswith("bafybei")  # more: a dag-pb UnixFS root


@pytest.mark.devnet
@pytest.mark.parametrize("size", [16, CHUNK_SIZE, CHUNK_SIZE + 1, 4 * CHUNK_SIZE + 123])
def test_server_accepts_our_record_ids_and_data_cids(tenant, size: int) -> None:
    hook = DwnHook(tenant.source_conn)
    data = os.urandom(size)
    message = hook.write_record(data, data_format="application/octet-stream")
    assert message["recordId"] == m.entry_id(tenant.did, message["descriptor"])
    latest, stored = hook.read_record(message["recordId"])
    assert stored == data and latest == message
    assert m.verify_message(latest, stored) == tenant.did


@pytest.mark.devnet
def test_write_query_paginated_read_update_delete(tenant) -> None:
    hook = DwnHook(tenant.source_conn)
    hook.configure_protocol(m.flat_protocol(PROTOCOL))
    written = [hook.write_record(f'{{"n": {i}}}'.encode(), protocol=PROTOCOL, protocol_path="record",
                                 tags={"n": i}) for i in range(7)]
    pages, cursor, seen = 0, None, []
    while True:
        entries, cursor = hook.query_records({"protocol": PROTOCOL}, limit=3, cursor=cursor)
        pages += 1
        seen += [e["recordId"] for e in entries]
        assert all("encodedData" in e for e in entries)
        if not cursor:
            break
    assert pages == 3 and sorted(seen) == sorted(w["recordId"] for w in written)
    only = hook.query_records({"protocol": PROTOCOL, "tags": {"n": 4}})[0]
    assert [e["recordId"] for e in only] == [written[4]["recordId"]]

    updated = hook.write_record(b'{"n": 40}', previous=written[4], tags={"n": 40})
    assert updated["recordId"] == written[4]["recordId"] and not m.is_initial_write(updated)
    assert hook.read_record(written[4]["recordId"]) == (updated, b'{"n": 40}')
    hook.delete_record(written[4]["recordId"])
    assert hook.read_record(written[4]["recordId"]) is None
    assert len(list(hook.iter_records({"protocol": PROTOCOL}, page_size=2))) == 6


@pytest.mark.unit
def test_newest_wins_order_is_timestamp_then_cid() -> None:
    key = DidKey.generate()
    a = m.records_write(key, b"a", message_timestamp="2026-01-01T00:00:00.000001Z")
    b = m.records_write(key, b"b", message_timestamp="2026-01-01T00:00:00.000002Z")
    assert m.compare(b, a) == 1 and m.newest([a, b]) is b
    c = m.records_write(key, b"c", message_timestamp="2026-01-01T00:00:00.000001Z")
    assert m.compare(a, c) == (1 if m.message_cid(a) > m.message_cid(c) else -1)


def _tampered_descriptor(message: dict) -> dict:
    bad = copy.deepcopy(message)
    bad["descriptor"]["dataFormat"] = "text/plain"
    return bad


@pytest.mark.devnet
def test_tampered_messages_are_rejected_by_our_verifier(tenant) -> None:
    message = m.records_write(tenant.key, b'{"a": 1}')
    assert m.verify_message(message, b'{"a": 1}') == tenant.did
    with pytest.raises(SecurityError, match="descriptorCid"):
        m.verify_message(_tampered_descriptor(message))
    with pytest.raises(SecurityError, match="dataCid"):
        m.verify_message(message, b'{"a": 2}')
    forged = copy.deepcopy(message)
    other = DidKey.generate()
    forged["authorization"] = m.records_write(other, b'{"a": 1}')["authorization"]
    forged["authorization"]["signature"]["signatures"][0]["protected"] = \
        message["authorization"]["signature"]["signatures"][0]["protected"]
    with pytest.raises(SecurityError):
        m.verify_message(forged)


@pytest.mark.devnet
def test_tampered_messages_are_rejected_by_the_server(tenant) -> None:
    hook = DwnHook(tenant.source_conn)
    message = m.records_write(tenant.key, b'{"a": 1}')
    with pytest.raises(DwnReplyError) as changed:
        hook.write(_tampered_descriptor(message), b'{"a": 1}')
    assert classify(changed.value).error_class is ErrorClass.SECURITY
    with pytest.raises(DwnReplyError) as other_data:
        hook.write(message, b'{"a": 2}')
    assert classify(other_data.value).error_class is ErrorClass.SECURITY
    assert hook.write(message, b'{"a": 1}').status == 202


@pytest.mark.devnet
def test_a_stranger_cannot_write_to_the_tenant(tenant, dwn_peers) -> None:
    hook = DwnHook(tenant.source_conn)
    stranger = DidKey.generate()
    message = m.records_write(stranger, b"{}")
    with pytest.raises(DwnReplyError) as denied:
        hook.write(message, b"{}")
    assert denied.value.status == 401 and classify(denied.value).error_class is ErrorClass.SECURITY


@pytest.mark.unit
def test_unreachable_peer_is_transient(monkeypatch) -> None:
    import json as _json

    key = DidKey.generate()
    from devnets.dwn.process import free_port
    monkeypatch.setenv("AIRFLOW_CONN_DWN_DOWN", _json.dumps({"conn_type": "tributary_dwn",
                                                            "host": f"http://127.0.0.1:{free_port()}",
                                                            "password": key.seed_hex()}))
    hook = DwnHook("dwn_down")
    with pytest.raises(Exception) as failure:
        hook.write(m.records_write(key, b"{}"), b"{}")
    assert classify(failure.value).error_class is ErrorClass.TRANSIENT
    ok, text = hook.test_connection()
    assert not ok and "transient" in text and key.seed_hex() not in text
