"""DID + credential issuance for one request, idempotent per ``request_id`` (the ``did_issuance`` DAG's steps).

Every step runs in one transaction holding an advisory lock on the request id, reads the request's
row in ``did_issuance_requests`` and does only what the row says is not done yet, so a retried task,
a cleared or concurrent run, or a re-trigger of the same request never makes a second DID,
credential or DWN record:

1. :meth:`Issuance.create_subject`   new subject DID, keys sealed in the key store as ``subject`` keys, row
   ``created`` (the same request id with other params: ``PermanentError(reason="request_conflict")``; an
   ``issuer`` param that may not issue: ``SecurityError`` before anything is written)
2. :meth:`Issuance.ensure_issuer`    the ``issuer`` param or the deployment's issuer of the ``tributary_did``
   Connection, created once and registered (``did_issuers``)
3. :meth:`Issuance.publish_subject`  did:web -> the Connection's ``web_root``; did:dht -> the Pkarr
   relay; then resolved back; row ``published``
4. :meth:`Issuance.issue_credential` VC-JWT signed by the issuer (optionally with a revocation entry
   of the issuer's Bitstring Status List); row ``issued``
5. :meth:`Issuance.store_in_dwn`     DID document and credential as records of :data:`PROTOCOL` in
   the tenant's DWN, found again by their ``requestId`` tag before writing; row ``stored``
6. :meth:`Issuance.complete`         row ``completed``; the result, with the credential read back
   from the DWN and checked against its recorded SHA-256

Private keys stay in the key store and in this process; nothing returned here contains one.

**Who may sign** (:meth:`Issuance.authorize_issuer`, checked when the request is first seen, when its
issuer is chosen and again right before signing): a DID registered in ``did_issuers`` or allow-listed in
the ``issuers`` extra of the ``tributary_did`` Connection, never a DID holding subject keys or made as a
request's subject, and only with a key listed under ``assertionMethod`` of its document whose private
key the key store holds (not as a subject key). Anything else is a :class:`SecurityError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tributary.core.errors import PermanentError, SecurityError
from tributary.did import SYSTEM, didweb, keys
from tributary.did.document import PortableDid, ResolutionError, parse_did
from tributary.did.keystore import KeyStore
from tributary.did.resolver import METHODS, ResolverConfig, create_did, publish_dht, resolve

PROTOCOL = "https://tributary.example/protocols/identity"
DID_DOCUMENT_PATH = "didDocument"  # dwn-sdk-js: protocol paths are letters only
CREDENTIAL_PATH = "credential"
DID_DOCUMENT_FORMAT = "application/did+json"
CREDENTIAL_FORMAT = "application/vc+jwt"
PROTOCOL_DEFINITION: dict[str, Any] = {
    "protocol": PROTOCOL, "published": True,
    "types": {DID_DOCUMENT_PATH: {"dataFormats": [DID_DOCUMENT_FORMAT]},
              CREDENTIAL_PATH: {"dataFormats": [CREDENTIAL_FORMAT]}},
    "structure": {DID_DOCUMENT_PATH: {}, CREDENTIAL_PATH: {}},
}
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # also a did:web path segment
TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,63}$"
ISSUERS_PATH = "issuers"  # did:web:<host>:issuers:<conn id>
SUBJECTS_PATH = "subjects"
_STEPS = ("created", "published", "issued", "stored", "completed")


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, system=SYSTEM, reason="invalid_value")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class IssuanceRequest:
    """The params of one ``did_issuance`` run, checked (the DAG's Param schema says the same)."""

    request_id: str
    method: str = "dht"
    claims: Mapping[str, Any] | None = None
    credential_type: str = "IdentityCredential"
    expiry_days: int | None = 365
    with_status: bool = False
    issuer: str | None = None
    did_conn_id: str = "tributary_did"
    dwn_conn_id: str = "tributary_dwn_source"

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not re.match(REQUEST_ID_PATTERN, self.request_id):
            raise _invalid(f"request_id is required and must match {REQUEST_ID_PATTERN}")
        if self.method not in METHODS:
            raise _invalid(f"method must be one of {', '.join(METHODS)}")
        if self.claims is not None and not isinstance(self.claims, Mapping):
            raise _invalid("claims must be an object")
        if "id" in (self.claims or {}):
            raise _invalid("claims may not set 'id': it is the subject DID")
        if not isinstance(self.credential_type, str) or not re.match(TYPE_PATTERN, self.credential_type or ""):
            raise _invalid(f"credential_type must match {TYPE_PATTERN}")
        if self.expiry_days is not None and (isinstance(self.expiry_days, bool) or not isinstance(self.expiry_days, int)
                                             or self.expiry_days < 1):
            raise _invalid("expiry_days must be a positive integer or null")
        if self.issuer is not None:
            try:
                parse_did(self.issuer)
            except ResolutionError:
                raise _invalid("issuer must be a DID") from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IssuanceRequest:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in params.items() if k in names})

    def fingerprint(self) -> str:
        """SHA-256 of every param but the request id (canonical JSON): what "the same request" means."""
        fields = {k: v for k, v in asdict(self).items() if k != "request_id"}
        fields["claims"] = dict(self.claims or {})
        return sha256_hex(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str))


@dataclass(frozen=True)
class WebRoot:
    """The folder (``web_root``) an HTTPS server publishes at ``base_url`` (``status_base_url``)."""

    path: Path
    base_url: str

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> WebRoot | None:
        if not extra.get("web_root") or not extra.get("status_base_url"):
            return None
        return cls(Path(extra["web_root"]), str(extra["status_base_url"]).rstrip("/"))

    @property
    def host(self) -> str:
        """``host[:port]`` of ``base_url``; a did:web is rooted there, so ``base_url`` may not have a path."""
        parts = urlsplit(self.base_url)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise PermanentError(f"status_base_url {self.base_url!r} must be https://host[:port] (no path) to serve"
                                 " did:web documents", system=SYSTEM, reason="config:status_base_url")
        return parts.netloc


def _need_web(web: WebRoot | None, why: str) -> WebRoot:
    if web is None:
        raise PermanentError(f"{why} needs web_root and status_base_url in the tributary_did Connection's extra",
                             system=SYSTEM, reason="config:web_root")
    return web


class Issuance:
    """The steps for one request, on one warehouse connection (psycopg) and the two Connections."""

    def __init__(self, request: IssuanceRequest, conn: Any, store: KeyStore, config: ResolverConfig,
                 web: WebRoot | None, dwn: Any = None, allowed_issuers: tuple[str, ...] = ()) -> None:
        self.request = request
        self.allowed_issuers = tuple(allowed_issuers)  # the Connection's ``issuers`` extra
        self.conn = conn
        self.store = store
        self.config = config
        self.web = web
        self._dwn = dwn

    @cached_property
    def dwn(self) -> Any:
        if self._dwn is None:
            from tributary.dwn.hook import DwnHook

            self._dwn = DwnHook(self.request.dwn_conn_id)
        return self._dwn

    # ----------------------------------------------------------------- row
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any] | None]:
        """One transaction holding the request's advisory lock; yields its row (None before step 1)."""
        try:
            self._lock()
            row = self.row()
            if row is not None and row["params_sha256"] != self.request.fingerprint():
                raise PermanentError(f"request {self.request.request_id!r} was already made with other params",
                                     system=SYSTEM, reason="request_conflict")
            yield row
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _lock(self) -> None:
        """Take (again: library calls that commit release it) the request's transaction-scoped lock."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"did_issuance:{self.request.request_id}",))

    def row(self) -> dict[str, Any] | None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT * FROM did_issuance_requests WHERE request_id = %s", (self.request.request_id,))
            values = cur.fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, values, strict=True)) if values is not None else None

    def _update(self, **columns: Any) -> None:
        sets = ", ".join(f"{name} = %s" for name in columns)  # names are this module's, never input
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE did_issuance_requests SET {sets} WHERE request_id = %s",
                        (*columns.values(), self.request.request_id))

    def _advance(self, status: str, **columns: Any) -> None:
        """Move the row to ``status`` and stamp ``<status>_at``."""
        if status not in _STEPS:
            raise ValueError(status)
        self._update(**columns, status=status, **{f"{status}_at": datetime.now(UTC)})

    @staticmethod
    def _reached(row: dict[str, Any], status: str) -> bool:
        return _STEPS.index(row["status"]) >= _STEPS.index(status)

    def _require(self, row: dict[str, Any] | None, status: str) -> dict[str, Any]:
        if row is None or not self._reached(row, status):
            raise PermanentError(f"request {self.request.request_id!r} is not {status} yet", system=SYSTEM,
                                 reason="step_order")
        return row

    def _summary(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"request_id": row["request_id"], "did": row["subject_did"], "method": row["method"],
                "issuer": row["issuer"], "status": row["status"]}

    # ----------------------------------------------------------------- 1. subject DID
    def create_subject(self) -> dict[str, Any]:
        with self._locked() as row:
            if row is not None:
                return self._summary(row)
            if self.request.issuer:
                self.authorize_issuer(self.request.issuer)  # refused: no DID, no row, nothing anywhere
            portable = self._new_subject()
            with self.conn.cursor() as cur:
                cur.execute("INSERT INTO did_issuance_requests (request_id, params_sha256, method, subject_did,"
                            " credential_id) VALUES (%s, %s, %s, %s, %s)",
                            (self.request.request_id, self.request.fingerprint(), self.request.method, portable.uri,
                             f"urn:uuid:{uuid.uuid4()}"))
            self.store.save(portable, role="subject")  # commits the row and the sealed keys together
            return self._summary(self.row())

    def _new_subject(self) -> PortableDid:
        method = self.request.method
        if method == "web":
            web = _need_web(self.web, "a did:web subject")
            return create_did("web", host=web.host, path=f"{SUBJECTS_PATH}/{self.request.request_id}")
        if method == "dht":
            return create_did("dht", publish=False)  # published by publish_subject
        return create_did(method)

    # ----------------------------------------------------------------- 2. issuer
    def ensure_issuer(self) -> str:
        with self._locked() as row:
            row = self._require(row, "created")
            if row["issuer"]:
                return row["issuer"]
            issuer = self.request.issuer or self.deployment_issuer()
            self.authorize_issuer(issuer)
            self._update(issuer=issuer)
            return issuer

    def authorize_issuer(self, did: str) -> tuple[PortableDid, str]:
        """``(signer, kid)``: ``did`` with only the private key it may sign credentials with, and that key's
        verification method id; :class:`SecurityError` (``issuer_refused:<why>``) when it may not issue.

        Reads only: a refusal leaves nothing behind. See the module docstring for the rule.
        """
        def refuse(why: str, reason: str) -> SecurityError:
            return SecurityError(f"{did} may not issue credentials: {why}", system=SYSTEM,
                                 reason=f"issuer_refused:{reason}")

        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM did_issuance_requests WHERE subject_did = %s LIMIT 1", (did,))
            made_as_subject = cur.fetchone() is not None
        if made_as_subject or self.store.role(did) == "subject":
            raise refuse("it is the subject DID of an issuance request", "subject")
        if did not in self.allowed_issuers and not self.store.is_registered_issuer(did):
            raise refuse(f"not registered in did_issuers nor in the issuers of Connection {self.request.did_conn_id!r}",
                         "unregistered")
        try:
            portable = self.store.load(did)
        except PermanentError:
            raise refuse("its keys are not in the key store", "no_keys") from None
        found = portable.assertion_key()
        if found is None:
            raise refuse("none of its keys in the key store is listed under assertionMethod", "assertion_method")
        kid, key = found
        # load() gave keys of every role; the chosen one must not be a subject key (a DID with any subject key
        # was refused above, so this is the same rule checked on the key that signs)
        roles = {row["key_id"]: row["role"] for row in self.store.key_rows(did)}
        if roles.get(keys.thumbprint(key)) == "subject":
            raise refuse("its assertion key is a subject key", "subject")
        return PortableDid(portable.uri, portable.document, [key], portable.metadata), kid

    def deployment_issuer(self) -> str:
        """The issuer DID of the ``tributary_did`` Connection, created on first use and kept.

        did:web at ``<status_base_url>/issuers/<conn id>`` when the Connection has a web root (status lists need it
        anyway), else did:dht when it has a Pkarr relay, else did:jwk. An existing issuer is re-published
        if its document went missing.
        """
        conn_id = self.request.did_conn_id
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"did_issuers:{conn_id}",))
            cur.execute("SELECT did FROM did_issuers WHERE conn_id = %s", (conn_id,))
            found = cur.fetchone()
        if found is not None:
            self._ensure_published(found[0])
            return found[0]
        portable: PortableDid | None = None
        if self.web is not None:
            path = f"{ISSUERS_PATH}/{conn_id}"
            did = didweb.did_for(self.web.host, path)
            if not self._registered(did):  # kept in the registry but its did_issuers row lost: reuse it
                portable = create_did("web", host=self.web.host, path=path)
        elif self.config.pkarr_url:
            portable = create_did("dht", publish=False)
            did = portable.uri
        else:
            portable = create_did("jwk")
            did = portable.uri
        if portable is not None:
            self.store.save(portable, role="issuer", commit=False)
        # commits the did_issuers row with the sealed keys
        self.store.register_issuer(did, f"deployment issuer of Connection {conn_id}", conn_id=conn_id)
        self._lock()
        self._ensure_published(did)
        return did

    def _registered(self, did: str) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM did_registry WHERE did = %s", (did,))
            return cur.fetchone() is not None

    def _ensure_published(self, did: str) -> None:
        method = parse_did(did)[0]
        if method == "web" and self.web is not None:
            if not (self.web.path / didweb.relative_path(did)).exists():
                didweb.publish(self.store.load(did), self.web.path)
        elif method == "dht" and resolve(did, self.config)["didResolutionMetadata"].get("error") == "notFound":
            portable = self.store.load(did)
            seq = publish_dht(portable, self.config, seq=max(self.store.version(did) + 1,
                                                             int(datetime.now(UTC).timestamp() * 1e6)))
            self.store.save(portable, version=seq)
            self._lock()

    # ----------------------------------------------------------------- 3. publish
    def publish_subject(self) -> dict[str, Any]:
        with self._locked() as row:
            row = self._require(row, "created")
            if self._reached(row, "published"):
                return self._summary(row)
            did, method = row["subject_did"], row["method"]
            if method == "web":
                didweb.publish(self.store.load(did), _need_web(self.web, "a did:web subject").path)
            elif method == "dht":
                portable = self.store.load(did)
                self.store.save(portable, version=publish_dht(portable, self.config))
                self._lock()
            resolved = resolve(did, self.config)
            error = resolved["didResolutionMetadata"].get("error")
            if error or resolved["didDocument"]["id"] != did:
                raise PermanentError(f"{did} does not resolve after publishing ({error})", system=SYSTEM,
                                     reason=f"publish:{error or 'mismatch'}")
            self._advance("published")
            return self._summary({**row, "status": "published"})

    # ----------------------------------------------------------------- 4. credential
    def issue_credential(self) -> str | None:
        """The VC-JWT, or None when the DWN already holds this request's credential."""
        from tributary.vc.vcjwt import create_credential, issue_vc

        with self._locked() as row:
            row = self._require(row, "published")
            if self._reached(row, "stored"):
                return None
            if not row["issuer"]:
                raise PermanentError("no issuer chosen yet", system=SYSTEM, reason="step_order")
            # again here: a registration withdrawn or a document changed since the issuer was chosen counts
            issuer, kid = self.authorize_issuer(row["issuer"])
            status = self._status_entry(row, issuer) if self.request.with_status else None
            issued = datetime.now(UTC)
            expires = issued + timedelta(days=self.request.expiry_days) if self.request.expiry_days else None
            credential = create_credential(issuer.uri, {"id": row["subject_did"], **dict(self.request.claims or {})},
                                           types=[self.request.credential_type], credential_id=row["credential_id"],
                                           issued=issued, expires=expires, status=status)
            token = issue_vc(issuer, credential, kid=kid)
            self._advance("issued")
            return token

    def _status_entry(self, row: dict[str, Any], issuer: PortableDid) -> dict[str, Any]:
        """The request's revocation entry in the issuer's status list, allocated once per request id.

        The index is reserved in the caller's transaction, under the request's lock, together with the row
        that records it and the signed credential: a concurrent run of the same request waits for the lock
        and then finds the row's index; a failure before the commit spends no index.
        """
        from tributary.vc import status_list

        web = _need_web(self.web, "with_status (the status list credential is served from it)")
        list_id = f"did_issuance-{sha256_hex(issuer.uri)[:16]}"
        url_path = f"status/{list_id}.jwt"
        if row["status_list_id"] is None:
            # the list is shared by all of the issuer's requests; making it commits (and so drops the request's
            # lock), so the row is read again under the lock before an index is taken
            status_list.create_list(self.conn, list_id, issuer.uri, f"{web.base_url}/{url_path}")
            if not (web.path / url_path).exists():
                status_list.publish(self.conn, list_id, issuer, web.path, url_path)
            self._lock()
            row = self._require(self.row(), "published")
        if row["status_list_id"] is None:
            entry = status_list.allocate(self.conn, list_id, commit=False)
            self._update(status_list_id=list_id, status_index=int(entry["statusListIndex"]))
            return entry
        with self.conn.cursor() as cur:
            cur.execute("SELECT url, purpose FROM vc_status_lists WHERE list_id = %s", (row["status_list_id"],))
            url, purpose = cur.fetchone()
        return status_list.status_entry(url, row["status_index"], purpose)

    # ----------------------------------------------------------------- 5. DWN
    def store_in_dwn(self, token: str | None) -> dict[str, Any]:
        with self._locked() as row:
            row = self._require(row, "issued")
            if self._reached(row, "stored"):
                return self._records(row)
            if token is None:
                raise PermanentError("no credential to store", system=SYSTEM, reason="step_order")
            self.ensure_protocol()
            timestamp = _dwn_timestamp(row["created_at"])
            document = self._document(row["subject_did"])
            doc_id, _ = self._put_record(DID_DOCUMENT_PATH, DID_DOCUMENT_FORMAT, row,
                                         json.dumps(document, sort_keys=True).encode(), timestamp)
            cred_id, stored = self._put_record(CREDENTIAL_PATH, CREDENTIAL_FORMAT, row, token.encode(), timestamp)
            self._advance("stored", dwn_tenant=self.dwn.tenant, did_document_record_id=doc_id,
                          credential_record_id=cred_id, credential_sha256=hashlib.sha256(stored).hexdigest())
            return self._records({**row, "dwn_tenant": self.dwn.tenant, "did_document_record_id": doc_id,
                                  "credential_record_id": cred_id})

    def ensure_protocol(self) -> bool:
        """Configure :data:`PROTOCOL` on the tenant's DWN unless it already is (True when configured now)."""
        from tributary.dwn import messages as m
        from tributary.dwn.hook import DwnReplyError

        query = m.authorize({"interface": "Protocols", "method": "Query", "messageTimestamp": m.timestamp(),
                             "filter": {"protocol": PROTOCOL}}, self.dwn.signer)
        reply = self.dwn.read(lambda: self.dwn.process(query), "ProtocolsQuery")
        if reply.status != 200:
            raise DwnReplyError(reply.status, reply.detail, what="ProtocolsQuery")
        entries = reply.body.get("entries") or []
        if any(entry["descriptor"].get("definition") == PROTOCOL_DEFINITION for entry in entries):
            return False
        self.dwn.configure_protocol(PROTOCOL_DEFINITION)
        return True

    def _put_record(self, path: str, data_format: str, row: dict[str, Any], data: bytes,
                    timestamp: str) -> tuple[str, bytes]:
        """(record id, data) of this request's record at ``path``: the one already there, else ``data`` written.

        The record is looked up by its ``requestId`` tag first, so a write that reached the DWN before a
        crash is found again; the fixed timestamp makes a repeated write of the same bytes the same
        message (the DWN answers 409).
        """
        from tributary.dwn import messages as m

        tags = {"requestId": row["request_id"], "subject": row["subject_did"]}
        entries, _ = self.dwn.query_records({"protocol": PROTOCOL, "protocolPath": path,
                                             "tags": {"requestId": row["request_id"]}}, limit=1)
        if entries:
            found = self.dwn.read_record(entries[0]["recordId"])
            if found is not None:
                return entries[0]["recordId"], found[1]
        message = m.records_write(self.dwn.signer, data, data_format=data_format, protocol=PROTOCOL,
                                  protocol_path=path, tags=tags, message_timestamp=timestamp)
        self.dwn.write(message, data)
        return message["recordId"], data

    def _document(self, did: str) -> dict[str, Any]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT document FROM did_registry WHERE did = %s", (did,))
            document = cur.fetchone()[0]
        return document if isinstance(document, dict) else json.loads(document)

    @staticmethod
    def _records(row: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "tenant": row["dwn_tenant"], DID_DOCUMENT_PATH: row["did_document_record_id"],
                CREDENTIAL_PATH: row["credential_record_id"]}

    # ----------------------------------------------------------------- 6. result
    def complete(self) -> dict[str, Any]:
        """``{request_id, did, credential, dwn_records, issuer, replayed}``; the credential is read back from
        the DWN and must match the SHA-256 recorded when it was stored."""
        with self._locked() as row:
            row = self._require(row, "stored")
            replayed = row["status"] == "completed"
            token = self._read_back(row)
            if not replayed:
                self._advance("completed")
            return {"request_id": row["request_id"], "did": row["subject_did"], "credential": token,
                    "dwn_records": self._records(row), "issuer": row["issuer"], "replayed": replayed}

    def _read_back(self, row: dict[str, Any]) -> str:
        found = {}
        for path, column in ((DID_DOCUMENT_PATH, "did_document_record_id"), (CREDENTIAL_PATH, "credential_record_id")):
            found[path] = self.dwn.read_record(row[column])
            if found[path] is None:
                raise PermanentError(f"DWN record {path} of request {row['request_id']!r} is gone", system=SYSTEM,
                                     reason="dwn_record_missing")
        data = found[CREDENTIAL_PATH][1]
        if hashlib.sha256(data).hexdigest() != row["credential_sha256"]:
            raise SecurityError(f"the credential stored for {row['request_id']!r} changed", system=SYSTEM,
                                reason="credential_mismatch")
        return data.decode()


def _dwn_timestamp(moment: datetime) -> str:
    from tributary.dwn.messages import timestamp

    return timestamp(moment)


@contextmanager
def session(params: Mapping[str, Any]) -> Iterator[Issuance]:
    """An :class:`Issuance` for a run's params, on a warehouse session and the ``tributary_did``
    Connection's key store, resolver and web root. Each step commits its own transaction."""
    from tributary.did.hook import DidHook
    from tributary.storage.warehouse import WarehouseHook

    request = IssuanceRequest.from_params(params)
    hook = DidHook(request.did_conn_id)
    with WarehouseHook().session() as conn:
        yield Issuance(request, conn, hook.keystore(conn), hook.get_conn(), WebRoot.from_extra(hook.extra),
                       allowed_issuers=hook.allowed_issuers())
