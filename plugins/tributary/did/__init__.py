"""DIDs: create, resolve, store (encrypted) and rotate did:key, did:jwk, did:web and did:dht."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

SYSTEM = "did"  # the name in error events, alerts and classifications

__all__ = ["SYSTEM", "PortableDid", "ResolutionError", "ResolverConfig", "create_did", "resolve",
           "resolve_document"]

if TYPE_CHECKING:
    from tributary.did.document import PortableDid, ResolutionError
    from tributary.did.resolver import ResolverConfig, create_did, resolve, resolve_document


def __getattr__(name: str) -> Any:
    # The API is imported on first use: DAG files read SYSTEM at parse time without loading the
    # cryptography stack, and the package's own modules import SYSTEM from here without a cycle.
    if name in ("PortableDid", "ResolutionError"):
        from tributary.did import document

        return getattr(document, name)
    if name in ("ResolverConfig", "create_did", "resolve", "resolve_document"):
        from tributary.did import resolver

        return getattr(resolver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
