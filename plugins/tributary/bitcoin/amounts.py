"""Bitcoin's units: the one definition of a satoshi and of the money supply cap."""

from __future__ import annotations

SATS_PER_BTC = 100_000_000
MAX_MONEY_SATS = 21_000_000 * SATS_PER_BTC  # Core's MAX_MONEY: no amount or sum of amounts is above it
