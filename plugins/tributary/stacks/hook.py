"""stacks-core node RPC: node info, accounts, read-only calls, contract interfaces, broadcasting
signed transactions and reading their outcome, with the node's rejections mapped into the taxonomy.

Written against ``shared/specs/stacks/rpc/openapi.yaml`` (the stacks-core RPC, not the Hiro API
server): ``GET /v2/info``, ``GET /v2/accounts/{principal}?proof=0``,
``POST /v2/contracts/call-read/{address}/{contract}/{function}``,
``GET /v2/contracts/interface/{address}/{contract}``, ``POST /v2/transactions`` (octet-stream) and
``GET /v3/transaction/{txid}`` (404 until the transaction is in a block),
``GET /v2/transactions/unconfirmed/{txid}`` (the mempool).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import quote

from tributary.core.errors import DataError, ErrorClass, PermanentError, TransientError
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.core.retry import RetryPolicy
from tributary.stacks import SYSTEM
from tributary.stacks.clarity import CV, ClarityError, deserialize, to_repr
from tributary.stacks.transactions import (
    Network,
    PostConditionMode,
    PrivateKey,
    SignedTransaction,
    TransactionError,
    make_contract_call,
    make_contract_deploy,
)

DEFAULT_PORT = 20443
# Rejections a later attempt may not see (the node is busy or behind).
TRANSIENT_REASONS = frozenset({"ServerFailureNoSuchChainTip", "ServerFailureDatabase", "TooMuchChaining",
                               "TemporarilyBlacklisted", "EstimatorError"})


class StacksRejection(PermanentError):
    """``POST /v2/transactions`` answered 400 with the spec's ``TransactionSubmissionError``."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self.node_reason = str(document.get("reason") or "Unknown")
        self.reason_data = document.get("reason_data")
        self.txid = document.get("txid")
        detail = f" {json.dumps(self.reason_data, sort_keys=True)}" if self.reason_data else ""
        super().__init__(f"node rejected transaction {self.txid}: {self.node_reason}{detail}", system=SYSTEM,
                         reason=f"rejected:{self.node_reason}")
        if self.node_reason.startswith("Signature"):
            # A signature that does not verify is a key or tampering problem: security class, high severity.
            self.error_class = ErrorClass.SECURITY


@dataclass(frozen=True)
class Account:
    balance: int
    locked: int
    nonce: int


@dataclass(frozen=True)
class TransactionOutcome:
    """``GET /v3/transaction/{txid}``: the block, the result and (from the devnet's extension) the status."""

    txid: str
    index_block_hash: str
    block_height: int | None
    result: CV | None
    result_repr: str
    tx_status: str  # success | abort_by_response | abort_by_post_condition | unknown

    @property
    def succeeded(self) -> bool:
        if self.tx_status != "unknown":
            return self.tx_status == "success"
        return self.result is not None and self.result.type != "err"

    def as_dict(self) -> dict[str, Any]:
        return {"txid": self.txid, "index_block_hash": self.index_block_hash, "block_height": self.block_height,
                "tx_status": self.tx_status, "result": self.result.to_json() if self.result else None,
                "result_repr": self.result_repr}



class StacksHook(TributaryHook):
    """Talks to a stacks-core node (or the devnet double) from a ``tributary_stacks`` Connection.

    Connection fields: ``host`` (``http://node:20443`` or a bare host), ``port`` (default 20443),
    ``password``: the sender's private key in hex, as stacks.js writes it (66 hex ending ``01`` for a
    compressed public key; 64 hex means an uncompressed one). It is masked in logs, used only to sign
    inside the task, and never returned or put in XCom. Extra:

    * ``network``  ``mainnet`` or ``testnet`` (default): transaction version, chain id, address version;
      ``test_connection`` fails when the node's ``network_id`` says otherwise
    * ``chain_id`` override of the chain id (e.g. a subnet); default by ``network``
    * ``timeout``  seconds per HTTP request (default 30)
    * ``fee``      default fee in micro-STX for transactions (default 10000)
    """

    default_conn_name = "tributary_stacks"
    conn_type = "tributary_stacks"
    hook_name = "Tributary: Stacks node"
    system = SYSTEM
    default_timeout = 30.0
    default_fee: ClassVar[int] = 10_000

    def __init__(self, conn_id: str | None = None, *, timeout: float | None = None,
                 retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(conn_id, timeout=timeout, retry_policy=retry_policy)

    # ----------------------------------------------------------------- settings
    @cached_property
    def network(self) -> Network:
        name = str(self.extra.get("network") or "testnet").strip().lower()
        try:
            return Network(name)
        except ValueError:
            raise PermanentError(f"connection {self.conn_id!r}: network must be mainnet or testnet, not {name!r}",
                                 system=self.system, reason="config:network") from None

    @property
    def chain_id(self) -> int:
        value = self.extra.get("chain_id")
        return int(value, 0) if isinstance(value, str) else int(value) if value is not None else self.network.chain_id

    @property
    def fee(self) -> int:
        return int(self.extra.get("fee") or self.default_fee)

    @cached_property
    def base_url(self) -> str:
        return self.http_base_url(DEFAULT_PORT)

    @cached_property
    def _key(self) -> PrivateKey:
        secret = (self.connection.password or "").strip()
        if not secret:
            raise PermanentError(f"connection {self.conn_id!r} has no private key (password) to sign with",
                                 system=self.system, reason="config:no_key")
        mask_secret(secret)
        try:
            return PrivateKey.from_hex(secret)
        except TransactionError as exc:
            raise PermanentError(f"connection {self.conn_id!r}: {exc}", system=self.system,
                                 reason="config:bad_key") from None

    @property
    def sender_address(self) -> str:
        """The address of the Connection's key on its network."""
        return self._key.address(self.network)

    @cached_property
    def session(self) -> Any:
        return self.get_conn()

    def get_conn(self) -> Any:
        return self.json_session()

    # ----------------------------------------------------------------- transport
    def _request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None, allow_404: bool = False) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, json=json_body, data=data, headers=dict(headers or {}),
                                            timeout=self.timeout)
        except requests.Timeout as exc:
            raise TransientError(f"stacks node at {url} did not answer within {self.timeout:g}s",
                                 system=self.system, reason="network:timeout") from exc
        except requests.ConnectionError as exc:
            raise TransientError(f"stacks node at {url} is unreachable ({type(exc).__name__})",
                                 system=self.system, reason="network:connection") from exc
        status = response.status_code
        text = response.text[:300].strip()
        if status == 404 and allow_404:
            return None
        if status >= 500 or status in (408, 425, 429):
            raise TransientError(f"stacks node {method} {path} answered HTTP {status}: {text!r}",
                                 system=self.system, reason=f"http:{status}")
        if status in (401, 403):
            raise PermanentError(f"stacks node {method} {path} refused this client (HTTP {status})",
                                 system=self.system, reason=f"http:{status}:credentials")
        if status >= 400:
            return self._client_error(method, path, response)
        try:
            return response.json()
        except ValueError as exc:
            raise DataError(f"stacks node {method} {path} answered something that is not JSON: {text!r}",
                            system=self.system, reason="malformed_response") from exc

    def _client_error(self, method: str, path: str, response: Any) -> Any:
        try:
            document = response.json()
        except ValueError:
            document = None
        if isinstance(document, Mapping) and "reason" in document and "error" in document:
            rejection = StacksRejection(document)
            if rejection.node_reason in TRANSIENT_REASONS:
                raise TransientError(str(rejection), system=self.system, reason=rejection.reason)
            raise rejection
        raise PermanentError(f"stacks node {method} {path} answered HTTP {response.status_code}: "
                             f"{response.text[:300].strip()!r}", system=self.system,
                             reason=f"http:{response.status_code}")

    def _get(self, path: str, *, allow_404: bool = False) -> Any:
        return self.read(lambda: self._request("GET", path, allow_404=allow_404), f"GET {path.split('?')[0]}")

    # ----------------------------------------------------------------- reads
    def get_info(self) -> dict[str, Any]:
        return dict(self._get("/v2/info"))

    def get_account(self, principal: str) -> Account:
        doc = self._get(f"/v2/accounts/{quote(principal, safe='.')}?proof=0")
        try:
            return Account(balance=int(doc["balance"], 16), locked=int(doc.get("locked") or "0x0", 16),
                           nonce=int(doc["nonce"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"/v2/accounts/{principal} answered {doc!r:.200}", system=self.system,
                            reason="malformed_response") from exc

    def get_nonce(self, principal: str | None = None) -> int:
        return self.get_account(principal or self.sender_address).nonce

    def get_contract_interface(self, contract_address: str, contract_name: str) -> dict[str, Any] | None:
        """The contract's ABI, or ``None`` when the node has no such contract."""
        doc = self._get(f"/v2/contracts/interface/{contract_address}/{contract_name}", allow_404=True)
        return dict(doc) if doc is not None else None

    def call_read(self, contract_address: str, contract_name: str, function: str, args: Sequence[CV] = (),
                  *, sender: str | None = None) -> CV:
        """Run a read-only function; returns the decoded Clarity value. A failed call is permanent."""
        path = f"/v2/contracts/call-read/{contract_address}/{contract_name}/{quote(function, safe='')}"
        body = {"sender": sender or self._read_sender(contract_address), "arguments": [a.hex() for a in args]}
        doc = self.read(lambda: self._request("POST", path, json_body=body, allow_404=True), f"call-read {function}")
        if doc is None:
            raise PermanentError(f"no contract {contract_address}.{contract_name} on the node", system=self.system,
                                 reason="no_such_contract")
        if not doc.get("okay"):
            raise PermanentError(f"read-only call {contract_name}.{function} failed: {doc.get('cause')}",
                                 system=self.system, reason="call_read_failed")
        try:
            return deserialize(doc["result"])
        except (KeyError, ClarityError) as exc:
            raise DataError(f"call-read {function} answered an undecodable result: {doc!r:.200}",
                            system=self.system, reason="malformed_response") from exc

    def _read_sender(self, fallback: str) -> str:
        try:
            return self.sender_address
        except PermanentError:  # read-only use without a key: any principal may be the caller
            return fallback

    def get_transaction(self, txid: str) -> TransactionOutcome | None:
        """The mined transaction, or ``None`` while it is not in a block (or unknown to the node)."""
        doc = self._get(f"/v3/transaction/{txid}", allow_404=True)
        if doc is None:
            return None
        result: CV | None = None
        result_text = str(doc.get("result") or "")
        for candidate in (doc.get("result_hex"), result_text):
            if isinstance(candidate, str) and candidate:
                try:
                    result = deserialize(candidate)
                    break
                except ClarityError:
                    continue
        status = str(doc.get("tx_status") or "unknown")
        return TransactionOutcome(txid=txid, index_block_hash=str(doc.get("index_block_hash", "")),
                                  block_height=doc.get("block_height"), result=result,
                                  result_repr=to_repr(result) if result is not None else result_text,
                                  tx_status=status)

    def get_mempool_transaction(self, txid: str) -> dict[str, Any] | None:
        """``GET /v2/transactions/unconfirmed/{txid}``: ``{"tx", "status"}`` while it waits in the mempool."""
        doc = self._get(f"/v2/transactions/unconfirmed/{txid}", allow_404=True)
        return dict(doc) if isinstance(doc, Mapping) else None

    def is_known(self, txid: str) -> bool:
        """In a block or in the mempool: a broadcast of the same bytes is not needed."""
        return self.get_transaction(txid) is not None or self.get_mempool_transaction(txid) is not None

    def wait_for_transaction(self, txid: str, *, timeout: float = 120.0, poll_interval: float = 2.0,
                             ) -> TransactionOutcome:
        """Poll ``/v3/transaction`` until the transaction is in a block; transient when time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = self.get_transaction(txid)
            if outcome is not None:
                return outcome
            if time.monotonic() >= deadline:
                raise TransientError(f"transaction {txid} is not in a block after {timeout:g}s", system=self.system,
                                     reason="tx:not_mined_yet")
            time.sleep(poll_interval)

    # ----------------------------------------------------------------- transactions
    def build_contract_call(self, contract_address: str, contract_name: str, function: str, args: Sequence[CV], *,
                            nonce: int, fee: int | None = None,
                            post_condition_mode: PostConditionMode = PostConditionMode.DENY) -> SignedTransaction:
        return make_contract_call(self._key, self.network, contract_address=contract_address,
                                  contract_name=contract_name, function=function, args=args, nonce=nonce,
                                  fee=self.fee if fee is None else fee, post_condition_mode=post_condition_mode,
                                  chain_id=self.chain_id)

    def build_contract_deploy(self, contract_name: str, source: str, *, nonce: int, fee: int | None = None,
                              clarity_version: int | None = None,
                              post_condition_mode: PostConditionMode = PostConditionMode.DENY) -> SignedTransaction:
        return make_contract_deploy(self._key, self.network, contract_name=contract_name, source=source,
                                    nonce=nonce, fee=self.fee if fee is None else fee,
                                    clarity_version=clarity_version, post_condition_mode=post_condition_mode,
                                    chain_id=self.chain_id)

    def broadcast(self, raw: bytes | SignedTransaction) -> str:
        """``POST /v2/transactions``; returns the txid. Not retried here: the caller's ledger decides.

        A rejection raises :class:`StacksRejection` (permanent, reason ``rejected:<node reason>``, e.g.
        ``rejected:BadNonce`` with ``reason_data`` {actual, expected}, ``rejected:SignatureValidation``).
        """
        data = raw.raw if isinstance(raw, SignedTransaction) else bytes(raw)
        answer = self._request("POST", "/v2/transactions", data=data,
                               headers={"Content-Type": "application/octet-stream"})
        txid = str(answer).strip().strip('"').removeprefix("0x")
        if len(txid) != 64:
            raise DataError(f"/v2/transactions answered {answer!r:.100}, not a txid", system=self.system,
                            reason="malformed_response")
        return txid

    # ----------------------------------------------------------------- connection test
    def probe(self) -> str:
        info = self.get_info()
        network_id = info.get("network_id")
        if network_id is not None and int(network_id) != self.chain_id:
            raise PermanentError(f"stacks node at {self.base_url} is on network_id {network_id}, the connection "
                                 f"expects {self.network} (chain id {self.chain_id})", system=self.system,
                                 reason="config:network_mismatch")
        return (f"{self.network} node, peer version {info.get('peer_version')}, burn height "
                f"{info.get('burn_block_height')}, stacks tip height {info.get('stacks_tip_height')}"
                f" ({info.get('server_version', 'unknown server')})")
