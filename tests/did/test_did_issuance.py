"""did_issuance end to end: the did devnet (Pkarr relay + HTTPS did:web server), a real DWN server, the
warehouse; dag.test() runs, the idempotent re-trigger, a conflicting re-use of a request id, and a
store step repeated after a crash that left its record in the DWN."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tributary.core.errors import PermanentError
from tributary.did.keystore import KeyStore
from tributary.did.resolver import ResolverConfig, create_did, resolve_document
from tributary.vc.issuance import (
    CREDENTIAL_PATH,
    DID_DOCUMENT_PATH,
    PROTOCOL,
    Issuance,
    IssuanceRequest,
    WebRoot,
)
from tributary.vc.vcjwt import verify_vc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dwn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from devnets.dwn.process import installed, start_peers

    if not installed():
        pytest.fail(f"@web5/dwn-server is not installed: run `npm ci` in {ROOT / 'devnets' / 'dwn'}")
    (server,) = start_peers(1, tmp_path_factory.mktemp("dwn"))
    yield server
    server.stop()


@pytest.fixture
def dwn_conn(dwn_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``tributary_dwn`` Connection for a fresh tenant, whose key is a did:key made by the did package."""
    from tributary.dwn.identity import DidKey

    tenant = DidKey.from_portable(create_did("key"))
    conn_id = f"dwn_issuance_{secrets.token_hex(4)}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "tributary_dwn", "host": dwn_server.url, "password": tenant.seed_hex(),
         "extra": {"tenant": tenant.did, "timeout": 20, "allowed_dags": ["did_issuance"]}}))
    return conn_id


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "web5" / "did_issuance.py"))
    assert bag.import_errors == {}
    return bag.get_dag("did_issuance")


def _xcoms(run) -> dict[str, Any]:
    return {ti.task_id: ti.xcom_pull(task_ids=ti.task_id, key="return_value") for ti in run.get_task_instances()}


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _protocol_records(dwn_conn: str) -> list[dict[str, Any]]:
    from tributary.dwn.hook import DwnHook

    return list(DwnHook(dwn_conn).iter_records({"protocol": PROTOCOL}))


def _row(pg3: Any, request_id: str) -> dict[str, Any]:
    pg3.rollback()
    with pg3.cursor() as cur:
        cur.execute("SELECT * FROM did_issuance_requests WHERE request_id = %s", (request_id,))
        values = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], values, strict=True))


@pytest.mark.postgres
@pytest.mark.devnet
def test_the_dag_issues_publishes_stores_and_replays_a_request(project_dags: Path, pg3: Any, did_conn: dict[str, str],
                                                                did_devnet: dict[str, Any], did_config: ResolverConfig,
                                                                dwn_conn: str) -> None:
    from tributary.dwn.hook import DwnHook

    web = did_devnet["web"]
    request_id = f"kyc-{secrets.token_hex(4)}"
    conf = {"request_id": request_id, "method": "web", "claims": {"name": "Ada", "country": "GB"},
            "credential_type": "KycCredential", "expiry_days": 30, "with_status": True, "issuer": None,
            "did_conn_id": did_conn["conn_id"], "dwn_conn_id": dwn_conn}
    dag = _dag()

    run = dag.test(run_conf=conf)
    assert run.state == "success", _states(run)
    xcoms = _xcoms(run)
    result = xcoms["record_request"]
    did, token, issuer = result["did"], result["credential"], result["issuer"]
    assert result["request_id"] == request_id and result["replayed"] is False
    assert did == f"did:web:{web.did_host.replace(':', '%3A')}:subjects:{request_id}"
    # the deployment's issuer of this Connection, made now
    assert issuer == f"did:web:{web.did_host.replace(':', '%3A')}:issuers:{did_conn['conn_id']}"

    # the subject DID is published on the HTTPS server and its keys are sealed in the key store
    assert resolve_document(did, did_config)["id"] == did
    subject_keys = KeyStore(pg3, did_conn["kek"]).load(did).private_keys
    assert subject_keys and all("d" in k for k in subject_keys)
    pg3.rollback()
    with pg3.cursor() as cur:
        cur.execute("SELECT private_jwk_enc FROM did_keys WHERE did = %s", (did,))
        sealed = bytes(cur.fetchone()[0])
    assert subject_keys[0]["d"].encode() not in sealed
    assert not any(k["d"] in json.dumps(xcoms) for k in subject_keys)  # no private key in any XCom

    # the credential verifies (issuer did:web resolved over HTTPS, revocation list fetched)
    verified = verify_vc(token, config=did_config)
    assert verified.issuer == issuer and verified.subject == did and "KycCredential" in verified.types
    assert verified.vc["credentialSubject"] == {"id": did, "name": "Ada", "country": "GB"}
    assert "status:revocation" in verified.checked and "expirationDate" in verified.vc

    # both records are in the tenant's DWN and read back as what was issued
    records = result["dwn_records"]
    hook = DwnHook(dwn_conn)
    assert records["protocol"] == PROTOCOL and records["tenant"] == hook.tenant
    message, data = hook.read_record(records[CREDENTIAL_PATH])
    assert data.decode() == token and message["descriptor"]["protocolPath"] == CREDENTIAL_PATH
    assert message["descriptor"]["tags"]["requestId"] == request_id
    message, data = hook.read_record(records[DID_DOCUMENT_PATH])
    assert json.loads(data) == resolve_document(did, did_config)
    row = _row(pg3, request_id)
    assert row["status"] == "completed" and row["subject_did"] == did and row["issuer"] == issuer
    assert row["credential_record_id"] == records[CREDENTIAL_PATH] and row["status_index"] is not None

    # re-trigger: the same DID, credential and records; nothing new written anywhere
    before_records = _protocol_records(dwn_conn)
    before_files = {p: p.stat().st_mtime_ns for p in Path(web.document_root).rglob("*") if p.is_file()}
    again = _dag().test(run_conf=conf)
    assert again.state == "success", _states(again)
    replay = _xcoms(again)["record_request"]
    assert replay["replayed"] is True
    assert {k: v for k, v in replay.items() if k != "replayed"} == {k: v for k, v in result.items() if k != "replayed"}
    assert _protocol_records(dwn_conn) == before_records
    assert {p: p.stat().st_mtime_ns for p in Path(web.document_root).rglob("*") if p.is_file()} == before_files
    assert _row(pg3, request_id) == row

    # the same request id with other params is refused without a retry
    conflict = _dag().test(run_conf={**conf, "claims": {"name": "Eve"}})
    assert conflict.state == "failed"
    assert _states(conflict)["create_subject"] == "failed"
    assert _row(pg3, request_id) == row


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_dht_subject_with_an_explicit_issuer(project_dags: Path, pg3: Any, did_conn: dict[str, str],
                                              did_config: ResolverConfig, dwn_conn: str) -> None:
    issuer = create_did("jwk", crv="secp256k1")
    store = KeyStore(pg3, did_conn["kek"])
    store.save(issuer)
    store.register_issuer(issuer.uri, "explicit issuer of the test")  # only registered issuers sign
    conf = {"request_id": f"dht-{secrets.token_hex(4)}", "method": "dht", "claims": {"tier": 2},
            "credential_type": "MembershipCredential", "expiry_days": None, "with_status": False,
            "issuer": issuer.uri, "did_conn_id": did_conn["conn_id"], "dwn_conn_id": dwn_conn}
    run = _dag().test(run_conf=conf)
    assert run.state == "success", _states(run)
    result = _xcoms(run)["record_request"]
    assert result["did"].startswith("did:dht:") and result["issuer"] == issuer.uri
    assert resolve_document(result["did"], did_config)["id"] == result["did"]  # published to the Pkarr relay
    verified = verify_vc(result["credential"], config=did_config)
    assert verified.subject == result["did"] and "expirationDate" not in verified.vc


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_store_repeated_after_a_crash_finds_the_records_already_written(pg3: Any, did_conn: dict[str, str],
                                                                         did_devnet: dict[str, Any],
                                                                         did_config: ResolverConfig,
                                                                         dwn_conn: str) -> None:
    from tributary.dwn.hook import DwnHook

    request = IssuanceRequest(request_id=f"crash-{secrets.token_hex(4)}", method="key",
                              claims={"level": "basic"}, did_conn_id=did_conn["conn_id"], dwn_conn_id=dwn_conn)
    web = WebRoot(Path(did_devnet["web"].document_root), did_devnet["web"].url)
    issuance = Issuance(request, pg3, KeyStore(pg3, did_conn["kek"]), did_config, web, DwnHook(dwn_conn))
    issuance.create_subject()
    issuance.ensure_issuer()
    issuance.publish_subject()
    first = issuance.issue_credential()
    records = issuance.store_in_dwn(first)
    count = len(_protocol_records(dwn_conn))

    # the DWN writes landed but the row update was lost: the row still says "issued"
    with pg3.cursor() as cur:
        cur.execute("UPDATE did_issuance_requests SET status = 'issued', credential_record_id = NULL"
                    " WHERE request_id = %s", (request.request_id,))
    pg3.commit()
    time.sleep(1.1)  # iat and issuanceDate have second resolution: a later retry signs another token
    second = issuance.issue_credential()
    assert second != first
    assert issuance.store_in_dwn(second) == records
    assert len(_protocol_records(dwn_conn)) == count
    result = issuance.complete()
    assert result["credential"] == first and result["replayed"] is False  # the stored one wins
    assert issuance.complete()["replayed"] is True


@pytest.mark.unit
def test_requests_are_checked_before_anything_is_made() -> None:
    with pytest.raises(PermanentError, match="request_id"):
        IssuanceRequest.from_params({"request_id": None})
    with pytest.raises(PermanentError, match="request_id"):
        IssuanceRequest.from_params({"request_id": "../etc"})
    with pytest.raises(PermanentError, match="'id'"):
        IssuanceRequest(request_id="r1", claims={"id": "did:example:someone-else"})
    with pytest.raises(PermanentError, match="method"):
        IssuanceRequest(request_id="r1", method="ion")
    base = IssuanceRequest(request_id="r1", claims={"a": 1, "b": 2})
    assert base.fingerprint() == IssuanceRequest(request_id="r2", claims={"b": 2, "a": 1}).fingerprint()
    assert base.fingerprint() != IssuanceRequest(request_id="r1", claims={"a": 1}).fingerprint()
