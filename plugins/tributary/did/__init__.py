"""DIDs: create, resolve, store (encrypted) and rotate did:key, did:jwk, did:web and did:dht."""

SYSTEM = "did"  # the name in error events, alerts and classifications

from tributary.did.document import PortableDid, ResolutionError
from tributary.did.resolver import ResolverConfig, create_did, resolve, resolve_document

__all__ = ["PortableDid", "ResolutionError", "ResolverConfig", "create_did", "resolve", "resolve_document"]
