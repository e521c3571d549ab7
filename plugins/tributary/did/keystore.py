"""Private keys of the project's DIDs, encrypted at rest in PostgreSQL (``did_keys``, ``did_registry``).

Each private JWK is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the key-encryption
key (KEK): the password of the ``tributary_did`` Connection or a secrets-backend value, never stored
with the data. The DID and key id are the associated data, so a ciphertext moved to another row does
not open. A wrong KEK (or a tampered row) fails authentication: :class:`SecurityError`.
Decrypted keys stay in the task process; nothing here returns them for XCom.

Every key has a **role**: ``subject`` (the DID made for an issuance request: it is never accepted as an
issuer key, whatever else says so), ``issuer`` (a DID registered in ``did_issuers``) or ``general``.
A key added to a DID that already has keys takes their role, so a rotation keeps it; ``general`` may
become ``issuer`` or ``subject``, but a ``subject`` or ``issuer`` key never changes role.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tributary.core.errors import PermanentError, SecurityError
from tributary.core.masking import mask_secret
from tributary.did import SYSTEM, keys
from tributary.did.document import PortableDid, parse_did

_SALT = b"tributary/did_keys/v1"
ROLES = ("general", "subject", "issuer")


def derive_key(kek: str) -> bytes:
    if not kek or len(kek) < 16:
        raise PermanentError("the key-encryption key must be at least 16 characters", system=SYSTEM,
                             reason="config:kek")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"aes-256-gcm").derive(kek.encode())


def seal(aead_key: bytes, did: str, key_id: str, jwk: keys.Jwk) -> bytes:
    nonce = os.urandom(12)
    plaintext = json.dumps(jwk, separators=(",", ":")).encode()
    return nonce + AESGCM(aead_key).encrypt(nonce, plaintext, f"{did}|{key_id}".encode())


def unseal(aead_key: bytes, did: str, key_id: str, blob: bytes) -> keys.Jwk:
    try:
        plaintext = AESGCM(aead_key).decrypt(blob[:12], blob[12:], f"{did}|{key_id}".encode())
    except InvalidTag:
        raise SecurityError(f"cannot decrypt key {key_id} of {did}: wrong key-encryption key or tampered row",
                            system=SYSTEM, reason="kek_mismatch") from None
    return json.loads(plaintext)


class KeyStore:
    """``did_keys`` + ``did_registry`` on a DB-API connection (psycopg 3 or psycopg2)."""

    def __init__(self, conn: Any, kek: str) -> None:
        mask_secret(kek)
        self.conn = conn
        self._aead = derive_key(kek)

    # ------------------------------------------------------------------ writes
    def save(self, portable: PortableDid, version: int = 0, *, role: str | None = None, commit: bool = True) -> None:
        """Upsert the DID's document and every private key (status active). ``role`` None: the role the
        DID's keys already have (``general`` for a new DID)."""
        method = parse_did(portable.uri)[0]
        with self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO did_registry (did, method, document, version) VALUES (%s, %s, %s::jsonb, %s)"
                " ON CONFLICT (did) DO UPDATE SET document = EXCLUDED.document, version = EXCLUDED.version,"
                " updated_at = now()",
                (portable.uri, method, json.dumps(portable.document), version))
            role = self._role_for(cur, portable.uri, role)
            for jwk in portable.private_keys:
                self._put_key(cur, portable.uri, jwk, role=role)
        if commit:
            self.conn.commit()

    @staticmethod
    def _role_for(cur: Any, did: str, role: str | None) -> str:
        if role is not None:
            if role not in ROLES:
                raise ValueError(f"key role must be one of {ROLES}")
            return role
        # subject first: a DID that has any subject key stays a subject
        cur.execute("SELECT role FROM did_keys WHERE did = %s AND role <> 'general'"
                    " ORDER BY role = 'subject' DESC LIMIT 1", (did,))
        found = cur.fetchone()
        return found[0] if found else "general"

    def _put_key(self, cur: Any, did: str, jwk: keys.Jwk, status: str = "active", role: str = "general") -> str:
        key_id = keys.thumbprint(jwk)
        # an existing key keeps its status; only a 'general' key takes a role (never away from subject/issuer)
        cur.execute(
            "INSERT INTO did_keys (did, key_id, public_jwk, private_jwk_enc, status, role)"
            " VALUES (%s, %s, %s::jsonb, %s, %s, %s)"
            " ON CONFLICT (did, key_id) DO UPDATE SET role = EXCLUDED.role"
            " WHERE did_keys.role = 'general' AND EXCLUDED.role <> 'general'",
            (did, key_id, json.dumps(keys.public_jwk(jwk)), seal(self._aead, did, key_id, jwk), status, role))
        return key_id

    def add_key(self, did: str, jwk: keys.Jwk) -> str:
        with self.conn.cursor() as cur:
            key_id = self._put_key(cur, did, jwk, role=self._role_for(cur, did, None))
        self.conn.commit()
        return key_id

    # ------------------------------------------------------------------ issuers
    def register_issuer(self, did: str, note: str | None = None, *, conn_id: str | None = None,
                        commit: bool = True) -> None:
        """Register ``did`` (its document and keys already saved here) as an issuer: a ``did_issuers`` row
        and its keys' role ``issuer``. A subject DID is refused (:class:`SecurityError`, nothing written).
        ``conn_id``: the ``tributary_did`` Connection whose deployment issuer it is."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM did_registry WHERE did = %s", (did,))
            if cur.fetchone() is None:
                raise PermanentError(f"{did} is not in the key store", system=SYSTEM, reason="unknown_did")
            if self._role_for(cur, did, None) == "subject":
                raise SecurityError(f"{did} is a subject DID and may never be an issuer", system=SYSTEM,
                                    reason="issuer_refused:subject")
            cur.execute("INSERT INTO did_issuers (did, conn_id, note) VALUES (%s, %s, %s)"
                        " ON CONFLICT (did) DO UPDATE SET note = COALESCE(EXCLUDED.note, did_issuers.note),"
                        " conn_id = COALESCE(EXCLUDED.conn_id, did_issuers.conn_id)", (did, conn_id, note))
            cur.execute("UPDATE did_keys SET role = 'issuer' WHERE did = %s AND role = 'general'", (did,))
        if commit:
            self.conn.commit()

    def is_registered_issuer(self, did: str) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM did_issuers WHERE did = %s", (did,))
            return cur.fetchone() is not None

    def role(self, did: str) -> str:
        """``subject`` if any key of ``did`` is a subject key, else ``issuer`` if any is, else ``general``."""
        with self.conn.cursor() as cur:
            return self._role_for(cur, did, None)

    def set_status(self, did: str, key_id: str, status: str, grace: timedelta | None = None) -> None:
        retire_after = datetime.now(UTC) + grace if grace is not None else None
        with self.conn.cursor() as cur:
            cur.execute("UPDATE did_keys SET status = %s, retire_after = %s WHERE did = %s AND key_id = %s",
                        (status, retire_after, did, key_id))
        self.conn.commit()

    # ------------------------------------------------------------------ reads
    def key_rows(self, did: str) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT key_id, public_jwk, status, retire_after, created_at, role FROM did_keys"
                        " WHERE did = %s ORDER BY created_at, key_id", (did,))
            return [{"key_id": r[0], "public_jwk": r[1], "status": r[2], "retire_after": r[3], "created_at": r[4],
                     "role": r[5]} for r in cur.fetchall()]

    def private_key(self, did: str, key_id: str) -> keys.Jwk:
        with self.conn.cursor() as cur:
            cur.execute("SELECT private_jwk_enc FROM did_keys WHERE did = %s AND key_id = %s", (did, key_id))
            row = cur.fetchone()
        if row is None:
            raise PermanentError(f"no key {key_id} for {did}", system=SYSTEM, reason="unknown_key")
        return unseal(self._aead, did, key_id, bytes(row[0]))

    def load(self, did: str) -> PortableDid:
        """The DID with its current document and the private keys not yet retired."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT document, version FROM did_registry WHERE did = %s", (did,))
            row = cur.fetchone()
        if row is None:
            raise PermanentError(f"{did} is not in the key store", system=SYSTEM, reason="unknown_did")
        document = row[0] if isinstance(row[0], dict) else json.loads(row[0])
        private = [self.private_key(did, r["key_id"]) for r in self.key_rows(did) if r["status"] != "retired"]
        return PortableDid(did, document, private, {"versionId": str(row[1])} if row[1] else {})

    def version(self, did: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT version FROM did_registry WHERE did = %s", (did,))
            row = cur.fetchone()
        return int(row[0]) if row else 0
