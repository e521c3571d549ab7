"""Stacks devnet: a test double of the stacks-core RPC around the clarinet-sdk simnet (see README.md)."""
