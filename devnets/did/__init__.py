"""Local test doubles for DID infrastructure: a Pkarr relay (did:dht) and an HTTPS server (did:web)."""
