"""Stacks: the stacks-core RPC hook, Clarity values, SIP-005 transactions, the execution ledger."""

SYSTEM = "stacks"  # the name in error events, alerts and classifications
