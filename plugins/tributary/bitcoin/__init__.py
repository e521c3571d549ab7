"""Bitcoin Core: the JSON-RPC hook, consensus parsing of blocks into rows, and their warehouse store."""

SYSTEM = "bitcoin"  # the name in error events, alerts and classifications
