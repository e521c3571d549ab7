"""DWN messages (dwn-sdk-js 0.5.2 shapes): descriptors, general-JWS authorization, verification, ordering.

Every message is ``{descriptor, authorization: {signature: GeneralJWS}}``. The JWS payload is JSON:
``{descriptorCid}`` for most messages; for RecordsWrite ``{recordId, descriptorCid[, contextId]}``.
The protected header is ``{"kid": "<did>#<key>", "alg": "EdDSA"}`` and the signing input is
``b64url(protected) + "." + payload`` (RFC 7515). ``recordId`` of a record is its *entry id*: the CID
of the initial write's descriptor plus ``author``. Pure code: no Airflow, no network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tributary.core.errors import SecurityError
from tributary.dwn import SYSTEM
from tributary.dwn.cid import compute_cid, compute_data_cid
from tributary.dwn.identity import DidKey, b64url, b64url_decode, verify

ALGORITHM = "EdDSA"
# dwn-sdk-js sends encodedData with query replies up to this size (DwnConstant.maxDataSizeAllowedToBeEncoded)
MAX_ENCODED_DATA = 30_000


def timestamp(moment: datetime | None = None) -> str:
    """An ISO-8601 UTC timestamp with microseconds, as ``Time.getCurrentTimestamp()`` writes it."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def sign_payload(payload: Mapping[str, Any], signer: DidKey) -> dict[str, Any]:
    """A general JWS (one signature) over the JSON ``payload``."""
    body = b64url(json.dumps(dict(payload), separators=(",", ":")).encode())
    protected = b64url(json.dumps({"kid": signer.key_id, "alg": ALGORITHM}, separators=(",", ":")).encode())
    signature = signer.sign(f"{protected}.{body}".encode("ascii"))
    return {"payload": body, "signatures": [{"protected": protected, "signature": b64url(signature)}]}


def authorize(descriptor: Mapping[str, Any], signer: DidKey) -> dict[str, Any]:
    return {"descriptor": dict(descriptor),
            "authorization": {"signature": sign_payload({"descriptorCid": compute_cid(dict(descriptor))}, signer)}}


def message_cid(message: Mapping[str, Any]) -> str:
    """``Message.getCid``: the CID of the message without ``encodedData``."""
    return compute_cid({k: v for k, v in message.items() if k != "encodedData"})


def strip_reply_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A RecordsQuery reply entry without what the server adds (``encodedData``, ``initialWrite``)."""
    return {k: v for k, v in entry.items() if k not in ("encodedData", "initialWrite")}


def flat_protocol(uri: str, path: str = "record",
                  data_formats: tuple[str, ...] = ("application/json", "application/jose+json")) -> dict[str, Any]:
    """A one-level published protocol definition: records of one type at ``path``."""
    return {"protocol": uri, "published": True, "types": {path: {"dataFormats": list(data_formats)}},
            "structure": {path: {}}}


def entry_id(author: str, descriptor: Mapping[str, Any]) -> str:
    return compute_cid({**descriptor, "author": author})


# --------------------------------------------------------------------------- builders
def records_write(signer: DidKey, data: bytes, *, data_format: str = "application/json",
                  protocol: str | None = None, protocol_path: str | None = None, schema: str | None = None,
                  recipient: str | None = None, tags: Mapping[str, Any] | None = None, published: bool | None = None,
                  parent_context_id: str | None = None, previous: Mapping[str, Any] | None = None,
                  message_timestamp: str | None = None) -> dict[str, Any]:
    """A signed RecordsWrite for ``data``; with ``previous`` (a RecordsWrite of the record) an update."""
    now = message_timestamp or timestamp()
    if previous is not None:
        old = previous["descriptor"]
        immutable = {k: old.get(k) for k in ("protocol", "protocolPath", "recipient", "schema", "parentId",
                                             "dateCreated")}
        descriptor = _clean({"interface": "Records", "method": "Write", **immutable,
                             "tags": dict(tags) if tags is not None else None,
                             "dataCid": compute_data_cid(data), "dataSize": len(data), "messageTimestamp": now,
                             "published": old.get("published") if published is None else published,
                             "datePublished": old.get("datePublished"), "dataFormat": data_format})
        record_id, context_id = previous["recordId"], previous.get("contextId")
    else:
        descriptor = _clean({"interface": "Records", "method": "Write", "protocol": protocol,
                             "protocolPath": protocol_path, "recipient": recipient, "schema": schema,
                             "tags": dict(tags) if tags is not None else None,
                             "parentId": parent_context_id.split("/")[-1] if parent_context_id else None,
                             "dataCid": compute_data_cid(data), "dataSize": len(data), "dateCreated": now,
                             "messageTimestamp": now, "published": published,
                             "datePublished": now if published else None, "dataFormat": data_format})
        record_id = entry_id(signer.did, descriptor)
        context_id = None
        if protocol is not None:
            context_id = f"{parent_context_id}/{record_id}" if parent_context_id else record_id
    payload = _clean({"recordId": record_id, "descriptorCid": compute_cid(descriptor), "contextId": context_id})
    message: dict[str, Any] = {"recordId": record_id, "descriptor": descriptor}
    if context_id is not None:
        message["contextId"] = context_id
    message["authorization"] = {"signature": sign_payload(payload, signer)}
    return message


def records_query(signer: DidKey, filter: Mapping[str, Any], *, limit: int | None = None,
                  cursor: Mapping[str, Any] | None = None, date_sort: str | None = None) -> dict[str, Any]:
    pagination = _clean({"limit": limit, "cursor": dict(cursor) if cursor else None}) or None
    return authorize(_clean({"interface": "Records", "method": "Query", "messageTimestamp": timestamp(),
                             "filter": dict(filter), "dateSort": date_sort, "pagination": pagination}), signer)


def records_read(signer: DidKey, record_id: str) -> dict[str, Any]:
    return authorize({"interface": "Records", "method": "Read", "filter": {"recordId": record_id},
                      "messageTimestamp": timestamp()}, signer)


def records_delete(signer: DidKey, record_id: str, *, prune: bool = False,
                   message_timestamp: str | None = None) -> dict[str, Any]:
    return authorize({"interface": "Records", "method": "Delete", "messageTimestamp": message_timestamp or timestamp(),
                      "recordId": record_id, "prune": prune}, signer)


def protocols_configure(signer: DidKey, definition: Mapping[str, Any]) -> dict[str, Any]:
    return authorize({"interface": "Protocols", "method": "Configure", "messageTimestamp": timestamp(),
                      "definition": dict(definition)}, signer)


def messages_query(signer: DidKey, filters: list[Mapping[str, Any]],
                   cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return authorize(_clean({"interface": "Messages", "method": "Query", "filters": [dict(f) for f in filters],
                             "messageTimestamp": timestamp(), "cursor": dict(cursor) if cursor else None}), signer)


def messages_read(signer: DidKey, cid: str) -> dict[str, Any]:
    return authorize({"interface": "Messages", "method": "Read", "messageCid": cid,
                      "messageTimestamp": timestamp()}, signer)


# --------------------------------------------------------------------------- verification
def author_of(message: Mapping[str, Any]) -> str:
    """The DID in the (single) signature's ``kid``."""
    try:
        signature = message["authorization"]["signature"]["signatures"][0]
        header = json.loads(b64url_decode(signature["protected"]))
        return str(header["kid"]).split("#", 1)[0]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SecurityError("message has no readable signature", system=SYSTEM, reason="dwn:no_signature") from exc


def verify_message(message: Mapping[str, Any], data: bytes | None = None) -> str:
    """Check a message as a DWN would before trusting it; returns the author DID.

    The JWS must verify with the author's did:key (EdDSA), its payload's ``descriptorCid`` must be the
    CID of the descriptor, a RecordsWrite's ``recordId``/``contextId`` must match the payload (and the
    entry id when it is the initial write), and ``data``, when given, must match ``dataCid``/``dataSize``.
    Any mismatch raises :class:`SecurityError`.
    """
    def fail(reason: str, text: str) -> SecurityError:
        return SecurityError(f"DWN message failed verification: {text}", system=SYSTEM, reason=f"dwn:{reason}")

    author = author_of(message)
    jws = message["authorization"]["signature"]
    if len(jws.get("signatures", [])) != 1:
        raise fail("signatures", "exactly one signature expected")
    entry = jws["signatures"][0]
    try:
        header = json.loads(b64url_decode(entry["protected"]))
        payload = json.loads(b64url_decode(jws["payload"]))
        signature = b64url_decode(entry["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise fail("malformed_jws", str(exc)) from exc
    if header.get("alg") != ALGORITHM:
        raise fail("alg", f"unsupported alg {header.get('alg')!r}")
    if not verify(author, f"{entry['protected']}.{jws['payload']}".encode("ascii"), signature):
        raise fail("signature", f"signature of {author} does not verify")
    descriptor = message["descriptor"]
    if payload.get("descriptorCid") != compute_cid(descriptor):
        raise fail("descriptor_cid", "descriptor does not match the signed descriptorCid")
    if descriptor.get("interface") == "Records" and descriptor.get("method") == "Write":
        if payload.get("recordId") != message.get("recordId") or payload.get("contextId") != message.get("contextId"):
            raise fail("record_id", "recordId/contextId differ from the signed ones")
        if data is not None and (len(data) != descriptor.get("dataSize")
                                 or compute_data_cid(data) != descriptor.get("dataCid")):
            raise fail("data_cid", "data does not match the signed dataCid/dataSize")
    return author


def is_initial_write(message: Mapping[str, Any]) -> bool:
    return message.get("recordId") == entry_id(author_of(message), message["descriptor"])


# --------------------------------------------------------------------------- ordering
def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Newest-wins order of the DWN spec (``Message.compareMessageTimestamp``): the later
    ``messageTimestamp`` is newer; on a tie the lexicographically larger message CID wins."""
    ta, tb = a["descriptor"]["messageTimestamp"], b["descriptor"]["messageTimestamp"]
    if ta != tb:
        return 1 if ta > tb else -1
    ca, cb = message_cid(a), message_cid(b)
    return (ca > cb) - (ca < cb)


def newest(messages: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    best: Mapping[str, Any] | None = None
    for message in messages:
        if best is None or compare(message, best) > 0:
            best = message
    return best
