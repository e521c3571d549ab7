"""DWN JSON-RPC over HTTP (``@web5/dwn-server``): records, protocols and the event log of one tenant.

Every call is ``POST /`` with the JSON-RPC request ``dwn.processMessage {target, message}`` in the
``dwn-request`` header and the record data, if any, as the ``application/octet-stream`` body (the
server README's "transporting large amounts of data"). A reply that carries data (RecordsRead,
MessagesRead) comes back the same way: JSON-RPC response in ``dwn-response``, data as the body.

Reply status codes are classified here: 401 -> security; 400 -> data (security when the detail names a
signature, descriptor-CID or data-CID mismatch); 5xx, JSON-RPC internal errors, connection failures
and timeouts -> transient. 404 and 409 are answers callers handle (``NotFound``/``Conflict``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from tributary.core.errors import (
    DataError,
    ErrorClass,
    PermanentError,
    SecurityError,
    TransientError,
    TributaryError,
)
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.dwn import SYSTEM
from tributary.dwn import messages as m
from tributary.dwn.identity import DidKey

# dwn-sdk-js error codes (DwnErrorCode) that mean "this message was tampered with or mis-signed"
INTEGRITY_CODES = ("AuthenticateDescriptorCidMismatch", "GeneralJwsVerifierInvalidSignature",
                   "RecordsWriteDataCidMismatch", "RecordsWriteDataSizeMismatch", "RecordsWriteSignature",
                   "RecordsWriteValidateIntegrity", "AuthenticateJwsMissing", "AuthenticationMoreThanOneSignature")


class DwnReplyError(TributaryError):
    """A DWN reply status that is a failure; the status decides the class."""

    def __init__(self, status: int, detail: str, *, what: str) -> None:
        super().__init__(f"DWN {what}: {status} {detail}"[:2000], system=SYSTEM, reason=f"dwn:{status}")
        self.status = status
        self.detail = detail
        if status == 401 or any(code in detail for code in INTEGRITY_CODES):
            self.error_class = ErrorClass.SECURITY
        elif status >= 500:
            self.error_class = ErrorClass.TRANSIENT
        elif status == 400:
            self.error_class = ErrorClass.DATA
        else:
            self.error_class = ErrorClass.PERMANENT


@dataclass(frozen=True)
class Reply:
    status: int
    detail: str
    body: dict[str, Any]
    data: bytes | None = None



class DwnHook(TributaryHook):
    """Talks to a Decentralized Web Node from a ``tributary_dwn`` Connection.

    Connection fields: ``host`` the DWN URL (``http://127.0.0.1:3001``); ``password`` the tenant's
    Ed25519 private key, 64 hex chars or a private JWK (``{"kty":"OKP","crv":"Ed25519","d":..,"x":..}``):
    masked, used only to sign inside the task, never returned or put in XCom. Extra:

    * ``tenant``   the tenant DID (``did:key:z6Mk...``); default: the DID of the key in ``password``
    * ``timeout``  seconds per HTTP request (default 30)
    """

    default_conn_name = "tributary_dwn"
    conn_type = "tributary_dwn"
    hook_name = "Tributary: Decentralized Web Node"
    system = SYSTEM
    default_timeout: ClassVar[float] = 30.0

    # ----------------------------------------------------------------- settings
    @cached_property
    def base_url(self) -> str:
        return self.http_base_url()

    @cached_property
    def signer(self) -> DidKey:
        secret = self.connection.password or ""
        if not secret:
            raise PermanentError(f"connection {self.conn_id!r}: password (tenant private key) is empty",
                                 system=self.system, reason="config:private_key")
        mask_secret(secret)
        key = DidKey.from_secret(secret)
        if self.extra.get("tenant") and self.extra["tenant"] != key.did:
            raise PermanentError(f"connection {self.conn_id!r}: the key is not the tenant's ({key.did})",
                                 system=self.system, reason="config:tenant")
        return key

    @property
    def tenant(self) -> str:
        return str(self.extra.get("tenant") or self.signer.did)

    @cached_property
    def session(self) -> Any:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()  # shared by replication's worker threads: a pool per worker
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=16))
        session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=16))
        return session

    def get_conn(self) -> Any:
        return self.session

    def probe(self) -> str:
        info = self.read(lambda: self._get("/info"), "info")
        return f"{info.get('server')} {info.get('version')} (dwn-sdk-js {info.get('sdkVersion')}) at {self.base_url}"

    # ----------------------------------------------------------------- transport
    def _get(self, path: str) -> dict[str, Any]:
        import requests

        try:
            response = self.session.get(self.base_url + path, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"DWN {self.base_url} unreachable: {type(exc).__name__}", system=self.system,
                                 reason="network") from exc
        if response.status_code >= 500:
            raise TransientError(f"DWN {path}: HTTP {response.status_code}", system=self.system,
                                 reason=f"http:{response.status_code}")
        response.raise_for_status()
        return response.json()

    def process(self, message: Mapping[str, Any], data: bytes | None = None, *, target: str | None = None) -> Reply:
        """``dwn.processMessage``; returns the reply (any status) and its data, if the reply carries some."""
        import requests

        request = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "dwn.processMessage",
                   "params": {"target": target or self.tenant, "message": dict(message)}}
        headers = {"dwn-request": json.dumps(request, separators=(",", ":"))}
        if data is not None:
            headers["content-type"] = "application/octet-stream"
        what = f"{message['descriptor'].get('interface')}{message['descriptor'].get('method')}"
        try:
            response = self.session.post(self.base_url + "/", data=data if data is not None else b"",
                                         headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"DWN {self.base_url} unreachable ({what}): {type(exc).__name__}",
                                 system=self.system, reason="network") from exc
        header = response.headers.get("dwn-response")
        try:
            body = json.loads(header) if header else response.json()
        except ValueError as exc:
            if response.status_code >= 500:
                raise TransientError(f"DWN {what}: HTTP {response.status_code}", system=self.system,
                                     reason=f"http:{response.status_code}") from exc
            raise DataError(f"DWN {what}: HTTP {response.status_code}, body is not JSON", system=self.system,
                            reason="dwn:malformed_response") from exc
        if body.get("error"):
            error = body["error"]
            status = 500 if response.status_code >= 500 or error.get("code") == -32603 else 400
            raise DwnReplyError(status, str(error.get("message", "")), what=what)
        if response.status_code >= 500:
            raise DwnReplyError(response.status_code, "server error", what=what)
        reply = body.get("result", {}).get("reply", {})
        status = reply.get("status", {})
        return Reply(int(status.get("code", 0)), str(status.get("detail", "")), reply,
                     response.content if header else None)

    def _ok(self, reply: Reply, what: str, ok: tuple[int, ...] = (200, 202, 204)) -> Reply:
        if reply.status not in ok:
            raise DwnReplyError(reply.status, reply.detail, what=what)
        return reply

    # ----------------------------------------------------------------- records
    def write(self, message: Mapping[str, Any], data: bytes | None) -> Reply:
        """Send a (possibly foreign, already signed) RecordsWrite; 409 (an equal or newer one is there) is
        returned, other failures raise."""
        return self._ok(self.process(message, data), "RecordsWrite", (202, 204, 409))

    def write_record(self, data: bytes, **options: Any) -> dict[str, Any]:
        """Create (or with ``previous=`` update) a record signed by the tenant; returns the message."""
        message = m.records_write(self.signer, data, **options)
        self._ok(self.process(message, data), "RecordsWrite", (202,))
        return message

    def query_records(self, filter: Mapping[str, Any], *, limit: int | None = None,
                      cursor: Mapping[str, Any] | None = None,
                      date_sort: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page: (entries, cursor for the next page or None). Entries carry ``encodedData`` when
        the data is at most 30,000 bytes."""
        message = m.records_query(self.signer, filter, limit=limit, cursor=cursor, date_sort=date_sort)
        reply = self._ok(self.read(lambda: self.process(message), "RecordsQuery"), "RecordsQuery", (200,))
        return list(reply.body.get("entries") or []), reply.body.get("cursor")

    def iter_records(self, filter: Mapping[str, Any], *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        cursor: dict[str, Any] | None = None
        while True:
            entries, cursor = self.query_records(filter, limit=page_size, cursor=cursor)
            yield from entries
            if not cursor:
                return

    def read_record(self, record_id: str) -> tuple[dict[str, Any], bytes] | None:
        """(the latest RecordsWrite, its data) or None when the record does not exist or was deleted."""
        message = m.records_read(self.signer, record_id)
        reply = self.read(lambda: self.process(message), "RecordsRead")
        if reply.status == 404:
            return None
        self._ok(reply, "RecordsRead", (200,))
        return reply.body["entry"]["recordsWrite"], reply.data or b""

    def delete_record(self, record_id: str, *, prune: bool = False) -> dict[str, Any]:
        message = m.records_delete(self.signer, record_id, prune=prune)
        self._ok(self.process(message), "RecordsDelete", (202,))
        return message

    def configure_protocol(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        message = m.protocols_configure(self.signer, definition)
        self._ok(self.process(message), "ProtocolsConfigure", (202,))
        return message

    # ----------------------------------------------------------------- event log
    def query_messages(self, filters: list[Mapping[str, Any]],
                       cursor: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, Any] | None]:
        """MessagesQuery: CIDs of the tenant's event log after ``cursor``, oldest first, and the new cursor."""
        message = m.messages_query(self.signer, filters, cursor)
        reply = self._ok(self.read(lambda: self.process(message), "MessagesQuery"), "MessagesQuery", (200,))
        return list(reply.body.get("entries") or []), reply.body.get("cursor")

    def read_message(self, cid: str) -> tuple[dict[str, Any], bytes | None] | None:
        """MessagesRead: (message, data or None); None when the message is gone (404)."""
        message = m.messages_read(self.signer, cid)
        reply = self.read(lambda: self.process(message), "MessagesRead")
        if reply.status == 404:
            return None
        self._ok(reply, "MessagesRead", (200,))
        entry = reply.body["entry"]
        return entry["message"], reply.data

    def send(self, message: Mapping[str, Any], data: bytes | None = None) -> Reply:
        """Replay a signed message of any kind (replication); 409 and 404 are returned, not raised."""
        what = f"{message['descriptor'].get('interface')}{message['descriptor'].get('method')}"
        return self._ok(self.process(message, data), what, (200, 202, 204, 404, 409))


__all__ = ["DwnHook", "DwnReplyError", "Reply", "SecurityError"]
