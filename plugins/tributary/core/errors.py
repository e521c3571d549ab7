"""The error taxonomy: every failure is one of four classes, decided once by :func:`classify`.

* ``transient``  network trouble, timeouts, a node warming up, 5xx, rate limits -> retry with backoff
* ``permanent``  bad credentials, invalid input, rejected transaction, a bug -> fail fast, no retry
* ``data``       a record or batch failed validation -> quarantine the bad part, alert
* ``security``   signature / authentication mismatch, a reorg deeper than allowed -> fail, alert high

Hooks raise the ``TributaryError`` subclasses below when they detect a failure themselves; foreign
exceptions (requests, httpx, psycopg, JSON-RPC error objects, web3, builtins) are mapped here by
type name and attributes so this module never imports those libraries.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ErrorClass(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    DATA = "data"
    SECURITY = "security"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


DEFAULT_SEVERITY: dict[ErrorClass, Severity] = {
    ErrorClass.TRANSIENT: Severity.WARNING,
    ErrorClass.PERMANENT: Severity.ERROR,
    ErrorClass.DATA: Severity.ERROR,
    ErrorClass.SECURITY: Severity.CRITICAL,
}


@dataclass(frozen=True)
class Classification:
    error_class: ErrorClass
    reason: str
    severity: Severity

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT


def _classification(error_class: ErrorClass, reason: str) -> Classification:
    return Classification(error_class, reason, DEFAULT_SEVERITY[error_class])


# --------------------------------------------------------------------------- our own errors
class TributaryError(Exception):
    """Base of errors raised by Tributary code; the subclass *is* the classification."""

    error_class: ErrorClass = ErrorClass.PERMANENT

    def __init__(self, message: str, *, system: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.system = system
        self.reason = reason or type(self).__name__


class TransientError(TributaryError):
    error_class = ErrorClass.TRANSIENT


class PermanentError(TributaryError):
    error_class = ErrorClass.PERMANENT


class DataError(TributaryError):
    """Input or an upstream answer failed validation. ``quarantined`` says how many records were set aside."""

    error_class = ErrorClass.DATA

    def __init__(
        self,
        message: str,
        *,
        system: str | None = None,
        reason: str | None = None,
        quarantined: int = 0,
        quarantine_location: str | None = None,
    ) -> None:
        super().__init__(message, system=system, reason=reason)
        self.quarantined = quarantined
        self.quarantine_location = quarantine_location


class SecurityError(TributaryError):
    error_class = ErrorClass.SECURITY


class JsonRpcError(TributaryError):
    """A JSON-RPC 2.0 (or Bitcoin Core 1.0-style) error object returned by a server.

    Hooks pass ``code_classes``: the system's own codes (e.g. Bitcoin Core's -28 "warming up" is
    transient) that take precedence over the generic JSON-RPC reserved ranges.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        data: Any = None,
        system: str | None = None,
        code_classes: Mapping[int, ErrorClass] | None = None,
    ) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}", system=system, reason=f"jsonrpc:{code}")
        self.code = code
        self.rpc_message = message
        self.data = data
        self.error_class = classify_jsonrpc_code(code, code_classes)

    @classmethod
    def from_object(
        cls,
        error: Mapping[str, Any],
        *,
        system: str | None = None,
        code_classes: Mapping[int, ErrorClass] | None = None,
    ) -> JsonRpcError:
        if not isinstance(error, Mapping) or not isinstance(error.get("code"), int):
            raise DataError(f"malformed JSON-RPC error object: {error!r:.200}", system=system,
                            reason="malformed_rpc_error")
        return cls(int(error["code"]), str(error.get("message", "")), data=error.get("data"),
                   system=system, code_classes=code_classes)


def classify_jsonrpc_code(code: int, code_classes: Mapping[int, ErrorClass] | None = None) -> ErrorClass:
    if code_classes and code in code_classes:
        return code_classes[code]
    if code in (-32700, -32600, -32601, -32602):  # parse error, invalid request/method/params
        return ErrorClass.PERMANENT
    if code == -32603 or -32099 <= code <= -32000:  # internal / implementation-defined server errors
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


# --------------------------------------------------------------------------- foreign exceptions
# HTTP statuses that a later attempt may not see again.
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
# PostgreSQL SQLSTATE classes (first two characters), see the PostgreSQL "Error Codes" appendix.
_SQLSTATE_CLASSES: dict[str, ErrorClass] = {
    "08": ErrorClass.TRANSIENT,  # connection exception
    "40": ErrorClass.TRANSIENT,  # serialization failure, deadlock
    "53": ErrorClass.TRANSIENT,  # insufficient resources
    "57": ErrorClass.TRANSIENT,  # operator intervention (admin shutdown, query canceled)
    "58": ErrorClass.TRANSIENT,  # system error (I/O)
    "22": ErrorClass.DATA,  # data exception (bad value, out of range)
    "23": ErrorClass.DATA,  # integrity constraint violation
    "28": ErrorClass.PERMANENT,  # invalid authorization specification
    "42": ErrorClass.PERMANENT,  # syntax error or access rule violation
    "3D": ErrorClass.PERMANENT,  # invalid catalog name (database does not exist)
}
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, KeyError, IndexError, NotImplementedError,
                       AssertionError, ImportError)


def _short_names(exc: BaseException) -> set[str]:
    return {t.__name__ for t in type(exc).__mro__}


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _classify_http_status(status: int) -> Classification:
    if status in _TRANSIENT_HTTP:
        return _classification(ErrorClass.TRANSIENT, f"http:{status}")
    if status in (401, 403):
        return _classification(ErrorClass.PERMANENT, f"http:{status}:credentials")
    return _classification(ErrorClass.PERMANENT, f"http:{status}")


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def classify(exc: BaseException) -> Classification:
    """Decide the class of any exception; the single place where that decision is made."""
    if isinstance(exc, TributaryError):
        return _classification(exc.error_class, exc.reason)

    # AirflowFailException raised by our own fail-fast wrapper keeps the original classification.
    carried = getattr(exc, "classification", None)
    if isinstance(carried, Classification):
        return carried

    short = _short_names(exc)
    module = type(exc).__module__

    # Airflow: a task that ran past execution_timeout may finish next time.
    if "AirflowTaskTimeout" in short:
        return _classification(ErrorClass.TRANSIENT, "airflow:execution_timeout")
    if "AirflowFailException" in short:
        return _classification(ErrorClass.PERMANENT, "airflow:fail")
    # A Connection or Variable that does not exist will not appear by retrying the task.
    if "AirflowNotFoundException" in short:
        return _classification(ErrorClass.PERMANENT, "config:not_found")

    # requests / httpx: the response status decides; transport errors are transient.
    if module.startswith(("requests", "urllib3", "httpx", "aiohttp")):
        status = _http_status(exc)
        if status is not None:
            return _classify_http_status(status)
        if short & {"ConnectionError", "Timeout", "TimeoutException", "NetworkError", "ConnectError",
                    "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "ChunkedEncodingError",
                    "ClientConnectionError", "ServerTimeoutError", "ProtocolError"}:
            return _classification(ErrorClass.TRANSIENT, f"network:{type(exc).__name__}")
        if short & {"InvalidURL", "MissingSchema", "InvalidSchema", "InvalidHeader", "UnsupportedProtocol"}:
            return _classification(ErrorClass.PERMANENT, f"config:{type(exc).__name__}")
        if "JSONDecodeError" in short:
            return _classification(ErrorClass.DATA, "malformed_response")

    # psycopg (3) and psycopg2: SQLSTATE classes, then the DB-API hierarchy.
    if module.startswith(("psycopg", "psycopg2")):
        state = _sqlstate(exc)
        if state is not None:
            return _classification(_SQLSTATE_CLASSES.get(state[:2], ErrorClass.PERMANENT), f"sqlstate:{state}")
        if "OperationalError" in short or "InterfaceError" in short:
            text = str(exc).lower()
            if "password authentication failed" in text or ("role" in text and "does not exist" in text):
                return _classification(ErrorClass.PERMANENT, "postgres:credentials")
            return _classification(ErrorClass.TRANSIENT, "postgres:connection")
        if "DataError" in short or "IntegrityError" in short:
            return _classification(ErrorClass.DATA, f"postgres:{type(exc).__name__}")
        return _classification(ErrorClass.PERMANENT, f"postgres:{type(exc).__name__}")

    # web3.py
    if module.startswith(("web3", "eth_", "eth_utils", "eth_abi", "eth_account")):
        if short & {"TimeExhausted", "TransactionNotFound", "BlockNotFound", "ProviderConnectionError"}:
            return _classification(ErrorClass.TRANSIENT, f"web3:{type(exc).__name__}")
        rpc = getattr(exc, "rpc_response", None)
        if isinstance(rpc, Mapping) and isinstance(rpc.get("error"), Mapping):
            code = rpc["error"].get("code")
            if isinstance(code, int):
                return _classification(classify_jsonrpc_code(code), f"jsonrpc:{code}")
        if short & {"BadResponseFormat", "MismatchedABI"}:
            return _classification(ErrorClass.DATA, f"web3:{type(exc).__name__}")
        return _classification(ErrorClass.PERMANENT, f"web3:{type(exc).__name__}")

    # A raw JSON-RPC error object handed over as an exception argument.
    if exc.args and isinstance(exc.args[0], Mapping) and isinstance(exc.args[0].get("code"), int):
        code = exc.args[0]["code"]
        return _classification(classify_jsonrpc_code(code), f"jsonrpc:{code}")

    # Builtins.
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return _classification(ErrorClass.DATA, "malformed_input")
    if isinstance(exc, TimeoutError | ConnectionError):
        return _classification(ErrorClass.TRANSIENT, f"network:{type(exc).__name__}")
    if isinstance(exc, OSError) and type(exc).__module__ == "socket":
        return _classification(ErrorClass.TRANSIENT, f"network:{type(exc).__name__}")
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return _classification(ErrorClass.PERMANENT, f"bug:{type(exc).__name__}")
    if isinstance(exc, ValueError):
        return _classification(ErrorClass.PERMANENT, "invalid_value")
    # Unknown: keep Airflow's default behaviour (bounded retries) and say so in the reason.
    return _classification(ErrorClass.TRANSIENT, f"unclassified:{type(exc).__name__}")
