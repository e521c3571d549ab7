"""A verification verdict for a presented credential, and its record in ``vc_verifications``.

A credential that fails a check is a *result*, not a crash: the verdict says ``valid: false`` with
the reasons (``<class>:<reason>``, e.g. ``security:bad_signature``, ``data:expired``). Only failures
that say nothing about the credential (resolver or status server unreachable: transient) propagate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tributary.core.errors import PermanentError, TributaryError, classify
from tributary.did.resolver import ResolverConfig
from tributary.storage import WAREHOUSE_CONN_ID
from tributary.vc import SYSTEM
from tributary.vc.credential import issuer_id, subject_id
from tributary.vc.vcjwt import verify_vc


def _claims_peek(token: str) -> dict[str, Any]:
    """Issuer, subject and types read *without* trusting them (for a negative verdict's context)."""
    from tributary.vc import jws

    try:
        payload = jws.parse(token).payload
    except TributaryError:
        return {}
    vc = payload.get("vc") if isinstance(payload.get("vc"), dict) else {}
    types = vc.get("type") if isinstance(vc.get("type"), list) else []
    issuer, subject = issuer_id(vc) or payload.get("iss"), subject_id(vc) or payload.get("sub")
    return {"issuer": issuer if isinstance(issuer, str) else None,
            "subject": subject if isinstance(subject, str) else None,
            "types": [t for t in types if isinstance(t, str)]}


def check_credential(token: str, *, expected_subject: str | None = None, expected_issuer: str | None = None,
                     expected_type: str | None = None, config: ResolverConfig | None = None,
                     now: float | None = None) -> dict[str, Any]:
    """``{valid, reasons, issuer, subject, types, checked}`` for a presented VC-JWT.

    ``expected_issuer`` is compared with the issuer the token *claims* before anything is verified:
    a credential from another issuer gets its negative verdict without a single fetch (its author
    chooses the did:web host and the status list URL, and is not the issuer we trust)."""
    checked: list[str] = []
    reasons: list[str] = []
    peek = _claims_peek(token)
    issuer, subject, types = peek.get("issuer"), peek.get("subject"), peek.get("types", [])
    if expected_issuer is None or issuer == expected_issuer:
        try:
            verified = verify_vc(token, config=config, now=now, checked=checked)
            issuer, subject, types = verified.issuer, verified.subject, verified.types
        except TributaryError as exc:
            classification = classify(exc)
            if classification.retryable:
                raise
            reasons.append(f"{classification.error_class}:{classification.reason}")
    if expected_issuer is not None:
        if issuer != expected_issuer:
            reasons.append("expectation:issuer")
        else:
            checked.append("expected_issuer")
    if expected_subject is not None:
        if subject != expected_subject:
            reasons.append("expectation:subject")
        else:
            checked.append("expected_subject")
    if expected_type is not None:
        if expected_type not in types:
            reasons.append("expectation:type")
        else:
            checked.append("expected_type")
    return {"valid": not reasons, "reasons": reasons, "issuer": issuer, "subject": subject, "types": types,
            "checked": checked}


def credential_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def record_verdict(conn: Any, run_id: str, digest: str, verdict: dict[str, Any]) -> None:
    """Upsert the verdict of ``run_id`` (a retried or cleared task writes the same row again)."""
    if not run_id:
        raise PermanentError("a verdict needs the run id", system=SYSTEM, reason="invalid_value")
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO vc_verifications (run_id, credential_sha256, valid, reasons, issuer, subject, types, checked)"
            " VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb)"
            " ON CONFLICT (run_id) DO UPDATE SET credential_sha256 = EXCLUDED.credential_sha256,"
            " valid = EXCLUDED.valid, reasons = EXCLUDED.reasons, issuer = EXCLUDED.issuer,"
            " subject = EXCLUDED.subject, types = EXCLUDED.types, checked = EXCLUDED.checked, verified_at = now()",
            (run_id, digest, verdict["valid"], json.dumps(verdict["reasons"]), verdict.get("issuer"),
             verdict.get("subject"), json.dumps(verdict.get("types") or []), json.dumps(verdict.get("checked") or [])))
    conn.commit()


def verify_presented(token: str, *, did_conn_id: str, expected_subject: str | None = None,
                     expected_issuer: str | None = None, expected_type: str | None = None) -> dict[str, Any]:
    """:func:`check_credential` with the resolver of the ``tributary_did`` Connection ``did_conn_id``,
    plus the credential's SHA-256 as ``credential_sha256`` (the token itself is not returned)."""
    from tributary.did.hook import DidHook

    try:
        config = DidHook(did_conn_id).get_conn()
    except Exception as exc:  # no Connection: did:key / did:jwk still resolve, did:web uses system CAs
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        config = ResolverConfig()
    verdict = check_credential(token, expected_subject=expected_subject, expected_issuer=expected_issuer,
                               expected_type=expected_type, config=config)
    verdict["credential_sha256"] = credential_digest(token)
    return verdict


def store_verdict(run_id: str, verdict: dict[str, Any],
                  warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """:func:`record_verdict` of a :func:`verify_presented` result in the warehouse; returns the verdict
    without its digest."""
    from tributary.storage.warehouse import WarehouseHook

    verdict = dict(verdict)
    digest = verdict.pop("credential_sha256")
    with WarehouseHook(warehouse_conn_id).session() as conn:
        record_verdict(conn, run_id, digest, verdict)
    return verdict
