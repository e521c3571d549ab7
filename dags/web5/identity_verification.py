"""
### Web5: identity verification

Verifies a presented W3C Verifiable Credential (VC-JWT) and records the verdict. Triggered from the
UI or the REST API with the credential in `conf`; see docs/web5-identity.md.

1. `verify_credential`: structure and data model, validity window (`nbf`/`exp`, issuanceDate /
   expirationDate), the issuer's DID resolved (did:key, did:jwk, did:web, did:dht through the
   `tributary_did` Connection), the key listed for `assertionMethod`, the JWS signature (EdDSA, ES256K,
   ES256), the revocation bit of each `credentialStatus` (Bitstring Status List), then the optional
   expectations (subject, issuer, type).
2. `record_verdict`: upserts the verdict into `vc_verifications` (keyed by run id) and returns it:
   `{valid, reasons, issuer, subject, types, checked}` is the XCom `return_value` of this task.

A credential that fails verification is a normal, successful run whose verdict says `valid: false`
(reasons such as `security:bad_signature`, `security:revoked`, `data:expired`). Set
`fail_on_invalid` to make such a run fail as well (class security, no retry). An unreachable
resolver or status server is transient and retried. The credential itself never enters XCom or the
table (only its SHA-256).

* **Params**: `credential` (VC-JWT, required), `expected_subject`, `expected_issuer`, `expected_type`,
  `fail_on_invalid`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param
from tributary.did import SYSTEM

JWT_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$"
DID_PATTERN = r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$"


@dag(
    dag_id="identity_verification",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=32,
    tags=["web5", "did", "vc", "identity"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=5),
                              max_retry_delay=timedelta(minutes=1), execution_timeout=timedelta(minutes=5)),
    params={
        # Required (no default): without a credential there is nothing to verify, so the Trigger form
        # asks for it and a REST trigger without it is refused with a 400 before a run exists.
        "credential": Param(type="string", pattern=JWT_PATTERN, maxLength=65536,
                            description="The presented credential as a VC-JWT (three base64url parts). Required."),
        "expected_subject": Param(None, type=["null", "string"], pattern=DID_PATTERN,
                                  description="When set, credentialSubject.id must be this DID."),
        "expected_issuer": Param(None, type=["null", "string"], pattern=DID_PATTERN,
                                 description="When set, the issuer must be this DID."),
        "expected_type": Param(None, type=["null", "string"], maxLength=200,
                               description="When set, the credential's type list must contain it."),
        "fail_on_invalid": Param(False, type="boolean",
                                 description="Also fail the run (security class) when the verdict is negative."),
        "conn_id": conn_id_param("tributary_did",
                         description="Connection with the Pkarr relay and trusted CA bundle."),
    },
)
def identity_verification():
    @task
    @classified(SYSTEM)
    def verify_credential(params: dict | None = None) -> dict:
        from tributary.core.errors import PermanentError
        from tributary.vc.verdict import verify_presented

        token = (params or {}).get("credential")
        if not token:
            raise PermanentError("param 'credential' (a VC-JWT) is required", system=SYSTEM, reason="invalid_value")
        verdict = verify_presented(token, did_conn_id=params["conn_id"],
                                   expected_subject=params.get("expected_subject"),
                                   expected_issuer=params.get("expected_issuer"),
                                   expected_type=params.get("expected_type"))
        print(f"verdict valid={verdict['valid']} reasons={verdict['reasons']} issuer={verdict['issuer']}")
        return verdict

    @task
    @classified(SYSTEM)
    def record_verdict(verdict: dict, params: dict | None = None) -> dict:
        from tributary.core.errors import SecurityError
        from tributary.vc.verdict import store_verdict

        verdict = store_verdict(get_current_context()["run_id"], verdict)
        if (params or {}).get("fail_on_invalid") and not verdict["valid"]:
            raise SecurityError(f"credential rejected: {', '.join(verdict['reasons'])}", system=SYSTEM,
                                reason="credential_rejected")
        return verdict

    record_verdict(verify_credential())


identity_verification()
