"""The ``tributary_did`` Connection: DID resolver settings and the key store's key-encryption key."""

from __future__ import annotations

from typing import Any

from tributary.core.errors import PermanentError
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.did import SYSTEM
from tributary.did.document import ResolutionError, parse_did
from tributary.did.resolver import ResolverConfig


class DidHook(TributaryHook):
    """Builds a :class:`ResolverConfig` and a :class:`KeyStore` from a ``tributary_did`` Connection.

    Connection fields: ``host`` the Pkarr relay/gateway URL for did:dht (``http://127.0.0.1:8787``);
    ``password`` the key-encryption key of ``did_keys`` (>= 16 characters; masked, never in XCom).
    Extra:

    * ``ca_bundle``      PEM file of CAs trusted for HTTPS (did:web, status lists); empty: system CAs
    * ``web_root``       document root where did:web documents and status lists are published
    * ``status_base_url`` https URL under which ``web_root`` is served (status list credentials)
    * ``timeout``        total deadline in seconds of one fetch (default 10)
    * ``allow_networks`` private/loopback/link-local addresses or networks (list, or comma-separated) that
      did:web documents and status lists may be fetched from; empty: public addresses only
    * ``allow_http_loopback`` plain HTTP allowed to loopback addresses (default false: HTTPS only)
    * ``fetch_max_bytes`` / ``fetch_max_decompressed_bytes`` response and inflated-size caps (2 / 16 MiB)
    * ``cache_ttl``      seconds a fetched document or status list is reused by one resolver (default 300)
    * ``issuers``        DIDs allowed to sign credentials besides the ``did_issuers`` table (a list, or a
      comma-separated string from the UI form); their keys must still be in the key store, listed under
      ``assertionMethod``, and never a request's subject keys
    """

    default_conn_name = "tributary_did"
    conn_type = "tributary_did"
    hook_name = "Tributary: DID resolver and key store"
    system = SYSTEM
    default_timeout = 10.0

    def get_conn(self) -> ResolverConfig:
        return ResolverConfig.from_extra(self.connection.host, self.extra, self.timeout)

    def allowed_issuers(self) -> tuple[str, ...]:
        """The ``issuers`` allow-list of the extra, each checked to be a DID."""
        value = self.extra.get("issuers") or []
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PermanentError(f"connection {self.conn_id!r}: extra 'issuers' must be a list of DIDs",
                                 system=self.system, reason="config:issuers")
        for did in value:
            try:
                parse_did(did)
            except ResolutionError:
                raise PermanentError(f"connection {self.conn_id!r}: issuer {did!r:.80} is not a DID",
                                     system=self.system, reason="config:issuers") from None
        return tuple(value)

    def kek(self) -> str:
        secret = self.connection.password
        if not secret:
            raise PermanentError(f"connection {self.conn_id!r} has no key-encryption key (password)",
                                 system=self.system, reason="config:kek")

        mask_secret(secret)
        return secret

    def keystore(self, conn: Any) -> Any:
        from tributary.did.keystore import KeyStore

        return KeyStore(conn, self.kek())

    def probe(self) -> str:
        from tributary.did.resolver import create_did, resolve

        config = self.get_conn()
        if not config.pkarr_url:
            return "resolver ready (no Pkarr relay: did:dht disabled)"
        did = create_did("dht", config=config)
        resolved = resolve(did.uri, config)
        error = resolved["didResolutionMetadata"].get("error")
        return f"Pkarr relay {config.pkarr_url}: " + ("round trip ok" if not error else f"error {error}")
