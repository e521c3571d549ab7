"""Decentralized Web Nodes (DWN): messages, signing, encryption, the JSON-RPC hook and replication."""

SYSTEM = "dwn"  # the name in error events, alerts and classifications
