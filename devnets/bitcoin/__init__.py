"""A Bitcoin Core regtest test double: real regtest blocks validated by libbitcoinkernel,
served over Bitcoin Core's JSON-RPC. See README.md for what it does and does not implement."""
