"""Create and resolve DIDs of every supported method: did:key, did:jwk, did:web, did:dht.

``create_did`` and ``resolve`` are plain functions (no Airflow import) so benchmarks and tasks call
them directly. Network access goes through :class:`ResolverConfig`: the Pkarr relay/gateway for
did:dht and the CA bundle trusted for HTTPS (did:web documents, status lists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError, TransientError
from tributary.did import SYSTEM, diddht, didjwk, didkey, didweb
from tributary.did.document import PortableDid, ResolutionError, parse_did, resolution_result

METHODS = ("key", "jwk", "web", "dht")


@dataclass(frozen=True)
class ResolverConfig:
    """``pkarr_url``: base URL of a Pkarr relay (``PUT``/``GET /<z32 id>``); ``ca_bundle``: PEM of the
    CAs trusted for HTTPS (``None``: the system store); ``fetch``: replaces HTTP GET of JSON (tests)."""

    pkarr_url: str | None = None
    ca_bundle: str | None = None
    timeout: float = 10.0
    fetch: Callable[[str], Any] | None = None

    def _verify(self) -> str | bool:
        return self.ca_bundle or True

    def get_bytes(self, url: str) -> bytes | None:
        import requests

        try:
            response = requests.get(url, timeout=self.timeout, verify=self._verify())
        except requests.exceptions.SSLError as exc:
            raise PermanentError(f"TLS verification failed for {url}: {exc}", system=SYSTEM,
                                 reason="tls") from exc
        except requests.RequestException as exc:
            raise TransientError(f"GET {url}: {type(exc).__name__}", system=SYSTEM, reason="network") from exc
        if response.status_code in (404, 410):
            return None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"GET {url}: HTTP {response.status_code}", system=SYSTEM,
                                 reason=f"http:{response.status_code}")
        if response.status_code != 200:
            raise PermanentError(f"GET {url}: HTTP {response.status_code}", system=SYSTEM,
                                 reason=f"http:{response.status_code}")
        return response.content

    def get_json(self, url: str) -> Any:
        if self.fetch is not None:
            return self.fetch(url)
        import json

        body = self.get_bytes(url)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ResolutionError("invalidDidDocument", f"{url} is not JSON") from None

    def pkarr_get(self, did: str) -> bytes | None:
        if not self.pkarr_url:
            raise PermanentError("did:dht needs a Pkarr relay URL (Connection host / pkarr_url)", system=SYSTEM,
                                 reason="config:pkarr_url")
        return self.get_bytes(f"{self.pkarr_url.rstrip('/')}/{parse_did(did)[1]}")

    def pkarr_put(self, did: str, body: bytes) -> None:
        import requests

        if not self.pkarr_url:
            raise PermanentError("did:dht needs a Pkarr relay URL", system=SYSTEM, reason="config:pkarr_url")
        url = f"{self.pkarr_url.rstrip('/')}/{parse_did(did)[1]}"
        try:
            response = requests.put(url, data=body, timeout=self.timeout, verify=self._verify(),
                                    headers={"Content-Type": "application/pkarr.org/relays#payload"})
        except requests.RequestException as exc:
            raise TransientError(f"PUT {url}: {type(exc).__name__}", system=SYSTEM, reason="network") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"PUT {url}: HTTP {response.status_code}", system=SYSTEM,
                                 reason=f"http:{response.status_code}")
        if response.status_code == 409:
            raise PermanentError(f"relay refused {did}: seq not higher than the stored one", system=SYSTEM,
                                 reason="pkarr:stale_seq")
        if response.status_code not in (200, 204):
            raise PermanentError(f"PUT {url}: HTTP {response.status_code} {response.text[:200]}", system=SYSTEM,
                                 reason=f"http:{response.status_code}")


DEFAULT_CONFIG = ResolverConfig()


def publish_dht(portable: PortableDid, config: ResolverConfig, seq: int | None = None) -> int:
    """Sign the document as a Pkarr payload with the identity key and PUT it; returns the seq."""
    from tributary.did import keys

    wanted = keys.thumbprint(diddht.identity_key(portable.uri))
    identity = next((k for k in portable.private_keys if keys.thumbprint(k) == wanted), None)
    if identity is None:
        raise PermanentError(f"{portable.uri}: the identity key is not among the private keys", system=SYSTEM,
                             reason="unknown_key")
    body = diddht.sign_payload(identity, diddht.to_packet(portable.document), seq)
    config.pkarr_put(portable.uri, body)
    published = int.from_bytes(body[64:72], "big")
    portable.metadata["versionId"] = str(published)
    return published


def create_did(method: str = "jwk", *, crv: str = "Ed25519", host: str | None = None, path: str | None = None,
               document_root: str | Path | None = None, config: ResolverConfig | None = None,
               publish: bool = True, services: list[dict[str, Any]] = ()) -> PortableDid:
    """A new DID with fresh keys. did:web needs ``host`` (and is written under ``document_root`` when
    given); did:dht is published to ``config.pkarr_url`` unless ``publish`` is false (its identity key is
    always Ed25519; ``crv`` other than Ed25519 adds a second key of that curve for signing)."""
    if method == "key":
        return didkey.create(crv)
    if method == "jwk":
        return didjwk.create(crv)
    if method == "web":
        if not host:
            raise PermanentError("did:web needs a host", system=SYSTEM, reason="invalid_value")
        portable = didweb.create(host, path, crv)
        if document_root is not None:
            didweb.publish(portable, document_root)
        return portable
    if method == "dht":
        from tributary.did import keys

        additional = [] if crv == "Ed25519" else [{"jwk": keys.generate(crv),
                                                   "purposes": ["authentication", "assertionMethod"]}]
        portable = diddht.create(additional=additional, services=services)
        if publish:
            publish_dht(portable, config or DEFAULT_CONFIG)
        return portable
    raise PermanentError(f"unsupported DID method {method!r}", system=SYSTEM, reason="methodNotSupported")


def resolve(did: str, config: ResolverConfig | None = None, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """A DID resolution result ``{didDocument, didDocumentMetadata, didResolutionMetadata}``.

    Resolution failures come back as ``didResolutionMetadata.error`` (invalidDid, notFound,
    methodNotSupported, invalidPublicKey, invalidSignature, invalidDidDocument); an unreachable
    server raises ``TransientError`` because a later attempt may succeed. ``methods`` limits the
    methods accepted (others give methodNotSupported).
    """
    config = config or DEFAULT_CONFIG
    try:
        method, _ = parse_did(did)
        if method not in methods:
            raise ResolutionError("methodNotSupported", method)
        if method == "key":
            return resolution_result(didkey.document(did))
        if method == "jwk":
            return resolution_result(didjwk.document(did))
        if method == "web":
            return resolution_result(didweb.document(did, config.get_json))
        if method == "dht":
            diddht.identity_key(did)  # validates the identifier before any network call
            body = config.pkarr_get(did)
            if body is None:
                raise ResolutionError("notFound", did)
            document, metadata = diddht.resolve_payload(did, body)
            return resolution_result(document, metadata=metadata)
        raise ResolutionError("methodNotSupported", method)
    except ResolutionError as exc:
        return resolution_result(None, error=exc.code)


def resolve_document(did: str, config: ResolverConfig | None = None) -> dict[str, Any]:
    """The DID document, or ``ResolutionError`` with the DID Core error code."""
    result = resolve(did, config)
    error = result["didResolutionMetadata"].get("error")
    if error:
        raise ResolutionError(error, did)
    return result["didDocument"]
