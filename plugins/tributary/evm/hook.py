"""EVM JSON-RPC hook on web3.py 8: Connection -> HTTP provider, chain-id check, local signing with
eth-account, EIP-1559 fees, gas estimation with a margin, raw batched reads, classified errors.

The private key lives in the Connection password; it is given to Airflow's secrets masker as soon
as it is read and never leaves this object (no XCom, no log line, no exception message).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tributary.core.errors import DataError, PermanentError, TransientError
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.core.retry import RetryPolicy
from tributary.evm import SYSTEM
from tributary.evm.errors import AlreadyKnown, ChainMismatch, NonceTooLow, translate

GWEI = 10**9



def to_hex(value: Any) -> str:
    """HexBytes / bytes / str -> 0x-prefixed lowercase hex."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text.lower() if text.startswith("0x") else "0x" + text.lower()


def receipt_to_dict(receipt: Any) -> dict[str, Any]:
    """A receipt as plain JSON (hex strings, ints): safe for XCom and triggers."""
    def plain(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return to_hex(value)
        if isinstance(value, dict) or hasattr(value, "items"):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dict(receipt))


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee: int


class EvmHook(TributaryHook):
    """Talks to an EVM node (geth, anvil, a hosted RPC) from a ``tributary_evm`` Connection.

    Connection fields: ``host`` the JSON-RPC URL (``http://127.0.0.1:8545``; a bare host plus
    ``port`` also works), ``password`` the sender's private key (hex; optional for read-only use).
    Extra:

    * ``chain_id``            the chain this Connection must be on; a node on another chain is a
      permanent configuration error (checked before every signature and by ``test_connection``)
    * ``timeout``             seconds per HTTP request (default 30)
    * ``confirmations``       blocks on top of a receipt before it counts as final (default 1)
    * ``gas_margin``          multiplier on ``eth_estimateGas`` (default 1.2)
    * ``priority_fee_wei``    tip per gas; default: the node's ``eth_maxPriorityFeePerGas``
    * ``base_fee_multiplier`` max fee = base fee x this + tip (default 2: survives ~6 full blocks)
    * ``max_fee_cap_wei``     refuse to sign above this max fee per gas (transient: wait for cheaper gas)
    * ``poll_interval``       seconds between receipt polls in the trigger (default 1)
    * ``logs_chunk_size``     blocks per ``eth_getLogs`` request when indexing (default 2000)
    * ``fee_cache_seconds``   reuse fee figures this long (default 1; 0 = ask every time)
    * ``takeover_seconds``    a ``preparing`` ledger row idle this long may be taken over by another
      attempt (default 120; the superseded attempt is fenced off, see ``evm/transactions.py``)
    """

    default_conn_name = "tributary_evm"
    conn_type = "tributary_evm"
    hook_name = "Tributary: EVM JSON-RPC"
    system = SYSTEM
    default_timeout = 30.0
    read_retry: ClassVar[RetryPolicy] = RetryPolicy(attempts=3, base_delay=0.25, max_delay=5.0)

    def __init__(self, conn_id: str | None = None, *, timeout: float | None = None,
                 retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(conn_id, timeout=timeout, retry_policy=retry_policy)
        self._ids = itertools.count(1)
        self._fees: tuple[float, Fees] | None = None
        self._chain_checked: int | None = None
        self._local = threading.local()

    # ----------------------------------------------------------------- settings
    @cached_property
    def rpc_url(self) -> str:
        host = (self.connection.host or "").strip()
        if not host:
            raise PermanentError(f"connection {self.conn_id!r} has no host (the JSON-RPC URL)",
                                 system=SYSTEM, reason="config:host")
        if "://" not in host:
            host = f"http://{host}"
        parts = urlsplit(host)
        if self.connection.port and not parts.port:
            host = f"{parts.scheme}://{parts.hostname}:{self.connection.port}{parts.path}"
        return host

    def _number(self, key: str, default: float | None) -> float | None:
        value = self.extra.get(key, default)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"connection {self.conn_id!r}: extra {key!r} must be a number",
                                 system=SYSTEM, reason=f"config:{key}") from exc

    @property
    def expected_chain_id(self) -> int | None:
        value = self._number("chain_id", None)
        return int(value) if value is not None else None

    @property
    def confirmations(self) -> int:
        return max(1, int(self._number("confirmations", 1) or 1))

    @property
    def gas_margin(self) -> float:
        return max(1.0, float(self._number("gas_margin", 1.2) or 1.2))

    @property
    def poll_interval(self) -> float:
        return max(0.05, float(self._number("poll_interval", 1.0) or 1.0))

    @property
    def logs_chunk_size(self) -> int:
        return max(1, int(self._number("logs_chunk_size", 2000) or 2000))

    # ----------------------------------------------------------------- clients
    def get_conn(self) -> Any:
        """A ``web3.Web3`` on an HTTP provider (retries are ours: web3's own are switched off)."""
        from web3 import HTTPProvider, Web3

        provider = HTTPProvider(self.rpc_url, request_kwargs={"timeout": self.timeout},
                                exception_retry_configuration=None)
        return Web3(provider)

    @property
    def w3(self) -> Any:
        """One Web3 per thread (requests sessions are not shared across threads)."""
        w3 = getattr(self._local, "w3", None)
        if w3 is None:
            w3 = self._local.w3 = self.get_conn()
        return w3

    @property
    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    @cached_property
    def account(self) -> Any:
        """The signing account (eth-account ``LocalAccount``) from the Connection password."""
        key = (self.connection.password or "").strip()
        if not key:
            raise PermanentError(f"connection {self.conn_id!r} has no private key (password field): read-only",
                                 system=SYSTEM, reason="config:no_private_key")
        mask_secret(key)
        mask_secret(key.removeprefix("0x"))
        from eth_account import Account

        try:
            return Account.from_key(key)
        except Exception:  # never chain the original: its message may quote the key
            raise PermanentError(f"connection {self.conn_id!r}: the password is not a valid private key",
                                 system=SYSTEM, reason="config:private_key") from None

    @property
    def address(self) -> str:
        return self.account.address

    # ----------------------------------------------------------------- raw JSON-RPC
    def rpc(self, method: str, params: list[Any] | None = None, *, timeout: float | None = None) -> Any:
        """One JSON-RPC call without web3's formatters (fast path for logs and hashes)."""
        return self.rpc_batch([(method, params or [])], timeout=timeout)[0]

    def rpc_batch(self, calls: list[tuple[str, list[Any]]], *, timeout: float | None = None) -> list[Any]:
        """Several calls in one HTTP request; results in call order; any error object raises."""
        if not calls:
            return []
        body = [{"jsonrpc": "2.0", "id": next(self._ids), "method": m, "params": p} for m, p in calls]
        try:
            response = self._session.post(self.rpc_url, data=json.dumps(body),
                                          headers={"Content-Type": "application/json"},
                                          timeout=timeout or self.timeout)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        if response.status_code >= 400:
            import requests

            raise requests.HTTPError(f"HTTP {response.status_code} from the EVM node", response=response)
        try:
            answers = response.json()
        except ValueError as exc:
            raise DataError("EVM node answered with malformed JSON", system=SYSTEM,
                            reason="malformed_response") from exc
        if isinstance(answers, dict):  # some nodes answer a batch error with one object
            answers = [answers]
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        results = []
        for request in body:
            answer = by_id.get(request["id"])
            if answer is None:
                raise DataError(f"EVM node did not answer {request['method']}", system=SYSTEM,
                                reason="malformed_response")
            if answer.get("error"):
                mapped = translate(_RpcError(answer["error"]))
                # The node answered (an error object): unlike a timeout or a reset, it did not take
                # the request. The transaction ledger relies on this to tell a refused send from an
                # ambiguous one.
                mapped.node_answered = True
                raise mapped from None
            results.append(answer.get("result"))
        return results

    def call_rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """An idempotent raw call, retried inside the hook on transient errors."""
        return self.read(lambda: self.rpc(method, params), what=method)

    # ----------------------------------------------------------------- reads
    def chain_id(self) -> int:
        return int(self.call_rpc("eth_chainId"), 16)

    def check_chain(self) -> int:
        """The node's chain id; a mismatch with ``extra.chain_id`` is a permanent configuration error."""
        if self._chain_checked is not None:
            return self._chain_checked
        actual = self.chain_id()
        expected = self.expected_chain_id
        if expected is not None and actual != expected:
            raise ChainMismatch(f"connection {self.conn_id!r} expects chain id {expected}, the node is on {actual}")
        self._chain_checked = actual
        return actual

    def block_number(self) -> int:
        return int(self.call_rpc("eth_blockNumber"), 16)

    def get_block(self, number: int | str = "latest", full: bool = False) -> dict[str, Any] | None:
        tag = hex(number) if isinstance(number, int) else number
        return self.call_rpc("eth_getBlockByNumber", [tag, full])

    def block_hashes(self, numbers: list[int]) -> dict[int, str | None]:
        """Hash of each block number (None above the tip), batched 100 per request."""
        out: dict[int, str | None] = {}
        for start in range(0, len(numbers), 100):
            part = numbers[start:start + 100]
            blocks = self.read(lambda part=part: self.rpc_batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in part]), what="eth_getBlockByNumber")
            for n, block in zip(part, blocks, strict=True):
                out[n] = block["hash"] if block else None
        return out

    def pending_nonce(self, address: str) -> int:
        return int(self.call_rpc("eth_getTransactionCount", [address, "pending"]), 16)

    def get_balance(self, address: str) -> int:
        return int(self.call_rpc("eth_getBalance", [address, "latest"]), 16)

    def get_code(self, address: str) -> str:
        return self.call_rpc("eth_getCode", [address, "latest"])

    def get_receipt(self, txid: str) -> dict[str, Any] | None:
        return self.call_rpc("eth_getTransactionReceipt", [txid])

    def get_transaction(self, txid: str) -> dict[str, Any] | None:
        return self.call_rpc("eth_getTransactionByHash", [txid])

    def eth_call(self, tx: dict[str, Any], block: str = "latest") -> str:
        """``eth_call``; a revert raises :class:`ContractReverted` with the reason."""
        return self.call_rpc("eth_call", [_jsonable_tx(tx), block])

    def get_logs(self, from_block: int, to_block: int, address: str | list[str] | None = None,
                 topics: list[Any] | None = None) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if address:
            flt["address"] = address
        if topics:
            flt["topics"] = topics
        return self.call_rpc("eth_getLogs", [flt])

    # ----------------------------------------------------------------- gas and fees
    def estimate_gas(self, tx: dict[str, Any]) -> int:
        """``eth_estimateGas`` times ``gas_margin``; a revert raises :class:`ContractReverted`."""
        estimate = int(self.call_rpc("eth_estimateGas", [_jsonable_tx(tx)]), 16)
        return int(estimate * self.gas_margin)

    def fees(self) -> Fees:
        """EIP-1559 fees: max fee = base fee of the pending block x multiplier + tip."""
        ttl = float(self._number("fee_cache_seconds", 1.0) or 0.0)
        now = time.monotonic()
        if self._fees and now - self._fees[0] < ttl:
            return self._fees[1]
        block = self.get_block("pending") or self.get_block("latest")
        base_fee = int(block.get("baseFeePerGas") or "0x0", 16) if block else 0
        configured = self._number("priority_fee_wei", None)
        if configured is not None:
            tip = int(configured)
        else:
            try:
                tip = int(self.call_rpc("eth_maxPriorityFeePerGas"), 16)
            except PermanentError:  # nodes without the method
                tip = GWEI
        multiplier = float(self._number("base_fee_multiplier", 2.0) or 2.0)
        max_fee = int(base_fee * multiplier) + tip
        cap = self._number("max_fee_cap_wei", None)
        if cap is not None and max_fee > cap:
            raise TransientError(f"max fee per gas {max_fee} wei is above the configured cap {int(cap)}",
                                 system=SYSTEM, reason="evm:fee_above_cap")
        fees = Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(tip, max_fee), base_fee=base_fee)
        self._fees = (now, fees)
        return fees

    # ----------------------------------------------------------------- signing and sending
    def sign(self, tx: dict[str, Any]) -> tuple[str, str]:
        """Sign an EIP-1559 transaction dict locally; returns (txid, raw_tx) as 0x hex."""
        self.check_chain()
        try:
            signed = self.account.sign_transaction(tx)
        except Exception as exc:
            raise translate(exc) from None
        return to_hex(signed.hash), to_hex(signed.raw_transaction)

    def send_raw(self, raw_tx: str, txid: str | None = None) -> str:
        """``eth_sendRawTransaction``. A node that already has the transaction counts as success.

        Not retried here: the caller decides (a repeat of the same raw bytes is safe, see the ledger).
        """
        if txid is None:
            from eth_utils import keccak

            txid = to_hex(keccak(hexstr=raw_tx))
        try:
            return self.rpc("eth_sendRawTransaction", [raw_tx])
        except AlreadyKnown:
            return txid
        except NonceTooLow:
            # Nodes answer "nonce too low" to a repeat of a transaction that is already mined.
            if self.get_transaction(txid) is not None:
                return txid
            raise

    # ----------------------------------------------------------------- connection test
    def probe(self) -> str:
        chain = self.check_chain()
        height = self.block_number()
        try:
            client = self.rpc("web3_clientVersion")
        except Exception:
            client = "unknown client"
        sender = ""
        if (self.connection.password or "").strip():
            sender = f", sender {self.address}"
        return f"chain id {chain} at block {height} ({client}){sender}"


class _RpcError(Exception):
    """A JSON-RPC error object from the node (then mapped by :func:`tributary.evm.errors.translate`)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"JSON-RPC error {error.get('code')}: {error.get('message')}")
        self.rpc_response = {"error": error}


def _jsonable_tx(tx: dict[str, Any]) -> dict[str, Any]:
    """A transaction dict with ints as hex quantities, for raw JSON-RPC."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if value is None:
            continue
        if key in ("value", "gas", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice", "nonce") \
                and isinstance(value, int):
            out[key] = hex(value)
        elif isinstance(value, bytes | bytearray):
            out[key] = to_hex(value)
        else:
            out[key] = value
    out.pop("chainId", None)
    out.pop("type", None)
    return out
