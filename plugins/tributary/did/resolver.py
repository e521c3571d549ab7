"""Create and resolve DIDs of every supported method: did:key, did:jwk, did:web, did:dht.

``create_did`` and ``resolve`` are plain functions (no Airflow import) so benchmarks and tasks call
them directly. Network access goes through :class:`ResolverConfig`: the Pkarr relay/gateway for
did:dht, and the bounded fetcher (``tributary.core.fetch``) for the URLs a credential's author chooses
(did:web documents, status lists): https only, no private address unless allow-listed, same-origin
redirects, a total deadline, size caps and a TTL cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tributary.core import fetch as fetching
from tributary.core.errors import DataError, PermanentError, TransientError
from tributary.did import SYSTEM, diddht, didjwk, didkey, didweb
from tributary.did.document import PortableDid, ResolutionError, parse_did, resolution_result

METHODS = ("key", "jwk", "web", "dht")
_RELAY_CHUNK = 16 * 1024


@dataclass(frozen=True)
class ResolverConfig:
    """How DIDs and status lists are fetched.

    ``pkarr_url``: base URL of a Pkarr relay (``PUT``/``GET /<z32 id>``), chosen by the operator.
    Everything else governs fetches of URLs a credential's author chooses (did:web documents, status
    lists), all through one :class:`~tributary.core.fetch.Fetcher`: ``ca_bundle`` PEM of the CAs
    trusted for HTTPS (``None``: the system store); ``timeout`` the total deadline of one fetch;
    ``allow_networks`` private/loopback/link-local networks that may be fetched anyway (a local
    did:web host, the devnet's ``127.0.0.1/32``); ``allow_http_loopback`` plain HTTP to loopback;
    ``max_bytes`` / ``max_decompressed_bytes`` the response and inflated-size caps; ``cache_ttl``
    seconds a fetched document is reused by this config (0: never). ``fetch`` replaces HTTP GET of
    JSON (tests)."""

    pkarr_url: str | None = None
    ca_bundle: str | None = None
    timeout: float = fetching.DEFAULT_TIMEOUT
    fetch: Callable[[str], Any] | None = None
    allow_networks: tuple[Any, ...] = ()
    allow_http_loopback: bool = False
    max_bytes: int = fetching.DEFAULT_MAX_BYTES
    max_decompressed_bytes: int = fetching.DEFAULT_MAX_DECOMPRESSED_BYTES
    cache_ttl: float = fetching.DEFAULT_CACHE_TTL
    fetcher: fetching.Fetcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_networks", fetching.parse_networks(self.allow_networks, system=SYSTEM))
        for name in ("timeout", "max_bytes", "max_decompressed_bytes"):
            if not getattr(self, name) > 0:
                raise PermanentError(f"resolver {name} must be positive, not {getattr(self, name)!r}", system=SYSTEM,
                                     reason=f"config:{name}")
        policy = fetching.FetchPolicy(
            allow_networks=self.allow_networks, allow_http_loopback=self.allow_http_loopback,
            ca_bundle=self.ca_bundle, timeout=float(self.timeout), max_bytes=int(self.max_bytes),
            max_decompressed_bytes=int(self.max_decompressed_bytes), cache_ttl=float(self.cache_ttl))
        object.__setattr__(self, "fetcher", fetching.Fetcher(policy, system=SYSTEM))

    @classmethod
    def from_extra(cls, pkarr_url: str | None, extra: dict[str, Any], timeout: float) -> ResolverConfig:
        """The resolver of a ``tributary_did`` Connection (its host and extra, see ``DidHook``)."""
        def number(name: str, default: float) -> float:
            value = extra.get(name)
            if value in (None, ""):
                return default
            try:
                return float(value)
            except (TypeError, ValueError):
                raise PermanentError(f"tributary_did extra {name} must be a number, not {value!r}", system=SYSTEM,
                                     reason=f"config:{name}") from None

        return cls(pkarr_url=pkarr_url or None, ca_bundle=extra.get("ca_bundle") or None, timeout=timeout,
                   allow_networks=fetching.parse_networks(extra.get("allow_networks"), system=SYSTEM),
                   allow_http_loopback=fetching.parse_bool(extra.get("allow_http_loopback", False)),
                   max_bytes=int(number("fetch_max_bytes", fetching.DEFAULT_MAX_BYTES)),
                   max_decompressed_bytes=int(number("fetch_max_decompressed_bytes",
                                                     fetching.DEFAULT_MAX_DECOMPRESSED_BYTES)),
                   cache_ttl=number("cache_ttl", fetching.DEFAULT_CACHE_TTL))

    def _verify(self) -> str | bool:
        return self.ca_bundle or True

    def get_bytes(self, url: str) -> bytes | None:
        """A URL chosen by a credential's author, through the bounded fetcher (``None``: 404/410)."""
        return self.fetcher.get(url)

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

    def _relay_get(self, url: str) -> bytes | None:
        """GET from the operator's Pkarr relay (not an author's choice: no address policy, no cache)."""
        import requests

        try:
            with requests.get(url, timeout=self.timeout, verify=self._verify(), stream=True) as response:
                if response.status_code in (404, 410):
                    return None
                if response.status_code >= 500 or response.status_code == 429:
                    raise TransientError(f"GET {url}: HTTP {response.status_code}", system=SYSTEM,
                                         reason=f"http:{response.status_code}")
                if response.status_code != 200:
                    raise PermanentError(f"GET {url}: HTTP {response.status_code}", system=SYSTEM,
                                         reason=f"http:{response.status_code}")
                body = bytearray()
                for chunk in response.iter_content(_RELAY_CHUNK):  # a Pkarr payload is <= 1072 bytes
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise DataError(f"GET {url}: more than {self.max_bytes} bytes", system=SYSTEM,
                                        reason="fetch:too_large")
                return bytes(body)
        except requests.exceptions.SSLError as exc:
            raise PermanentError(f"TLS verification failed for {url}: {exc}", system=SYSTEM,
                                 reason="tls") from exc
        except requests.RequestException as exc:
            raise TransientError(f"GET {url}: {type(exc).__name__}", system=SYSTEM, reason="network") from exc

    def pkarr_get(self, did: str) -> bytes | None:
        if not self.pkarr_url:
            raise PermanentError("did:dht needs a Pkarr relay URL (Connection host / pkarr_url)", system=SYSTEM,
                                 reason="config:pkarr_url")
        return self._relay_get(f"{self.pkarr_url.rstrip('/')}/{parse_did(did)[1]}")

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
