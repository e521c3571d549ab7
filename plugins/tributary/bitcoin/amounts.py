"""Bitcoin's units: the one definition of a satoshi and of the money supply cap."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

SATS_PER_BTC = 100_000_000
MAX_MONEY_SATS = 21_000_000 * SATS_PER_BTC  # Core's MAX_MONEY: no amount or sum of amounts is above it
ONE_SAT_IN_BTC = Decimal("0.00000001")


def btc_to_sats(amount: Decimal | int | str) -> int:
    """An amount in BTC (as Core prints it) to integer satoshis; refuses floats and sub-satoshi values
    with ValueError/TypeError (callers classify: a node's answer is a data error, a request's a permanent one)."""
    if isinstance(amount, float):
        raise TypeError("BTC amounts must be Decimal, int or str, never float")
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise ValueError(f"not a BTC amount: {amount!r}") from exc
    sats = value * SATS_PER_BTC
    if not sats.is_finite() or sats != sats.to_integral_value():
        raise ValueError(f"not a whole number of satoshis: {amount!r} BTC")
    return int(sats)


def sats_to_btc(sats: int) -> Decimal:
    return (Decimal(int(sats)) / SATS_PER_BTC).quantize(ONE_SAT_IN_BTC)
