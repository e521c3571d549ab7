"""did:dht (https://did-dht.com): a DID document as DNS TXT records, signed as a BEP44 mutable item.

The identifier is the z-base-32 of the Ed25519 identity key; the document travels as a DNS packet
(``_did.<id>.`` root record + ``_k<n>``, ``_s<n>``, ``_cnt``, ``_aka`` records) inside a Pkarr
payload ``sig(64) || seq(8, big-endian) || packet``, where ``sig`` is the identity key's Ed25519
signature over the bencoded ``3:seqi<seq>e1:v<len>:<packet>``. A relay/gateway stores it under
``PUT /<id>`` and returns it on ``GET /<id>``; every resolution re-checks the signature.

Key rotation: the identity key *is* the DID, so it cannot rotate; other keys rotate by publishing
a new packet with a higher ``seq`` (the relay refuses a lower one).
"""

from __future__ import annotations

import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tributary.did import keys
from tributary.did.document import (
    DID_CONTEXT,
    PortableDid,
    ResolutionError,
    parse_did,
    verification_method,
)
from tributary.did.encoding import b64url_decode, b64url_encode, zbase32_decode, zbase32_encode

TTL = 7200
KEY_TYPES = {"Ed25519": 0, "secp256k1": 1, "P-256": 2, "X25519": 3}
KEY_TYPE_NAMES = {v: k for k, v in KEY_TYPES.items()}
PURPOSE_TAGS = {"authentication": "auth", "assertionMethod": "asm", "keyAgreement": "agm",
                "capabilityInvocation": "inv", "capabilityDelegation": "del"}
TAG_PURPOSES = {v: k for k, v in PURPOSE_TAGS.items()}
MAX_PACKET = 1000  # BEP44: v is at most 1000 bytes


def did_from_identity(jwk: keys.Jwk) -> str:
    return "did:dht:" + zbase32_encode(keys.public_bytes(jwk))


def identity_key(did: str) -> keys.Jwk:
    method, value = parse_did(did)
    if method != "dht":
        raise ResolutionError("methodNotSupported", method)
    try:
        raw = zbase32_decode(value)
    except ValueError as exc:
        raise ResolutionError("invalidPublicKey", str(exc)) from exc
    if len(raw) != 32 or zbase32_encode(raw) != value:
        raise ResolutionError("invalidPublicKey", "the identifier is not a 32-byte Ed25519 key")
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw), "alg": "EdDSA"}


def build_document(identity: keys.Jwk, *, additional: list[dict[str, Any]] = (),
                   services: list[dict[str, Any]] = (), controller: list[str] | None = None,
                   also_known_as: list[str] | None = None) -> dict[str, Any]:
    """The document of the identity key plus ``additional`` [{jwk, purposes}] and ``services``."""
    did = did_from_identity(identity)
    pub = {k: v for k, v in keys.public_jwk(identity).items() if k in ("kty", "crv", "x", "alg")}
    pub.setdefault("alg", "EdDSA")
    doc: dict[str, Any] = {"id": did}
    if controller:
        doc["controller"] = list(controller)
    if also_known_as:
        doc["alsoKnownAs"] = list(also_known_as)
    methods = [verification_method(did, "0", pub)]
    purposes = {p: [methods[0]["id"]] for p in ("authentication", "assertionMethod", "capabilityInvocation",
                                                 "capabilityDelegation")}
    for extra in additional:
        jwk = {k: v for k, v in keys.public_jwk(extra["jwk"]).items() if k in ("kty", "crv", "x", "y", "alg")}
        jwk.setdefault("alg", keys.DEFAULT_ALG.get(jwk["crv"], "EdDSA"))
        vm = verification_method(did, extra.get("id") or keys.thumbprint(jwk), jwk)
        methods.append(vm)
        for purpose in extra.get("purposes", ()):
            purposes.setdefault(purpose, []).append(vm["id"])
    doc["verificationMethod"] = methods
    for purpose in ("authentication", "assertionMethod", "keyAgreement", "capabilityInvocation",
                    "capabilityDelegation"):
        if purposes.get(purpose):
            doc[purpose] = purposes[purpose]
    if services:
        doc["service"] = [{**s, "id": f"{did}#{s['id'].split('#')[-1]}"} for s in services]
    return doc


def create(*, additional: list[dict[str, Any]] = (), services: list[dict[str, Any]] = (),
           identity_private: keys.Jwk | None = None) -> PortableDid:
    identity = identity_private or keys.generate("Ed25519")
    doc = build_document(identity, additional=additional, services=services)
    private = [identity, *[a["jwk"] for a in additional if "d" in a["jwk"]]]
    return PortableDid(doc["id"], doc, private)


# ----------------------------------------------------------------------------- DNS packet
def _txt(name: str, text: str) -> dns.rrset.RRset:
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    rdata = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return dns.rrset.from_text(name, TTL, dns.rdataclass.IN, dns.rdatatype.TXT, rdata)


def _fragment(method_id: str) -> str:
    return method_id.split("#", 1)[1]


def to_packet(document: dict[str, Any]) -> bytes:
    did = document["id"]
    ident = parse_did(did)[1]
    message = dns.message.Message(id=0)
    message.flags = dns.flags.QR | dns.flags.AA
    index_of: dict[str, str] = {}
    records: list[dns.rrset.RRset] = []
    for n, vm in enumerate(document.get("verificationMethod") or []):
        jwk = vm["publicKeyJwk"]
        tag = f"k{n}"
        index_of[vm["id"]] = tag
        crv = jwk["crv"]
        text = f"id={_fragment(vm['id'])};t={KEY_TYPES[crv]};k={b64url_encode(keys.public_bytes(jwk))}"
        if jwk.get("alg") and jwk["alg"] != keys.DEFAULT_ALG.get(crv):
            text += f";a={jwk['alg']}"
        if vm.get("controller") and vm["controller"] != did:
            text += f";c={vm['controller']}"
        records.append(_txt(f"_{tag}._did.", text))
    services = document.get("service") or []
    for n, svc in enumerate(services):
        endpoint = svc["serviceEndpoint"]
        endpoint = ",".join(endpoint) if isinstance(endpoint, list) else str(endpoint)
        records.append(_txt(f"_s{n}._did.", f"id={_fragment(svc['id'])};t={svc['type']};se={endpoint}"))
    root = ["v=0", "vm=" + ",".join(index_of.values())]
    for purpose, tag in PURPOSE_TAGS.items():
        refs = [index_of[r] for r in document.get(purpose) or [] if r in index_of]
        if refs:
            root.append(f"{tag}=" + ",".join(refs))
    if services:
        root.append("svc=" + ",".join(f"s{n}" for n in range(len(services))))
    message.answer.append(_txt(f"_did.{ident}.", ";".join(root)))
    if document.get("controller"):
        message.answer.append(_txt("_cnt._did.", ",".join(document["controller"])))
    if document.get("alsoKnownAs"):
        message.answer.append(_txt("_aka._did.", ",".join(document["alsoKnownAs"])))
    message.answer.extend(records)
    return message.to_wire()


def _fields(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def from_packet(did: str, packet: bytes) -> dict[str, Any]:
    ident = parse_did(did)[1]
    try:
        message = dns.message.from_wire(packet)
    except Exception as exc:  # dnspython raises many types for a malformed packet
        raise ResolutionError("invalidDidDocument", f"malformed DNS packet: {exc}") from exc
    txt: dict[str, str] = {}
    for rrset in message.answer:
        if rrset.rdtype != dns.rdatatype.TXT:
            continue
        name = rrset.name.to_text()
        txt[name] = "".join(b.decode() for b in rrset[0].strings)
    root = txt.get(f"_did.{ident}.")
    if root is None:
        raise ResolutionError("invalidDidDocument", "no _did root record")
    fields = _fields(root)
    doc: dict[str, Any] = {"id": did}
    if "_cnt._did." in txt:
        doc["controller"] = txt["_cnt._did."].split(",")
    if "_aka._did." in txt:
        doc["alsoKnownAs"] = txt["_aka._did."].split(",")
    ids: dict[str, str] = {}
    methods = []
    for tag in filter(None, fields.get("vm", "").split(",")):
        record = _fields(txt[f"_{tag}._did."])
        crv = KEY_TYPE_NAMES[int(record["t"])]
        jwk = keys.public_jwk_from_bytes(crv, b64url_decode(record["k"]))
        jwk["alg"] = record.get("a") or keys.DEFAULT_ALG.get(crv, "")
        vm = verification_method(did, record["id"], jwk)
        if record.get("c"):
            vm["controller"] = record["c"]
        ids[tag] = vm["id"]
        methods.append(vm)
    if methods:
        doc["verificationMethod"] = methods
    for purpose, tag in PURPOSE_TAGS.items():
        if fields.get(tag):
            doc[purpose] = [ids[t] for t in fields[tag].split(",")]
    services = []
    for tag in filter(None, fields.get("svc", "").split(",")):
        record = _fields(txt[f"_{tag}._did."])
        endpoints = record["se"].split(",")
        services.append({"id": f"{did}#{record['id']}", "type": record["t"],
                         "serviceEndpoint": endpoints})  # DNS cannot tell one endpoint from a list of one
    if services:
        doc["service"] = services
    return doc


# ----------------------------------------------------------------------------- BEP44 / Pkarr
def bep44_signable(seq: int, value: bytes) -> bytes:
    return f"3:seqi{seq}e1:v{len(value)}:".encode() + value


def sign_payload(identity_private: keys.Jwk, packet: bytes, seq: int | None = None) -> bytes:
    """The Pkarr relay body ``sig || seq || v`` (``seq`` defaults to now in microseconds)."""
    if len(packet) > MAX_PACKET:
        raise ValueError(f"DNS packet of {len(packet)} bytes exceeds the BEP44 limit of {MAX_PACKET}")
    seq = int(time.time() * 1_000_000) if seq is None else seq
    signature = keys.sign(identity_private, bep44_signable(seq, packet))
    return signature + seq.to_bytes(8, "big") + packet


def open_payload(did: str, body: bytes) -> tuple[int, bytes]:
    """Check a relay body against the DID's identity key; ``(seq, packet)`` or ``ResolutionError``."""
    if len(body) < 72:
        raise ResolutionError("invalidSignature", "payload shorter than signature + seq")
    signature, seq, packet = body[:64], int.from_bytes(body[64:72], "big"), body[72:]
    if not keys.verify(identity_key(did), bep44_signable(seq, packet), signature):
        raise ResolutionError("invalidSignature", "the BEP44 signature does not match the identity key")
    return seq, packet


def resolve_payload(did: str, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    seq, packet = open_payload(did, body)
    doc = from_packet(did, packet)
    return {"@context": [DID_CONTEXT], **doc}, {"versionId": str(seq)}
