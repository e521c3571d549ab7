"""EVM node answers mapped into the taxonomy.

JSON-RPC nodes (geth, anvil, erigon, hosted providers) report most refusals with the generic code
-32000 and an English message, which the generic rules in ``tributary.core.errors`` would call
transient; the messages below decide instead. No web3 import: exceptions are read by type name.
"""

from __future__ import annotations

import re
from typing import Any

from tributary.core.errors import PermanentError, TransientError, TributaryError, classify
from tributary.evm import SYSTEM


class ContractReverted(PermanentError):
    """The EVM reverted (a ``require`` failed, a custom error, a panic): the reason is in ``revert_reason``."""

    def __init__(self, message: str, revert_reason: str | None = None) -> None:
        self.revert_reason = revert_reason or "execution reverted"
        super().__init__(message, system=SYSTEM, reason=f"evm:reverted:{self.revert_reason[:120]}")


class InvalidArguments(PermanentError):
    """Arguments that do not fit the ABI; raised before anything is signed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, system=SYSTEM, reason="evm:abi:invalid_args")


class NonceTooLow(PermanentError):
    """The nonce was used already (by another sender of the same key): the nonce manager re-allocates."""

    def __init__(self, message: str) -> None:
        super().__init__(message, system=SYSTEM, reason="evm:nonce_too_low")


class AlreadyKnown(TributaryError):
    """The node has this exact transaction already: a repeated broadcast, i.e. a success."""


class ChainMismatch(PermanentError):
    def __init__(self, message: str) -> None:
        super().__init__(message, system=SYSTEM, reason="config:chain_id")


# (pattern, factory) in order: the first match wins. Messages from geth's txpool/core errors,
# anvil, erigon, nethermind and common hosted providers.
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"already known|known transaction|already imported|transaction already exists", re.I),
     lambda m: AlreadyKnown(m, system=SYSTEM, reason="evm:already_known")),
    (re.compile(r"nonce too low|nonce has already been used|oldnonce|invalid nonce.*lower", re.I), NonceTooLow),
    (re.compile(r"insufficient funds|insufficient balance", re.I),
     lambda m: PermanentError(m, system=SYSTEM, reason="evm:insufficient_funds")),
    (re.compile(r"replacement transaction underpriced|underpriced", re.I),
     lambda m: TransientError(m, system=SYSTEM, reason="evm:underpriced")),
    (re.compile(r"max fee per gas less than block base fee|fee cap less than block base fee|feecap", re.I),
     lambda m: TransientError(m, system=SYSTEM, reason="evm:fee_below_base_fee")),
    (re.compile(r"nonce too high|txpool is full|transaction pool is full|queue is full", re.I),
     lambda m: TransientError(m, system=SYSTEM, reason="evm:txpool")),
    (re.compile(r"intrinsic gas too low|gas limit reached|exceeds block gas limit|out of gas", re.I),
     lambda m: PermanentError(m, system=SYSTEM, reason="evm:gas")),
    (re.compile(r"invalid chain id|chain ?id mismatch|invalid sender|invalid signature", re.I),
     lambda m: PermanentError(m, system=SYSTEM, reason="evm:invalid_transaction")),
    (re.compile(r"rate limit|too many requests|limit exceeded|header not found|unknown block|"
                r"timeout|timed out|try again|service unavailable", re.I),
     lambda m: TransientError(m, system=SYSTEM, reason="evm:node_busy")),
    (re.compile(r"query returned more than|response size|exceed(s|ed) .*(range|results)|block range", re.I),
     lambda m: TransientError(m, system=SYSTEM, reason="evm:logs_range_too_large")),
)

_REVERT = re.compile(r"execution reverted:?\s*(.*)", re.I | re.S)


def _rpc_error(exc: BaseException) -> tuple[int | None, str, Any]:
    """(code, message, data) of a JSON-RPC error carried by a web3 exception, if any."""
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        error = response["error"]
        return error.get("code"), str(error.get("message", "")), error.get("data")
    if exc.args and isinstance(exc.args[0], dict) and "message" in exc.args[0]:
        return exc.args[0].get("code"), str(exc.args[0]["message"]), exc.args[0].get("data")
    return None, str(exc), None


def translate(exc: BaseException) -> BaseException:
    """Map an exception raised talking to an EVM node to a Tributary error (others unchanged)."""
    if isinstance(exc, TributaryError):
        return exc
    names = {t.__name__ for t in type(exc).__mro__}
    if names & {"ContractLogicError", "ContractCustomError", "ContractPanicError"}:
        message = getattr(exc, "message", None) or str(exc)
        reason = _REVERT.match(message)
        text = (reason.group(1).strip() if reason else message) or "execution reverted"
        return ContractReverted(f"contract call reverted: {text}", text)
    if names & {"Web3ValidationError", "MismatchedABI", "ABIFunctionNotFound", "InvalidAddress",
                "EncodingTypeError", "EncodingError", "ValueOutOfBounds", "IllegalValue"}:
        return InvalidArguments(f"{type(exc).__name__}: {exc}")
    if names & {"TimeExhausted", "RequestTimedOut", "ProviderConnectionError", "TooManyRequests",
                "TransactionIndexingInProgress"}:
        return TransientError(f"{type(exc).__name__}: {exc}", system=SYSTEM, reason=f"web3:{type(exc).__name__}")
    code, message, _data = _rpc_error(exc)
    if code is not None or "Web3RPCError" in names:
        revert = _REVERT.match(message)
        if revert or code == 3:
            text = (revert.group(1).strip() if revert else message) or "execution reverted"
            return ContractReverted(f"execution reverted: {text}", text)
        for pattern, factory in _MESSAGE_RULES:
            if pattern.search(message):
                return factory(message)
        if code in (-32602, -32600, -32601):
            return PermanentError(f"JSON-RPC error {code}: {message}", system=SYSTEM, reason=f"jsonrpc:{code}")
    return exc


def classify_evm(exc: BaseException) -> Any:
    """The taxonomy's classification of ``exc`` after the EVM-specific translation."""
    return classify(translate(exc))
