"""EVM chains (Ethereum and compatibles) over JSON-RPC: hook, nonce allocation, transaction ledger,
deployments registry, receipt trigger and reorg-safe event indexing. See docs/evm.md."""

SYSTEM = "evm"  # the name in error events, alerts and classifications
