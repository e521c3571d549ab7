"""A local EVM peer for tests, benchmarks and the run command: a real ``anvil`` process (Foundry)."""

from devnets.evm.anvil import (
    ANVIL_ACCOUNTS,
    CHAIN_ID,
    MNEMONIC,
    AnvilHandle,
    anvil_binary,
    running_anvil,
    start_anvil,
)

__all__ = ["ANVIL_ACCOUNTS", "CHAIN_ID", "MNEMONIC", "AnvilHandle", "anvil_binary", "running_anvil", "start_anvil"]
