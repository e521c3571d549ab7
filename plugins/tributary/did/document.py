"""DID documents, resolution results and the portable form of a DID with its private keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tributary.did.keys import Jwk, public_jwk, thumbprint

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
RESOLUTION_CONTEXT = "https://w3id.org/did-resolution/v1"
SIGNING_PURPOSES = ("authentication", "assertionMethod", "capabilityInvocation", "capabilityDelegation")
DID_PATTERN = re.compile(r"^did:([a-z0-9]+):([A-Za-z0-9._:%-]+)$")


class ResolutionError(Exception):
    """A DID resolution failure with its DID Core error code (invalidDid, notFound, ...)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


def parse_did(uri: str) -> tuple[str, str]:
    """``(method, method-specific id)`` of a DID (fragment and query removed)."""
    did = uri.split("#", 1)[0].split("?", 1)[0] if isinstance(uri, str) else ""
    match = DID_PATTERN.match(did)
    if not match:
        raise ResolutionError("invalidDid", f"not a DID: {uri!r:.80}")
    return match.group(1), match.group(2)


def verification_method(did: str, fragment: str, jwk: Jwk, vm_type: str = "JsonWebKey") -> dict[str, Any]:
    return {"id": f"{did}#{fragment}", "type": vm_type, "controller": did, "publicKeyJwk": public_jwk(jwk)}


def signing_document(did: str, methods: list[dict[str, Any]], *, context: bool = True,
                     purposes: tuple[str, ...] = SIGNING_PURPOSES) -> dict[str, Any]:
    """A document whose verification methods all serve every signing purpose."""
    doc: dict[str, Any] = {"@context": [DID_CONTEXT]} if context else {}
    doc["id"] = did
    doc["verificationMethod"] = methods
    for purpose in purposes:
        doc[purpose] = [m["id"] for m in methods]
    return doc


def resolution_result(document: dict[str, Any] | None, *, error: str | None = None,
                      metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"@context": RESOLUTION_CONTEXT, "didDocument": document,
            "didDocumentMetadata": metadata or {},
            "didResolutionMetadata": {"error": error} if error else {}}


def find_method(document: dict[str, Any], kid: str) -> dict[str, Any] | None:
    """The verification method ``kid`` (absolute ``did#frag`` or relative ``#frag``) of ``document``."""
    did = document.get("id", "")
    wanted = f"{did}{kid}" if kid.startswith("#") else kid
    for method in document.get("verificationMethod") or []:
        mid = method.get("id", "")
        if (f"{did}{mid}" if mid.startswith("#") else mid) == wanted:
            return method
    return None


def method_has_purpose(document: dict[str, Any], method_id: str, purpose: str) -> bool:
    did = document.get("id", "")
    for ref in document.get(purpose) or []:
        ref_id = ref.get("id") if isinstance(ref, dict) else ref
        if isinstance(ref_id, str) and (f"{did}{ref_id}" if ref_id.startswith("#") else ref_id) == method_id:
            return True
    return False


@dataclass
class PortableDid:
    """A DID with its document and private keys (the Web5 ``PortableDid`` shape)."""

    uri: str
    document: dict[str, Any]
    private_keys: list[Jwk] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return parse_did(self.uri)[0]

    def signing_key(self, kid: str | None = None) -> tuple[str, Jwk]:
        """``(verification method id, private JWK)``: the given key, else the first assertion key."""
        by_thumb = {k.get("kid"): k for k in self.private_keys}
        refs = self.document.get("assertionMethod") or self.document.get("verificationMethod") or []
        candidates = [kid] if kid else [r if isinstance(r, str) else r["id"] for r in refs]
        from tributary.did.keys import thumbprint

        for ref in candidates:
            method = find_method(self.document, ref)
            if method is None:
                continue
            tp = thumbprint(method["publicKeyJwk"])
            key = by_thumb.get(tp) or next((k for k in self.private_keys if thumbprint(k) == tp), None)
            if key is not None:
                mid = method["id"]
                return (f"{self.uri}{mid}" if mid.startswith("#") else mid), key
        raise ValueError(f"{self.uri}: no private key for an assertion method")

    def assertion_key(self) -> tuple[str, Jwk] | None:
        """``(verification method id, private JWK)`` of the first key listed under ``assertionMethod`` whose
        private key is held, or None. Unlike :meth:`signing_key` there is no fallback to other verification
        methods: a verifier accepts a credential only from an assertion method."""
        by_thumb = {thumbprint(k): k for k in self.private_keys}
        for ref in self.document.get("assertionMethod") or []:
            if not isinstance(ref, str):
                continue  # an embedded method has no id in verificationMethod to sign as (signing_key agrees)
            method = find_method(self.document, ref)
            try:
                key = by_thumb.get(thumbprint(method["publicKeyJwk"])) if method is not None else None
            except (KeyError, TypeError):  # a malformed public key signs nothing
                key = None
            if key is not None:
                mid = method["id"]
                return (f"{self.uri}{mid}" if mid.startswith("#") else mid), key
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "document": self.document, "privateKeys": self.private_keys,
                "metadata": self.metadata}

    @classmethod
    def from_dict(cls, value: Any) -> PortableDid:
        """Parse the Web5 ``PortableDid`` JSON; ``ValueError`` when a member is missing."""
        if not isinstance(value, dict):
            raise ValueError("a portable DID is a JSON object")
        for member in ("uri", "privateKeys", "document", "metadata"):
            if member not in value:
                raise ValueError(f"portable DID without {member!r}")
        parse_did(value["uri"])
        if not isinstance(value["privateKeys"], list) or not isinstance(value["document"], dict):
            raise ValueError("privateKeys must be a list and document an object")
        return cls(value["uri"], value["document"], list(value["privateKeys"]), dict(value["metadata"]))
