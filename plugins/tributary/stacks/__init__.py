"""Stacks: the stacks-core RPC hook, Clarity values, SIP-005 transactions, the execution ledger."""
