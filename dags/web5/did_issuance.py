"""
### Web5: DID and credential issuance

REST-triggered: creates a subject DID, publishes it where its method needs it, issues a Verifiable
Credential (VC-JWT) signed by the issuer, and stores the DID document and the credential in the
tenant's Decentralized Web Node. **Idempotent per `request_id`**: a re-trigger returns the same DID,
credential and records and writes nothing; the same `request_id` with other params fails (permanent).

1. `create_subject`: the subject DID (`method`), its keys sealed in the key store (`did_keys`), the
   request's row in `did_issuance_requests` (or the existing row, reused).
2. `resolve_issuer`: the `issuer` param or the deployment's issuer of the `tributary_did` Connection,
   created and registered once (did:web under `web_root`, else did:dht, else did:jwk). Only registered
   issuers sign (`did_issuers` or the Connection's `issuers`), never a subject DID, only with an
   `assertionMethod` key: a refused `issuer` fails `create_subject` (security) with nothing written.
3. `publish_subject`: did:web -> `web_root` of the `tributary_did` Connection; did:dht -> its Pkarr
   relay; resolved back before going on.
4. `issue_credential`: VC-JWT (`credential_type`, `claims`, `expiry_days`; with `with_status` a
   revocation entry in the issuer's Bitstring Status List).
5. `store_in_dwn`: records `didDocument` and `credential` of protocol
   `https://tributary.example/protocols/identity` (tagged with the request id) in the DWN of `dwn_conn_id`.
6. `record_request`: marks the request completed; its XCom `return_value` is the result
   `{request_id, did, credential, dwn_records, issuer, replayed}` (no private key ever enters XCom).

See docs/web5-identity.md (REST example included).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param
from tributary.did import SYSTEM
from tributary.dwn import SYSTEM as DWN_SYSTEM

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # = tributary.vc.issuance.REQUEST_ID_PATTERN
DID_PATTERN = r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$"


@dag(
    dag_id="did_issuance",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=16,
    tags=["web5", "did", "vc", "dwn", "identity"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=5),
                              max_retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=5)),
    params={
        # Required (no default): the idempotency key of the request; the form asks for it, REST gets a 400.
        "request_id": Param(type="string", pattern=REQUEST_ID_PATTERN,
                            description="Idempotency key of the request (required; letters, digits, . _ -)."),
        "method": Param("dht", type="string", enum=["key", "jwk", "web", "dht"],
                        description="DID method of the subject DID."),
        "claims": Param({}, type="object",
                        description="credentialSubject claims (the subject DID is added as 'id')."),
        "credential_type": Param("IdentityCredential", type="string", pattern=r"^[A-Za-z][A-Za-z0-9]{0,63}$",
                                 description="Credential type, after VerifiableCredential."),
        "expiry_days": Param(365, type=["null", "integer"], minimum=1, maximum=36500,
                             description="Days until the credential expires (null: no expiry)."),
        "with_status": Param(False, type="boolean",
                             description="Allocate a revocation entry in the issuer's status list."),
        "issuer": Param(None, type=["null", "string"], pattern=DID_PATTERN,
                        description="A registered issuer DID (did_issuers, or the issuers of the did_conn_id"
                                    " Connection) whose keys are in the key store; null: the deployment's issuer."),
        "did_conn_id": conn_id_param("tributary_did",
                             description="tributary_did Connection: key store KEK, Pkarr relay, web root."),
        "dwn_conn_id": conn_id_param("tributary_dwn_source",
                             description="tributary_dwn Connection of the tenant DWN that stores the records."),
    },
)
def did_issuance():
    @task
    @classified(SYSTEM)
    def create_subject(params: dict | None = None) -> dict:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.create_subject()

    @task
    @classified(SYSTEM)
    def resolve_issuer(subject: dict, params: dict | None = None) -> str:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.ensure_issuer()

    @task
    @classified(SYSTEM)
    def publish_subject(issuer: str, params: dict | None = None) -> dict:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.publish_subject()

    @task
    @classified(SYSTEM)
    def issue_credential(subject: dict, params: dict | None = None) -> str | None:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.issue_credential()

    @task
    @classified(DWN_SYSTEM)
    def store_in_dwn(token: str | None, params: dict | None = None) -> dict:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.store_in_dwn(token)

    @task
    @classified(SYSTEM)
    def record_request(records: dict, params: dict | None = None) -> dict:
        from tributary.vc.issuance import session

        with session(params) as issuance:
            return issuance.complete()

    record_request(store_in_dwn(issue_credential(publish_subject(resolve_issuer(create_subject())))))


did_issuance()
