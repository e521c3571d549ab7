"""Decentralized Web Nodes (DWN): messages, signing, encryption, the JSON-RPC hook and replication."""
