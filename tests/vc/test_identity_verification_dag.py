"""identity_verification end to end with ``dag.test()``: verdicts in XCom and in vc_verifications."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tributary.did.resolver import ResolverConfig, create_did
from tributary.vc import status_list
from tributary.vc.vcjwt import create_credential, issue_vc

ROOT = Path(__file__).resolve().parents[2]


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "web5" / "identity_verification.py"))
    assert bag.import_errors == {}
    return bag.get_dag("identity_verification")


def _verdict(run) -> dict[str, Any]:
    ti = next(t for t in run.get_task_instances() if t.task_id == "record_verdict")
    return ti.xcom_pull(task_ids="record_verdict", key="return_value")


def _row(pg3: Any, run_id: str) -> tuple:
    with pg3.cursor() as cur:
        cur.execute("SELECT valid, reasons, issuer, subject FROM vc_verifications WHERE run_id = %s", (run_id,))
        return cur.fetchone()


@pytest.mark.postgres
@pytest.mark.devnet
def test_the_dag_records_positive_and_negative_verdicts(project_dags: Path, pg3: Any, did_conn: dict[str, str],
                                                        did_devnet: dict[str, Any], did_config: ResolverConfig,
                                                        ) -> None:
    web = did_devnet["web"]
    issuer = create_did("web", host=web.did_host, path=f"dag/{uuid.uuid4().hex[:6]}",
                        document_root=web.document_root)
    holder = create_did("dht", config=did_config)
    list_id = f"dag-{uuid.uuid4().hex[:8]}"
    url_path = f"status/{list_id}.jwt"
    status_list.create_list(pg3, list_id, issuer.uri, f"{web.url}/{url_path}")
    entry = status_list.allocate(pg3, list_id)
    status_list.publish(pg3, list_id, issuer, web.document_root, url_path)
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": holder.uri}, types=["KycCredential"], status=entry,
                                               expires=datetime.now(UTC) + timedelta(hours=1)))
    dag = _dag()

    run = dag.test(run_conf={"credential": token, "expected_subject": holder.uri, "expected_type": "KycCredential",
                             "conn_id": did_conn["conn_id"]})
    assert run.state == "success"
    verdict = _verdict(run)
    assert verdict["valid"] is True and verdict["reasons"] == [] and verdict["issuer"] == issuer.uri
    assert verdict["subject"] == holder.uri and "status:revocation" in verdict["checked"]
    assert token not in str(verdict)
    assert _row(pg3, run.run_id) == (True, [], issuer.uri, holder.uri)

    status_list.revoke(pg3, list_id, int(entry["statusListIndex"]), issuer, web.document_root, url_path)
    run = dag.test(run_conf={"credential": token, "conn_id": did_conn["conn_id"]})
    assert run.state == "success"  # a negative verdict is a result, not a failure
    assert _verdict(run)["reasons"] == ["security:revoked"]
    assert _row(pg3, run.run_id)[:2] == (False, ["security:revoked"])

    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    run = dag.test(run_conf={"credential": tampered, "conn_id": did_conn["conn_id"], "fail_on_invalid": True})
    assert run.state == "failed"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"verify_credential": "success", "record_verdict": "failed"}
    assert _row(pg3, run.run_id)[0] is False


@pytest.mark.postgres
def test_expired_credential_without_a_connection_is_a_negative_verdict(project_dags: Path, pg3: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # a Connection that does not exist, allowed for this DAG by the documented Variable (core.conn_policy)
    monkeypatch.setenv("AIRFLOW_VAR_TRIBUTARY_ALLOWED_CONNECTIONS",
                       json.dumps({"identity_verification": ["no_such_did_connection"]}))
    issuer = create_did("key", crv="secp256k1")
    now = datetime.now(UTC)
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:late"}, issued=now - timedelta(days=3),
                                               expires=now - timedelta(days=1)))
    run = _dag().test(run_conf={"credential": token, "conn_id": "no_such_did_connection"})
    assert run.state == "success"
    verdict = _verdict(run)
    assert verdict["valid"] is False and verdict["reasons"] == ["data:expired"]
    assert verdict["issuer"] == issuer.uri and verdict["checked"] == ["structure", "data_model"]
