"""The ``tributary_did`` Connection: DID resolver settings and the key store's key-encryption key."""

from __future__ import annotations

from typing import Any

from tributary.core.errors import PermanentError
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.did import SYSTEM
from tributary.did.resolver import ResolverConfig


class DidHook(TributaryHook):
    """Builds a :class:`ResolverConfig` and a :class:`KeyStore` from a ``tributary_did`` Connection.

    Connection fields: ``host`` the Pkarr relay/gateway URL for did:dht (``http://127.0.0.1:8787``);
    ``password`` the key-encryption key of ``did_keys`` (>= 16 characters; masked, never in XCom).
    Extra:

    * ``ca_bundle``      PEM file of CAs trusted for HTTPS (did:web, status lists); empty: system CAs
    * ``web_root``       document root where did:web documents and status lists are published
    * ``status_base_url`` https URL under which ``web_root`` is served (status list credentials)
    * ``timeout``        seconds per HTTP request (default 10)
    """

    default_conn_name = "tributary_did"
    conn_type = "tributary_did"
    hook_name = "Tributary: DID resolver and key store"
    system = SYSTEM
    default_timeout = 10.0

    def get_conn(self) -> ResolverConfig:
        return ResolverConfig(pkarr_url=self.connection.host or None, ca_bundle=self.extra.get("ca_bundle") or None,
                              timeout=self.timeout)

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
