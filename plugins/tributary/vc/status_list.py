"""Revocation with a Bitstring Status List (W3C; also reads StatusList2021): the issuer's side.

The list's bitstring (``bitstring``) travels inside a *status list credential* that the issuer signs
as a VC-JWT and serves at ``statusListCredential``. The lists are kept in ``vc_status_lists``;
revoking sets the bit and re-publishes the signed list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError
from tributary.did.document import PortableDid
from tributary.vc import SYSTEM
from tributary.vc.bitstring import MIN_BITS, encode, new_bits, set_bit
from tributary.vc.credential import BASE_CONTEXT, format_datetime
from tributary.vc.vcjwt import issue_vc


def status_entry(list_url: str, index: int, purpose: str = "revocation") -> dict[str, Any]:
    """The ``credentialStatus`` a credential carries to point at its bit."""
    return {"id": f"{list_url}#{index}", "type": "BitstringStatusListEntry", "statusPurpose": purpose,
            "statusListIndex": str(index), "statusListCredential": list_url}


def list_credential(issuer: str, list_url: str, bits: bytes, purpose: str = "revocation") -> dict[str, Any]:
    return {"@context": [BASE_CONTEXT], "id": list_url,
            "type": ["VerifiableCredential", "BitstringStatusListCredential"], "issuer": issuer,
            "issuanceDate": format_datetime(datetime.now(UTC)),
            "credentialSubject": {"id": f"{list_url}#list", "type": "BitstringStatusList",
                                  "statusPurpose": purpose, "encodedList": encode(bits)}}


# ----------------------------------------------------------------------------- PostgreSQL
def create_list(conn: Any, list_id: str, issuer: str, url: str, purpose: str = "revocation",
                size: int = MIN_BITS) -> None:
    bits = new_bits(size)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO vc_status_lists (list_id, issuer, purpose, url, size_bits, bits)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (list_id) DO NOTHING",
                    (list_id, issuer, purpose, url, len(bits) * 8, bytes(bits)))
    conn.commit()


def allocate(conn: Any, list_id: str, *, commit: bool = True) -> dict[str, Any]:
    """Reserve the next index of the list; returns the ``credentialStatus`` entry for it. ``commit=False``:
    the reservation stays in the caller's transaction (committed with what records it, or not at all)."""
    with conn.cursor() as cur:
        cur.execute("UPDATE vc_status_lists SET next_index = next_index + 1"
                    " WHERE list_id = %s AND next_index < size_bits RETURNING next_index - 1, url, purpose",
                    (list_id,))
        row = cur.fetchone()
    if commit:
        conn.commit()
    if row is None:
        raise PermanentError(f"status list {list_id} is unknown or full", system=SYSTEM, reason="status_list_full")
    return status_entry(row[1], int(row[0]), row[2])


def set_status(conn: Any, list_id: str, index: int, revoked: bool = True) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT bits FROM vc_status_lists WHERE list_id = %s FOR UPDATE", (list_id,))
        row = cur.fetchone()
        if row is None:
            raise PermanentError(f"unknown status list {list_id}", system=SYSTEM, reason="status_list_unknown")
        bits = bytearray(bytes(row[0]))
        set_bit(bits, index, revoked)
        cur.execute("UPDATE vc_status_lists SET bits = %s, updated_at = now() WHERE list_id = %s",
                    (bytes(bits), list_id))
    conn.commit()


def publish(conn: Any, list_id: str, issuer: PortableDid, document_root: str | Path, url_path: str) -> Path:
    """Sign the list's current state as a VC-JWT and write it at ``document_root/url_path``."""
    with conn.cursor() as cur:
        cur.execute("SELECT url, purpose, bits FROM vc_status_lists WHERE list_id = %s", (list_id,))
        row = cur.fetchone()
    if row is None:
        raise PermanentError(f"unknown status list {list_id}", system=SYSTEM, reason="status_list_unknown")
    token = issue_vc(issuer, list_credential(issuer.uri, row[0], bytes(row[2]), row[1]))
    target = Path(document_root) / url_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(token, encoding="utf-8")
    tmp.replace(target)
    return target


def revoke(conn: Any, list_id: str, index: int, issuer: PortableDid, document_root: str | Path,
           url_path: str) -> None:
    set_status(conn, list_id, index, True)
    publish(conn, list_id, issuer, document_root, url_path)
