"""Who may sign a credential in did_issuance (issue 11 §2): only registered issuers, never a request's subject,
only with a key listed under assertionMethod; a refused issuer is a SecurityError with nothing written. And two
concurrent runs of one request with ``with_status`` get one status-list index.

The steps run on :class:`Issuance` directly, with the warehouse and a temporary web root: the subjects are
did:key (nothing to publish), the deployment issuer a did:web written to the web root, and no DWN is reached (a
DWN that fails the test when touched stands in for it)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tributary.core.errors import PermanentError, SecurityError
from tributary.did.document import PortableDid, signing_document, verification_method
from tributary.did.hook import DidHook
from tributary.did.keys import generate
from tributary.did.keystore import KeyStore
from tributary.did.resolver import ResolverConfig, create_did
from tributary.vc import jws
from tributary.vc.issuance import Issuance, IssuanceRequest, WebRoot

KEK = "issuer authorization test kek 0123"


class _NoDwn:
    """Stands in for the DWN hook: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the DWN was reached ({name})")


def _request(request_id: str | None = None, **params: Any) -> IssuanceRequest:
    params.setdefault("did_conn_id", f"did_authz_{secrets.token_hex(4)}")
    return IssuanceRequest(request_id=request_id or f"authz-{secrets.token_hex(4)}", method="key",
                           claims={"level": "basic"}, **params)


def _issuance(conn: Any, request: IssuanceRequest, web_root: Path, allowed: tuple[str, ...] = ()) -> Issuance:
    return Issuance(request, conn, KeyStore(conn, KEK), ResolverConfig(), WebRoot(web_root, "https://issuer.test"),
                    _NoDwn(), allowed_issuers=allowed)


def _through_publish(issuance: Issuance) -> None:
    issuance.create_subject()
    issuance.ensure_issuer()
    issuance.publish_subject()


def _footprint(conn: Any, web_root: Path) -> dict[str, Any]:
    """Everything an issuance could write: warehouse rows, status list indexes, files in the web root."""
    conn.rollback()
    counts = {}
    with conn.cursor() as cur:
        for table in ("did_registry", "did_keys", "did_issuers", "did_issuance_requests", "vc_status_lists"):
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
        cur.execute("SELECT coalesce(sum(next_index), 0) FROM vc_status_lists")
        counts["status_indexes"] = cur.fetchone()[0]
    counts["files"] = sorted(str(p) for p in web_root.rglob("*"))
    return counts


def _refused(issuance: Issuance, reason: str, web_root: Path) -> None:
    """Every step refuses before writing anything."""
    before = _footprint(issuance.conn, web_root)
    with pytest.raises(SecurityError) as failure:
        issuance.create_subject()
    assert failure.value.reason == f"issuer_refused:{reason}"
    assert _footprint(issuance.conn, web_root) == before
    assert issuance.row() is None


def _save_registered(conn: Any, portable: PortableDid) -> None:
    store = KeyStore(conn, KEK)
    store.save(portable)
    store.register_issuer(portable.uri, "test issuer")


@pytest.mark.postgres
def test_another_requests_subject_may_not_issue(pg3: Any, tmp_path: Path) -> None:
    first = _issuance(pg3, _request(), tmp_path)
    subject = first.create_subject()["did"]

    # the hole: issuer = an earlier request's subject, whose keys the store holds
    _refused(_issuance(pg3, _request(issuer=subject, with_status=True), tmp_path), "subject", tmp_path)

    store = KeyStore(pg3, KEK)
    assert store.role(subject) == "subject" and {r["role"] for r in store.key_rows(subject)} == {"subject"}
    with pytest.raises(SecurityError):  # a subject can't be registered ...
        store.register_issuer(subject, "let me sign")
    pg3.rollback()
    assert not store.is_registered_issuer(subject)
    # ... nor count when registered behind the key store's back, or allow-listed on the Connection
    with pg3.cursor() as cur:
        cur.execute("INSERT INTO did_issuers (did, note) VALUES (%s, 'by hand')", (subject,))
    pg3.commit()
    _refused(_issuance(pg3, _request(issuer=subject), tmp_path, allowed=(subject,)), "subject", tmp_path)


@pytest.mark.postgres
def test_an_unregistered_did_with_keys_in_the_store_may_not_issue(pg3: Any, tmp_path: Path) -> None:
    outsider = create_did("jwk", crv="secp256k1")
    KeyStore(pg3, KEK).save(outsider)
    _refused(_issuance(pg3, _request(issuer=outsider.uri), tmp_path), "unregistered", tmp_path)
    unknown = create_did("jwk")  # registered nowhere and not in the store either
    _refused(_issuance(pg3, _request(issuer=unknown.uri), tmp_path), "unregistered", tmp_path)

    # registered in did_issuers: it signs, with its assertion key
    KeyStore(pg3, KEK).register_issuer(outsider.uri, "partner issuer")
    issuance = _issuance(pg3, _request(issuer=outsider.uri), tmp_path)
    _through_publish(issuance)
    token = issuance.issue_credential()
    assert jws.parse(token).payload["iss"] == outsider.uri
    assert jws.parse(token).header["kid"] == outsider.signing_key()[0]


@pytest.mark.postgres
def test_the_connection_allow_list_authorizes_an_issuer(pg3: Any, tmp_path: Path) -> None:
    listed = create_did("jwk")
    KeyStore(pg3, KEK).save(listed)
    request = _request(issuer=listed.uri)
    _refused(_issuance(pg3, request, tmp_path), "unregistered", tmp_path)
    issuance = _issuance(pg3, request, tmp_path, allowed=(listed.uri,))
    _through_publish(issuance)
    assert jws.parse(issuance.issue_credential()).payload["iss"] == listed.uri
    # taken off the list before signing: the next attempt is refused
    with pytest.raises(SecurityError):
        _issuance(pg3, request, tmp_path).issue_credential()


@pytest.mark.postgres
def test_a_key_not_under_assertion_method_may_not_sign(pg3: Any, tmp_path: Path) -> None:
    # a registered DID whose only held key serves authentication, not assertionMethod
    did = f"did:web:issuer.test:authz:{secrets.token_hex(4)}"
    asserting, authenticating = generate("Ed25519"), generate("Ed25519")
    methods = [verification_method(did, "0", asserting), verification_method(did, "1", authenticating)]
    document = signing_document(did, methods, purposes=("authentication",))
    document["assertionMethod"] = [f"{did}#0"]
    _save_registered(pg3, PortableDid(did, document, [authenticating]))
    _refused(_issuance(pg3, _request(issuer=did), tmp_path), "assertion_method", tmp_path)

    # no assertionMethod at all: no verification method may sign (none did, before, by falling back)
    bare = create_did("jwk")
    bare.document.pop("assertionMethod")
    _save_registered(pg3, bare)
    _refused(_issuance(pg3, _request(issuer=bare.uri), tmp_path), "assertion_method", tmp_path)

    # the check is made again when signing: a document changed after the issuer was chosen
    issuer = create_did("jwk")
    _save_registered(pg3, issuer)
    issuance = _issuance(pg3, _request(issuer=issuer.uri, with_status=True), tmp_path)
    _through_publish(issuance)
    with pg3.cursor() as cur:
        cur.execute("UPDATE did_registry SET document = document - 'assertionMethod' WHERE did = %s", (issuer.uri,))
    pg3.commit()
    before = _footprint(pg3, tmp_path)
    with pytest.raises(SecurityError) as failure:
        issuance.issue_credential()
    assert failure.value.reason == "issuer_refused:assertion_method"
    assert _footprint(pg3, tmp_path) == before  # no status list, no index
    assert issuance.row()["status"] == "published"


@pytest.mark.postgres
def test_the_deployment_issuer_is_registered_when_it_is_made(pg3: Any, tmp_path: Path) -> None:
    issuance = _issuance(pg3, _request(), tmp_path)
    subject = issuance.create_subject()["did"]
    issuer = issuance.ensure_issuer()
    store = KeyStore(pg3, KEK)
    with pg3.cursor() as cur:
        cur.execute("SELECT conn_id, note, registered_at FROM did_issuers WHERE did = %s", (issuer,))
        conn_id, note, registered_at = cur.fetchone()
    assert conn_id == issuance.request.did_conn_id and conn_id in note and registered_at is not None
    assert store.role(issuer) == "issuer" and store.role(subject) == "subject"
    # a later request of the same Connection finds it again
    assert _issuance(pg3, _request(did_conn_id=conn_id), tmp_path).deployment_issuer() == issuer
    # a key added by a rotation keeps the DID's role
    store.add_key(subject, generate("Ed25519"))
    assert {r["role"] for r in store.key_rows(subject)} == {"subject"}


@pytest.mark.postgres
def test_two_concurrent_runs_of_one_request_get_one_status_index(warehouse: Any, pg3: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from tributary.vc import status_list

    request = _request(with_status=True)
    _through_publish(_issuance(pg3, request, tmp_path))

    # Hold the first run inside allocate() until the second has either reached allocate() too (the race) or is
    # seen waiting for a lock (the runs are serialized); 30 s is only a safety net.
    original, arrived, guard = status_list.allocate, [], threading.Lock()
    monitor = psycopg.connect(warehouse.dsn(), autocommit=True)

    def someone_waits() -> bool:
        with guard, monitor.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return cur.fetchone()[0] > 0

    def allocate(conn: Any, list_id: str, **kwargs: Any) -> dict[str, Any]:
        arrived.append(threading.get_ident())
        deadline = time.monotonic() + 30
        while len(arrived) < 2 and not someone_waits() and time.monotonic() < deadline:
            time.sleep(0.02)
        return original(conn, list_id, **kwargs)

    monkeypatch.setattr(status_list, "allocate", allocate)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(warehouse.dsn()) as conn:
                tokens.append(_issuance(conn, request, tmp_path).issue_credential())
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    monitor.close()
    assert not errors and len(tokens) == 2, errors

    indexes = {jws.parse(t).payload["vc"]["credentialStatus"]["statusListIndex"] for t in tokens}
    row = _issuance(pg3, request, tmp_path).row()
    assert indexes == {str(row["status_index"])}
    with pg3.cursor() as cur:
        cur.execute("SELECT next_index FROM vc_status_lists WHERE list_id = %s", (row["status_list_id"],))
        assert cur.fetchone()[0] == 1  # one index spent on the issuer's new list


@pytest.mark.unit
def test_the_connection_allow_list_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    did = create_did("jwk").uri
    for conn_id, issuers in (("did_list", [did]), ("did_text", f" {did} , ")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": "tributary_did", "password": KEK, "extra": {"issuers": issuers}}))
        assert DidHook(conn_id).allowed_issuers() == (did,)
    monkeypatch.setenv("AIRFLOW_CONN_DID_NONE", json.dumps({"conn_type": "tributary_did", "password": KEK}))
    assert DidHook("did_none").allowed_issuers() == ()
    for bad in (["not a did"], {"did": did}, [1]):
        monkeypatch.setenv("AIRFLOW_CONN_DID_BAD", json.dumps(
            {"conn_type": "tributary_did", "password": KEK, "extra": {"issuers": bad}}))
        with pytest.raises(PermanentError) as failure:
            DidHook("did_bad").allowed_issuers()
        assert failure.value.reason == "config:issuers"
