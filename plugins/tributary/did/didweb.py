"""did:web (https://w3c-ccg.github.io/did-method-web/): a document served over HTTPS.

``did:web:example.com`` -> ``https://example.com/.well-known/did.json``;
``did:web:example.com%3A3000:user:alice`` -> ``https://example.com:3000/user/alice/did.json``.
Publishing writes the document into the document root of the web server (here the test double in
``devnets/did``); verification methods are named by their JWK thumbprint so rotated keys never clash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tributary.did import keys
from tributary.did.document import PortableDid, ResolutionError, parse_did, signing_document, verification_method

Fetch = Callable[[str], Any]  # url -> parsed JSON, or None when the server says 404

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*(:[0-9]{1,5})?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~%-]+$")


def did_for(host: str, path: str | None = None) -> str:
    """``did:web`` of a host (``example.com`` or ``127.0.0.1:8443``) and an optional path ``user/alice``."""
    parts = [host.replace(":", "%3A")] + [p for p in (path or "").split("/") if p]
    return "did:web:" + ":".join(parts)


def url_for(did: str) -> str:
    method, value = parse_did(did)
    if method != "web":
        raise ResolutionError("methodNotSupported", method)
    segments = value.split(":")
    host = unquote(segments[0])
    if not _HOST.match(host) or not all(_SEGMENT.match(s) for s in segments[1:]):
        raise ResolutionError("invalidDid", f"bad did:web host or path in {did!r}")
    path = "/".join(segments[1:]) + "/did.json" if len(segments) > 1 else ".well-known/did.json"
    return f"https://{host}/{path}"


def relative_path(did: str) -> str:
    """Where the document lives under the server's document root."""
    return url_for(did).split("/", 3)[3]


def build_document(did: str, active: list[keys.Jwk], retiring: list[keys.Jwk] = ()) -> dict[str, Any]:
    """Active keys first (the first one signs new credentials); retiring keys still verify old ones."""
    methods = [verification_method(did, keys.thumbprint(k), k) for k in [*active, *retiring]]
    return signing_document(did, methods)


def create(host: str, path: str | None = None, crv: str = "Ed25519",
           private_jwk: keys.Jwk | None = None) -> PortableDid:
    jwk = private_jwk or keys.generate(crv)
    did = did_for(host, path)
    return PortableDid(did, build_document(did, [jwk]), [jwk])


def publish(portable: PortableDid, document_root: str | Path) -> Path:
    target = Path(document_root) / relative_path(portable.uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(portable.document, indent=2), encoding="utf-8")
    tmp.replace(target)  # readers never see half a document
    return target


def document(did: str, fetch: Fetch) -> dict[str, Any]:
    url = url_for(did)
    doc = fetch(url)
    if doc is None:
        raise ResolutionError("notFound", url)
    if not isinstance(doc, dict) or doc.get("id") != did:
        raise ResolutionError("invalidDidDocument", f"{url} does not describe {did}")
    return doc
