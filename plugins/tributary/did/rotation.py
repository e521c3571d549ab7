"""Key rotation of DIDs held in the key store.

did:web: a new key becomes the first verification method (it signs from now on); the old ones stay
in the document as *retiring* for a grace period so credentials they signed still verify, then
:func:`retire_expired` drops them (``grace=None`` drops them at once). The document is re-published.

did:dht: the identity key is the identifier and never rotates; the other signing keys do. The new
packet is published with a ``seq`` above the last one, so the relay keeps only the newest.
did:key / did:jwk: the key *is* the DID; "rotation" means a new DID, so it is refused here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tributary.core.errors import PermanentError
from tributary.did import SYSTEM, diddht, didweb, keys
from tributary.did.document import PortableDid, parse_did
from tributary.did.keystore import KeyStore
from tributary.did.resolver import ResolverConfig, publish_dht


def _web_document(store: KeyStore, did: str, now: datetime) -> dict:
    rows = store.key_rows(did)
    active = [r["public_jwk"] for r in reversed(rows) if r["status"] == "active"]  # newest first
    retiring = [r["public_jwk"] for r in rows if r["status"] == "retiring"
                and (r["retire_after"] is None or r["retire_after"] > now)]
    return didweb.build_document(did, active, retiring)


def rotate_web(store: KeyStore, did: str, document_root: str | Path, *, crv: str = "Ed25519",
               grace: timedelta | None = timedelta(days=30)) -> PortableDid:
    if parse_did(did)[0] != "web":
        raise PermanentError(f"{did} is not a did:web", system=SYSTEM, reason="invalid_value")
    old = [r["key_id"] for r in store.key_rows(did) if r["status"] == "active"]
    store.add_key(did, keys.generate(crv))
    for key_id in old:
        store.set_status(did, key_id, "retiring" if grace is not None else "retired", grace)
    return _republish_web(store, did, document_root)


def retire_expired(store: KeyStore, did: str, document_root: str | Path) -> PortableDid:
    now = datetime.now(UTC)
    for row in store.key_rows(did):
        if row["status"] == "retiring" and row["retire_after"] is not None and row["retire_after"] <= now:
            store.set_status(did, row["key_id"], "retired")
    return _republish_web(store, did, document_root)


def _republish_web(store: KeyStore, did: str, document_root: str | Path) -> PortableDid:
    document = _web_document(store, did, datetime.now(UTC))
    current = store.load(did)
    portable = PortableDid(did, document, current.private_keys)
    store.save(portable)
    didweb.publish(portable, document_root)
    return store.load(did)


def rotate_dht(store: KeyStore, did: str, config: ResolverConfig, *, crv: str = "secp256k1") -> PortableDid:
    """Replace the non-identity signing keys with a new one and publish with a higher seq."""
    if parse_did(did)[0] != "dht":
        raise PermanentError(f"{did} is not a did:dht", system=SYSTEM, reason="invalid_value")
    identity_tp = keys.thumbprint(diddht.identity_key(did))
    current = store.load(did)
    identity = next(k for k in current.private_keys if keys.thumbprint(k) == identity_tp)
    new_key = keys.generate(crv)
    for row in store.key_rows(did):
        if row["key_id"] != identity_tp and row["status"] == "active":
            store.set_status(did, row["key_id"], "retired")
    document = diddht.build_document(identity, additional=[{"jwk": new_key,
                                                            "purposes": ["authentication", "assertionMethod"]}],
                                     services=[{**s, "id": s["id"].split("#")[-1]}
                                               for s in current.document.get("service") or []])
    portable = PortableDid(did, document, [identity, new_key])
    seq = publish_dht(portable, config, seq=max(store.version(did) + 1, _now_micros()))
    store.save(portable, version=seq)
    return portable


def _now_micros() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
