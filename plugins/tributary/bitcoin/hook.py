"""Bitcoin Core JSON-RPC: a hook with batching, per-call timeouts, in-hook retries of reads, and the
node's error codes mapped into the taxonomy.

Written against Bitcoin Core's documented interface (``doc/JSON-RPC-interface.md``,
``src/rpc/protocol.h``): requests are JSON-RPC 2.0 objects (Core >= 28 then answers HTTP 200 with
either ``result`` or ``error``); older nodes' 1.0-style answers (both keys, HTTP 500/404 on errors)
are read the same way. Wallet calls go to ``/wallet/<name>``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.addresses import normalize_network
from tributary.bitcoin.amounts import SATS_PER_BTC, btc_to_sats
from tributary.core.errors import (
    DataError,
    ErrorClass,
    JsonRpcError,
    PermanentError,
    TransientError,
)
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_secret
from tributary.core.retry import RetryPolicy

if TYPE_CHECKING:
    from bitcoin.core import CBlock


# Core's RPC error codes (src/rpc/protocol.h) and their class. Codes not listed fall back to the
# generic JSON-RPC rules in tributary.core.errors (reserved -32xxx ranges; otherwise permanent).
BITCOIN_CODE_CLASSES: dict[int, ErrorClass] = {
    -1: ErrorClass.PERMANENT,  # RPC_MISC_ERROR
    -3: ErrorClass.PERMANENT,  # RPC_TYPE_ERROR
    -5: ErrorClass.PERMANENT,  # RPC_INVALID_ADDRESS_OR_KEY (also: unknown block / transaction)
    -7: ErrorClass.TRANSIENT,  # RPC_OUT_OF_MEMORY
    -8: ErrorClass.PERMANENT,  # RPC_INVALID_PARAMETER
    -9: ErrorClass.TRANSIENT,  # RPC_CLIENT_NOT_CONNECTED (no peers yet)
    -10: ErrorClass.TRANSIENT,  # RPC_CLIENT_IN_INITIAL_DOWNLOAD
    -20: ErrorClass.PERMANENT,  # RPC_DATABASE_ERROR
    -22: ErrorClass.PERMANENT,  # RPC_DESERIALIZATION_ERROR
    -25: ErrorClass.PERMANENT,  # RPC_VERIFY_ERROR (e.g. missing inputs)
    -26: ErrorClass.PERMANENT,  # RPC_VERIFY_REJECTED (policy / consensus rejection, reason in message)
    -27: ErrorClass.PERMANENT,  # RPC_VERIFY_ALREADY_IN_CHAIN (send_raw_transaction turns it into success)
    -28: ErrorClass.TRANSIENT,  # RPC_IN_WARMUP
    -4: ErrorClass.PERMANENT,  # RPC_WALLET_ERROR
    -6: ErrorClass.PERMANENT,  # RPC_WALLET_INSUFFICIENT_FUNDS
    -11: ErrorClass.PERMANENT,  # RPC_WALLET_INVALID_LABEL_NAME
    -12: ErrorClass.PERMANENT,  # RPC_WALLET_KEYPOOL_RAN_OUT
    -13: ErrorClass.PERMANENT,  # RPC_WALLET_UNLOCK_NEEDED
    -14: ErrorClass.PERMANENT,  # RPC_WALLET_PASSPHRASE_INCORRECT
    -18: ErrorClass.PERMANENT,  # RPC_WALLET_NOT_FOUND
    -19: ErrorClass.PERMANENT,  # RPC_WALLET_NOT_SPECIFIED
    -32602: ErrorClass.PERMANENT,  # invalid params
}

# Calls without side effects (or whose repeat is a no-op): retried inside the hook on transient errors.
IDEMPOTENT_METHODS = frozenset({
    "getblockchaininfo", "getblockcount", "getbestblockhash", "getblockhash", "getblock", "getblockheader",
    "getblockstats", "getchaintips", "getrawtransaction", "getrawmempool", "getmempoolinfo", "getmempoolentry",
    "gettxout", "getnetworkinfo", "getnetworktotals", "uptime", "estimatesmartfee", "testmempoolaccept",
    "decoderawtransaction", "decodepsbt", "analyzepsbt", "finalizepsbt", "walletprocesspsbt",
    "getwalletinfo", "getbalances", "listunspent", "listwallets", "gettransaction", "getaddressinfo",
    "listtransactions", "listsinceblock", "getdescriptorinfo", "deriveaddresses",
})

# Default RPC ports by Core chain name (used when the Connection has a host but no port).
DEFAULT_RPC_PORTS = {"main": 8332, "test": 18332, "testnet4": 48332, "signet": 38332, "regtest": 18443}
CHAINS = tuple(DEFAULT_RPC_PORTS)
# -26 / -27 messages that mean "this transaction is already known": a repeated broadcast succeeded.
_ALREADY_KNOWN = ("txn-already-known", "txn-already-in-mempool", "already in block chain",
                  "already in utxo set", "outputs already in utxo set")
_DECIMAL_MARK = "__tributary_decimal__:"
_DECIMAL_TOKEN = re.compile(r'"' + _DECIMAL_MARK + r'([-+0-9.Ee]+)"')


# --------------------------------------------------------------------------- networks
def normalize_chain(name: str) -> str:
    """Core's chain name for a Connection's ``network`` extra (aliases as the address tables take them);
    an unknown one is a configuration mistake, so a permanent error."""
    try:
        return normalize_network(name)
    except ValueError as exc:
        raise PermanentError(f"unknown bitcoin network {name!r}; expected one of {', '.join(CHAINS)}",
                             system=SYSTEM, reason="config:network") from exc


def _encode(document: Any) -> bytes:
    """JSON with Decimals written as exact numbers (Core reads amounts as JSON numbers)."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"non-finite amount {value}")
            return _DECIMAL_MARK + format(value, "f")
        raise TypeError(f"cannot send {type(value).__name__} to bitcoind")

    text = json.dumps(document, default=default, separators=(",", ":"))
    return _DECIMAL_TOKEN.sub(r"\1", text).encode()


# --------------------------------------------------------------------------- errors
class BitcoinRpcError(JsonRpcError):
    """An error object from bitcoind; for -25/-26 the reason carries Core's reject text."""

    def __init__(self, code: int, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("code_classes", BITCOIN_CODE_CLASSES)
        kwargs.setdefault("system", SYSTEM)
        super().__init__(code, message, **kwargs)
        if code in (-25, -26) and message:
            self.reason = f"jsonrpc:{code}:{self.reject_reason}"

    @property
    def reject_reason(self) -> str:
        """Core's short reject reason ("min relay fee not met", "bad-txns-inputs-missingorspent", ...)."""
        return self.rpc_message.split(",")[0].split(" (")[0].strip()[:120]

    @property
    def already_known(self) -> bool:
        text = self.rpc_message.lower()
        return self.code == -27 or (self.code in (-25, -26) and any(m in text for m in _ALREADY_KNOWN))



# --------------------------------------------------------------------------- hook
class BitcoinCoreHook(TributaryHook):
    """Talks to a Bitcoin Core node (or anything serving its JSON-RPC) from a ``tributary_bitcoin`` Connection.

    Connection fields: ``host`` (``127.0.0.1``, or a full URL ``http://node:18443``), ``port`` (default
    by ``network``: 8332 / 18332 / 48332 / 38332 / 18443), ``login`` / ``password`` (``rpcauth`` user).
    Extra:

    * ``cookie_file``  path of Core's ``.cookie`` (``__cookie__:<password>``), used when there is no
      login; re-read after an HTTP 401 because Core writes a new one at every start
    * ``wallet``       default wallet: calls go to ``/wallet/<name>`` (override per call)
    * ``network``      the chain this connection must be on: main, test, testnet4, signet, regtest;
      ``test_connection`` / :meth:`check_chain` fail when the node says otherwise
    * ``timeout``      seconds per HTTP request (default 30; override per call)
    * ``batch_size``   calls per HTTP request in :meth:`batch_chunked` (default 500)
    """

    default_conn_name = "tributary_bitcoin"
    conn_type = "tributary_bitcoin"
    hook_name = "Tributary: Bitcoin Core"
    system = SYSTEM
    default_timeout = 30.0
    default_batch_size: ClassVar[int] = 500

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        wallet: str | None = None,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(conn_id, timeout=timeout, retry_policy=retry_policy)
        self._wallet = wallet
        self._ids = itertools.count(1)
        self._cookie: tuple[str, str] | None = None

    # ----------------------------------------------------------------- settings
    @property
    def network(self) -> str | None:
        name = self.extra.get("network")
        return normalize_chain(str(name)) if name else None

    @property
    def wallet(self) -> str | None:
        return self._wallet if self._wallet is not None else (self.extra.get("wallet") or None)

    @property
    def batch_size(self) -> int:
        return int(self.extra.get("batch_size") or self.default_batch_size)

    @cached_property
    def base_url(self) -> str:
        return self.http_base_url(DEFAULT_RPC_PORTS[self.network or "main"])

    def endpoint(self, wallet: str | None = None) -> str:
        """The URL for a call; ``wallet=None`` means the hook's wallet, ``""`` the node (no wallet)."""
        name = self.wallet if wallet is None else wallet
        return f"{self.base_url}/wallet/{quote(name, safe='')}" if name else self.base_url

    def _read_cookie(self) -> tuple[str, str]:
        path = Path(str(self.extra["cookie_file"])).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError as exc:
            # Core deletes the cookie on shutdown and writes it once it starts: wait for it.
            raise TransientError(f"cookie file {path} does not exist (is bitcoind running?)", system=self.system,
                                 reason="auth:cookie_missing") from exc
        except OSError as exc:
            raise PermanentError(f"cookie file {path} is not readable: {exc.strerror}", system=self.system,
                                 reason="config:cookie_file") from exc
        user, sep, password = text.partition(":")
        if not sep or not password:
            raise PermanentError(f"cookie file {path} is not '<user>:<password>'", system=self.system,
                                 reason="config:cookie_file")
        mask_secret(password)
        return user, password

    def _auth(self, *, refresh: bool = False) -> tuple[str, str] | None:
        if self.connection.login:
            return self.connection.login, self.connection.password or ""
        if self.extra.get("cookie_file"):
            if self._cookie is None or refresh:
                self._cookie = self._read_cookie()
            return self._cookie
        return None

    @property
    def _uses_cookie(self) -> bool:
        return not self.connection.login and bool(self.extra.get("cookie_file"))

    @cached_property
    def session(self) -> Any:
        return self.get_conn()

    def get_conn(self) -> Any:
        return self.json_session(**{"Content-Type": "application/json"})

    # ----------------------------------------------------------------- transport
    def _post(self, document: Any, *, wallet: str | None, timeout: float | None) -> Any:
        """POST one JSON-RPC document; returns the decoded JSON answer (Decimals for numbers with a point)."""
        import requests

        url = self.endpoint(wallet)
        seconds = self.timeout if timeout is None else timeout
        body = _encode(document)
        for attempt in (1, 2):
            try:
                response = self.session.post(url, data=body, auth=self._auth(refresh=attempt == 2), timeout=seconds)
            except requests.Timeout as exc:
                raise TransientError(f"bitcoind at {url} did not answer within {seconds:g}s", system=self.system,
                                     reason="network:timeout") from exc
            except requests.ConnectionError as exc:
                raise TransientError(f"bitcoind at {url} is unreachable ({type(exc).__name__})", system=self.system,
                                     reason="network:connection") from exc
            if response.status_code == 401 and attempt == 1 and self._uses_cookie:
                continue  # the node restarted and wrote a new cookie: read it again, once
            break
        return self._decode(response, url)

    def _decode(self, response: Any, url: str) -> Any:
        status = response.status_code
        if status in (401, 403):
            what = "rejected the credentials" if status == 401 else "refused this client (rpcallowip?)"
            raise PermanentError(f"bitcoind at {url} {what} (HTTP {status})", system=self.system,
                                 reason=f"http:{status}:credentials")
        try:
            document = json.loads(response.content, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            snippet = response.content[:120].decode("utf-8", "replace").strip()
            if status >= 500 or status in (408, 425, 429):
                raise TransientError(f"bitcoind at {url} answered HTTP {status} without a JSON-RPC body: {snippet!r}",
                                     system=self.system, reason=f"http:{status}") from exc
            if status != 200:
                raise PermanentError(f"bitcoind at {url} answered HTTP {status}: {snippet!r}", system=self.system,
                                     reason=f"http:{status}") from exc
            raise DataError(f"bitcoind at {url} answered something that is not JSON: {snippet!r}",
                            system=self.system, reason="malformed_response") from exc
        if not isinstance(document, dict | list):
            raise DataError(f"bitcoind at {url} answered JSON that is not a JSON-RPC response: {document!r:.120}",
                            system=self.system, reason="malformed_response")
        return document

    def _outcome(self, answer: Any, request_id: int) -> Any:
        """The result of one JSON-RPC response object, or the error it carries (returned, not raised)."""
        if not isinstance(answer, dict):
            raise DataError(f"JSON-RPC response is not an object: {answer!r:.120}", system=self.system,
                            reason="malformed_response")
        if answer.get("id") != request_id:
            raise DataError(f"JSON-RPC response has id {answer.get('id')!r}, expected {request_id}",
                            system=self.system, reason="malformed_response")
        error = answer.get("error")
        if error is not None:
            return BitcoinRpcError.from_object(error, system=self.system, code_classes=BITCOIN_CODE_CLASSES)
        if "result" not in answer:
            raise DataError("JSON-RPC response has neither result nor error", system=self.system,
                            reason="malformed_response")
        return answer["result"]

    def _call_once(self, method: str, params: list[Any], wallet: str | None, timeout: float | None) -> Any:
        request_id = next(self._ids)
        answer = self._post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
                            wallet=wallet, timeout=timeout)
        outcome = self._outcome(answer, request_id)
        if isinstance(outcome, BitcoinRpcError):
            raise outcome
        return outcome

    # ----------------------------------------------------------------- calls
    def call(self, method: str, *params: Any, wallet: str | None = None, timeout: float | None = None,
             retry: bool | None = None) -> Any:
        """One RPC. Reads (``IDEMPOTENT_METHODS``) are retried on transient errors unless ``retry=False``."""
        def once() -> Any:
            return self._call_once(method, list(params), wallet, timeout)

        if (method in IDEMPOTENT_METHODS) if retry is None else retry:
            return self.read(once, method)
        return once()

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, wallet: str | None = None,
              timeout: float | None = None, raise_errors: bool = True, retry: bool | None = None) -> list[Any]:
        """Several calls in one HTTP POST; results in the order of ``calls``.

        A per-call error is raised (the first one, in call order) or, with ``raise_errors=False``,
        returned in its place as a :class:`BitcoinRpcError` (classified; see ``classify``). The batch is
        retried as a whole on transient errors when every method in it is idempotent.
        """
        if not calls:
            return []

        def once() -> list[Any]:
            ids = [next(self._ids) for _ in calls]
            document = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                        for i, (m, p) in zip(ids, calls, strict=True)]
            answer = self._post(document, wallet=wallet, timeout=timeout)
            if isinstance(answer, dict) and answer.get("error") is not None:
                raise BitcoinRpcError.from_object(answer["error"], system=self.system)  # the batch itself failed
            if not isinstance(answer, list):
                raise DataError("JSON-RPC batch answered with a single object", system=self.system,
                                reason="malformed_response")
            by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
            missing = [i for i in ids if i not in by_id]
            if missing or len(answer) != len(ids):
                raise DataError(f"JSON-RPC batch of {len(ids)} answered {len(answer)} items"
                                + (f", missing ids {missing[:5]}" if missing else ""),
                                system=self.system, reason="malformed_response")
            results = [self._outcome(by_id[i], i) for i in ids]
            if raise_errors:
                for result in results:
                    if isinstance(result, BitcoinRpcError):
                        raise result
            return results

        idempotent = all(m in IDEMPOTENT_METHODS for m, _ in calls)
        if idempotent if retry is None else retry:
            return self.read(once, f"batch:{calls[0][0]}x{len(calls)}")
        return once()

    def iter_batches(self, calls: Iterable[tuple[str, Sequence[Any]]], *, chunk_size: int | None = None,
                     **kwargs: Any) -> Iterator[list[Any]]:
        """:meth:`batch` over successive chunks of ``calls`` (one HTTP request each), yielding per chunk."""
        size = chunk_size or self.batch_size
        chunk: list[tuple[str, Sequence[Any]]] = []
        for call in calls:
            chunk.append(call)
            if len(chunk) >= size:
                yield self.batch(chunk, **kwargs)
                chunk = []
        if chunk:
            yield self.batch(chunk, **kwargs)

    def batch_chunked(self, calls: Iterable[tuple[str, Sequence[Any]]], *, chunk_size: int | None = None,
                      **kwargs: Any) -> list[Any]:
        """All results of a large batch, sent ``chunk_size`` calls per HTTP request."""
        return [result for chunk in self.iter_batches(calls, chunk_size=chunk_size, **kwargs) for result in chunk]

    # ----------------------------------------------------------------- connection test
    def check_chain(self) -> dict[str, Any]:
        """``getblockchaininfo``, failing (permanent) when the node is not on the Connection's ``network``."""
        info = self.get_blockchain_info()
        expected = self.network
        if expected is not None and info.get("chain") != expected:
            raise PermanentError(f"bitcoind at {self.base_url} is on chain {info.get('chain')!r}, the connection "
                                 f"expects {expected!r}", system=self.system, reason="config:chain_mismatch")
        return info

    def chain_name(self) -> str:
        """Core's name of the node's chain (main, test, testnet4, signet, regtest), checked against the
        Connection's ``network``. It picks the address encoding, and it is the ``chain`` the warehouse
        tables store when a DAG run gives no ``chain_label``."""
        info = self.check_chain()
        chain = info.get("chain")
        if not isinstance(chain, str) or not chain:
            raise DataError(f"getblockchaininfo has no chain name: {info!r:.120}", system=self.system,
                            reason="malformed_response")
        return chain

    def probe(self) -> str:
        info = self.check_chain()
        return f"chain {info.get('chain')}, height {info.get('blocks')}, best {info.get('bestblockhash')}"

    # ----------------------------------------------------------------- chain reads
    def get_blockchain_info(self) -> dict[str, Any]:
        return self.call("getblockchaininfo", wallet="")

    def get_block_count(self) -> int:
        return int(self.call("getblockcount", wallet=""))

    def get_best_block_hash(self) -> str:
        return str(self.call("getbestblockhash", wallet=""))

    def get_block_hash(self, height: int) -> str:
        return str(self.call("getblockhash", height, wallet=""))

    def get_block_hashes(self, start: int, stop: int, *, chunk_size: int | None = None) -> list[str]:
        """Hashes of heights ``start..stop`` inclusive, batched."""
        calls = (("getblockhash", [h]) for h in range(start, stop + 1))
        return [str(h) for h in self.batch_chunked(calls, chunk_size=chunk_size, wallet="")]

    def get_block_header(self, block_hash: str) -> dict[str, Any]:
        return self.call("getblockheader", block_hash, True, wallet="")

    def get_block_bytes(self, block_hash: str, *, timeout: float | None = None) -> bytes:
        """The serialised block (``getblock <hash> 0``)."""
        return self._hex_bytes(self.call("getblock", block_hash, 0, wallet="", timeout=timeout), "getblock")

    def get_blocks_bytes(self, hashes: Sequence[str], *, chunk_size: int = 20,
                         timeout: float | None = None) -> list[bytes]:
        """Several serialised blocks, ``chunk_size`` per HTTP request (blocks are up to 4 MB each)."""
        calls = [("getblock", [h, 0]) for h in hashes]
        answers = self.batch_chunked(calls, chunk_size=chunk_size, wallet="", timeout=timeout)
        return [self._hex_bytes(a, "getblock") for a in answers]

    def get_block_raw(self, block_hash: str, *, timeout: float | None = None) -> CBlock:
        """The block as python-bitcoinlib's ``CBlock``; its hash must be the one asked for."""
        from bitcoin.core import CBlock, b2lx

        raw = self.get_block_bytes(block_hash, timeout=timeout)
        try:
            block = CBlock.deserialize(raw)
        except Exception as exc:
            raise DataError(f"getblock {block_hash}: not a block ({exc})", system=self.system,
                            reason="malformed_response") from exc
        if b2lx(block.GetHash()) != block_hash:
            raise DataError(f"getblock {block_hash} answered block {b2lx(block.GetHash())}", system=self.system,
                            reason="malformed_response")
        return block

    def get_raw_transaction(self, txid: str, *, verbose: bool = False, block_hash: str | None = None) -> Any:
        """Hex (or the decoded object with ``verbose``); ``block_hash`` finds non-mempool txs without txindex."""
        params: list[Any] = [txid, 1 if verbose else 0]
        if block_hash:
            params.append(block_hash)
        return self.call("getrawtransaction", *params, wallet="")

    def get_raw_mempool(self, *, verbose: bool = False) -> Any:
        return self.call("getrawmempool", verbose, wallet="")

    def estimate_smart_fee(self, conf_target: int, mode: str = "conservative") -> dict[str, Any]:
        """Core's answer, plus ``feerate_sat_vb`` (Decimal) when it has an estimate."""
        answer = dict(self.call("estimatesmartfee", conf_target, mode, wallet=""))
        if answer.get("feerate") is not None:
            answer["feerate_sat_vb"] = Decimal(answer["feerate"]) * SATS_PER_BTC / 1000
        return answer

    # ----------------------------------------------------------------- broadcasting
    def test_mempool_accept(self, raw_txs: Sequence[str], max_fee_rate: Decimal | None = None) -> list[dict[str, Any]]:
        params: list[Any] = [list(raw_txs)]
        if max_fee_rate is not None:
            params.append(max_fee_rate)
        return list(self.call("testmempoolaccept", *params, wallet=""))

    def send_raw_transaction(self, raw_tx: str, max_fee_rate: Decimal | None = None, *,
                             timeout: float | None = None) -> str:
        """Broadcast; returns the txid. A transaction the node already has counts as sent.

        Retrying a broadcast is safe only because of that rule: a repeat answers the txid (already in
        the mempool) or -27 / "txn-already-known" (already mined or known), both returned as success.
        """
        from bitcoin.core import CTransaction, b2lx

        try:
            txid = b2lx(CTransaction.deserialize(bytes.fromhex(raw_tx)).GetTxid())
        except Exception as exc:
            raise PermanentError(f"not a serialised transaction: {exc}", system=self.system,
                                 reason="invalid_transaction") from exc
        params: list[Any] = [raw_tx] + ([max_fee_rate] if max_fee_rate is not None else [])

        def once() -> str:
            try:
                answer = self._call_once("sendrawtransaction", params, "", timeout)
            except BitcoinRpcError as exc:
                if exc.already_known:
                    self.log.info("transaction %s already known to the node (%s)", txid, exc.rpc_message)
                    return txid
                raise
            if answer != txid:
                raise DataError(f"sendrawtransaction answered txid {answer!r}, expected {txid}", system=self.system,
                                reason="malformed_response")
            return txid

        return self.read(once, "sendrawtransaction")

    # ----------------------------------------------------------------- wallet (PSBT settlement)
    def get_new_address(self, label: str = "", address_type: str | None = None, *,
                        wallet: str | None = None) -> str:
        params: list[Any] = [label] + ([address_type] if address_type else [])
        return str(self.call("getnewaddress", *params, wallet=wallet))

    def list_unspent(self, minconf: int = 1, maxconf: int = 9_999_999, addresses: Sequence[str] | None = None, *,
                     wallet: str | None = None) -> list[dict[str, Any]]:
        """Core's rows, each with ``amount_sats`` added next to ``amount`` (Decimal BTC)."""
        rows = self.call("listunspent", minconf, maxconf, list(addresses or []), wallet=wallet)
        return [{**row, "amount_sats": btc_to_sats(row["amount"])} for row in rows]

    def wallet_create_funded_psbt(self, inputs: Sequence[Mapping[str, Any]],
                                  outputs: Sequence[Mapping[str, Any]] | Mapping[str, Any], locktime: int = 0,
                                  options: Mapping[str, Any] | None = None, *, wallet: str | None = None,
                                  ) -> dict[str, Any]:
        """``{"psbt", "fee", "changepos"}``; amounts in ``outputs`` as Decimal BTC (see :func:`sats_to_btc`).

        Not retried: a repeat would fund a second, different PSBT (and lock more coins with lockUnspents).
        """
        outs = [dict(o) for o in outputs] if isinstance(outputs, Sequence) else dict(outputs)
        answer = self.call("walletcreatefundedpsbt", [dict(i) for i in inputs], outs, locktime, dict(options or {}),
                           wallet=wallet)
        return {**answer, "fee_sats": btc_to_sats(answer["fee"])} if "fee" in answer else answer

    def wallet_process_psbt(self, psbt: str, sign: bool = True, sighash_type: str = "ALL",
                            bip32derivs: bool = True, finalize: bool = True, *,
                            wallet: str | None = None) -> dict[str, Any]:
        return self.call("walletprocesspsbt", psbt, sign, sighash_type, bip32derivs, finalize, wallet=wallet)

    def finalize_psbt(self, psbt: str, extract: bool = True) -> dict[str, Any]:
        return self.call("finalizepsbt", psbt, extract, wallet="")

    def get_transaction(self, txid: str, *, wallet: str | None = None) -> dict[str, Any]:
        return self.call("gettransaction", txid, wallet=wallet)

    def bump_fee(self, txid: str, options: Mapping[str, Any] | None = None, *,
                 wallet: str | None = None) -> dict[str, Any]:
        """Replace-by-fee; not retried (it broadcasts a new transaction)."""
        params: list[Any] = [txid] + ([dict(options)] if options else [])
        return self.call("bumpfee", *params, wallet=wallet)

    # ----------------------------------------------------------------- helpers
    def _hex_bytes(self, answer: Any, what: str) -> bytes:
        try:
            return bytes.fromhex(answer)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what} answered something that is not hex: {answer!r:.80}", system=self.system,
                            reason="malformed_response") from exc
