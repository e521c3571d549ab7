"""Bitcoin Core RPC methods of the devnet, with Core's parameter names, JSON shapes and errors."""

from __future__ import annotations

import inspect
import re
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from bitcoin.core import CBlock, CTransaction, b2lx

from .chain import BLOCK_WORK, REGTEST_TARGET, Chain, Rejected
from .encoding import Amount, address_of, to_sats, tx_json, tx_vsize
from .errors import (
    DESERIALIZATION_ERROR,
    INVALID_ADDRESS_OR_KEY,
    INVALID_PARAMETER,
    METHOD_NOT_FOUND,
    MISC_ERROR,
    TYPE_ERROR,
    WALLET_ALREADY_LOADED,
    WALLET_ERROR,
    WALLET_NOT_FOUND,
    WALLET_NOT_SPECIFIED,
    RPCError,
)
from .kernel import BlockRejected
from .wallet import Wallet, all_final, check_param, decode_address, finalize_inputs, parse_psbt

REGTEST_DIFFICULTY = 4.656542373906925e-10
DEFAULT_MAX_FEERATE_SAT_PER_KVB = 10_000_000  # 0.10 BTC/kvB, sendrawtransaction's default maxfeerate
FALLBACK_FEERATE_SAT_VB = 20.0  # Core's historic -fallbackfee (0.0002 BTC/kvB); see README
FEE_FLOOR_BTC_KVB = 1000  # sat/kvB: the minimum relay fee, estimatesmartfee's floor
VERSION = 280000
SUBVERSION = "/Satoshi:28.0.0(tributary-devnet)/"


def _hash_param(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(value)} is not of expected type string")
    if len(value) != 64:
        raise RPCError(INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value}')")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise RPCError(INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')")
    return value.lower()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _int_param(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or int(value) != value:
        raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(value)} is not of expected type number")
    return int(value)


def _verbosity(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    return _int_param(value)


def _decode_tx(hexstring: Any) -> CTransaction:
    if not isinstance(hexstring, str):
        raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(hexstring)} is not of expected type string")
    try:
        tx = CTransaction.deserialize(bytes.fromhex(hexstring))
    except Exception:
        raise RPCError(DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.") from None
    return tx


def _feerate_sat_vb(btc_per_kvb: Any) -> float:
    return to_sats(btc_per_kvb) / 1000


class Node:
    """Dispatches RPC calls; ``wallet_name`` is the /wallet/<name> endpoint or None."""

    def __init__(self, datadir: Path):
        self.datadir = datadir
        self.chain = Chain(datadir)
        self.started = time.time()
        self.wallets: dict[str, Wallet] = {}
        self.wallet_dir = self.chain.dir / "wallets"
        self.wallet_dir.mkdir(exist_ok=True)
        settings = self.chain.dir / "settings.json"
        if settings.exists():
            import json

            for name in json.loads(settings.read_text()).get("wallet", []):
                if (self.wallet_dir / name / "wallet.json").exists():
                    self.wallets[name] = Wallet(name, self.wallet_dir / name, self.chain)
        self.methods: dict[str, Callable[..., Any]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("rpc_")
        }

    def close(self) -> None:
        self.chain.close()

    def _save_settings(self) -> None:
        import json

        (self.chain.dir / "settings.json").write_text(json.dumps({"wallet": list(self.wallets)}))

    # ----- dispatch ---------------------------------------------------------------------------
    def call(self, method: Any, params: Any, wallet_name: str | None) -> Any:
        if not isinstance(method, str):
            raise RPCError(-32600, "Method must be a string")
        fn = self.methods.get(method)
        if fn is None:
            raise RPCError(METHOD_NOT_FOUND, "Method not found")
        signature = inspect.signature(fn)
        names = [p for p in signature.parameters if p != "_wallet"]
        if params is None:
            params = []
        if isinstance(params, dict):
            unknown = [k for k in params if k not in names]
            if unknown:
                raise RPCError(INVALID_PARAMETER, f"Unknown named parameter {unknown[0]}")
            kwargs = dict(params)
        elif isinstance(params, list):
            if len(params) > len(names):
                raise RPCError(MISC_ERROR, f"{method}: too many positional arguments (see help {method})")
            kwargs = dict(zip(names, params, strict=False))
        else:
            raise RPCError(-32600, "Params must be an array or object")
        for name in names:
            param = signature.parameters[name]
            if param.default is inspect.Parameter.empty and kwargs.get(name) is None:
                raise RPCError(MISC_ERROR, f"{method} {' '.join(names)}: missing required argument '{name}'")
            if kwargs.get(name, 0) is None:
                kwargs.pop(name)  # null means "use the default", as in Core
        if "_wallet" in signature.parameters:
            kwargs["_wallet"] = self._wallet(wallet_name)
        return fn(**kwargs)

    def _wallet(self, name: str | None) -> Wallet:
        if name is not None:
            if name not in self.wallets:
                raise RPCError(WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
            return self.wallets[name]
        if not self.wallets:
            raise RPCError(
                WALLET_NOT_FOUND,
                "No wallet is loaded. Load a wallet using loadwallet or create a "
                "new one with createwallet. (Note: A default wallet is no longer automatically created)",
            )
        if len(self.wallets) > 1:
            raise RPCError(
                WALLET_NOT_SPECIFIED,
                "Multiple wallets are loaded. Please select which wallet to use "
                "by requesting the RPC through the /wallet/<walletname> URI path.",
            )
        return next(iter(self.wallets.values()))

    def _entry(self, blockhash: Any):
        block_hash = _hash_param(blockhash, "blockhash")
        entry = self.chain.index.get(block_hash)
        if entry is None:
            raise RPCError(INVALID_ADDRESS_OR_KEY, "Block not found")
        return entry

    # ----- blockchain -------------------------------------------------------------------------
    def _confirmations(self, entry) -> int:
        return self.chain.height - entry.height + 1 if self.chain.is_active(entry.hash) else -1

    def rpc_getblockchaininfo(self) -> dict[str, Any]:
        tip = self.chain.tip
        size = sum(len(e.raw) for e in self.chain.index.values())
        return {
            "chain": "regtest",
            "blocks": self.chain.height,
            "headers": max(e.height for e in self.chain.index.values() if not self.chain.is_invalid(e.hash)),
            "bestblockhash": tip.hash,
            "bits": f"{tip.block.nBits:08x}",
            "target": f"{REGTEST_TARGET:064x}",
            "difficulty": REGTEST_DIFFICULTY,
            "time": tip.block.nTime,
            "mediantime": self.chain.median_time_past(tip),
            "verificationprogress": 1,
            "initialblockdownload": self.chain.height == 0,
            "chainwork": f"{self.chain.chainwork(tip):064x}",
            "size_on_disk": size,
            "pruned": False,
            "warnings": [],
        }

    def rpc_getblockcount(self) -> int:
        return self.chain.height

    def rpc_getbestblockhash(self) -> str:
        return self.chain.tip.hash

    def rpc_getblockhash(self, height) -> str:
        height = _int_param(height)
        if height < 0 or height > self.chain.height:
            raise RPCError(INVALID_PARAMETER, "Block height out of range")
        return self.chain.active[height]

    def _header_json(self, entry) -> dict[str, Any]:
        block = entry.block
        out: dict[str, Any] = {
            "hash": entry.hash,
            "confirmations": self._confirmations(entry),
            "height": entry.height,
            "version": block.nVersion,
            "versionHex": f"{block.nVersion & 0xFFFFFFFF:08x}",
            "merkleroot": b2lx(block.hashMerkleRoot),
            "time": block.nTime,
            "mediantime": self.chain.median_time_past(entry),
            "nonce": block.nNonce,
            "bits": f"{block.nBits:08x}",
            "target": f"{REGTEST_TARGET:064x}",
            "difficulty": REGTEST_DIFFICULTY,
            "chainwork": f"{BLOCK_WORK * (entry.height + 1):064x}",
            "nTx": len(block.vtx),
        }
        if entry.prev:
            out["previousblockhash"] = entry.prev
        nxt = self.chain.next_hash(entry)
        if nxt:
            out["nextblockhash"] = nxt
        return out

    def rpc_getblockheader(self, blockhash, verbose=True) -> Any:
        entry = self._entry(blockhash)
        if not verbose:
            return entry.raw[:80].hex()
        return self._header_json(entry)

    def rpc_getblock(self, blockhash, verbosity=1) -> Any:
        entry = self._entry(blockhash)
        verbosity = _verbosity(verbosity)
        if verbosity <= 0:
            return entry.raw.hex()
        out = self._header_json(entry)
        block = entry.block
        stripped = (
            80
            + len(_varint(len(block.vtx)))
            + sum(len(tx.serialize(params={"include_witness": False})) for tx in block.vtx)
        )
        out.update({"strippedsize": stripped, "size": len(entry.raw), "weight": stripped * 3 + len(entry.raw)})
        if verbosity == 1:
            out["tx"] = [b2lx(tx.GetTxid()) for tx in block.vtx]
        else:
            out["tx"] = [tx_json(tx, fee=entry.fees.get(b2lx(tx.GetTxid()))) for tx in block.vtx]
        return out

    def rpc_getrawtransaction(self, txid, verbose=0, blockhash=None) -> Any:
        txid = _hash_param(txid, "parameter 1")
        verbosity = _verbosity(verbose)
        found = None
        if blockhash is not None:
            entry = self._entry(blockhash)
            for tx in entry.block.vtx:
                if b2lx(tx.GetTxid()) == txid:
                    found = (tx, entry)
            if found is None:
                raise RPCError(
                    INVALID_ADDRESS_OR_KEY,
                    "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                )
        else:
            found = self.chain.find_tx(txid)
        if found is None:
            raise RPCError(
                INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
            )
        tx, entry = found
        if verbosity <= 0:
            return tx.serialize().hex()
        out = tx_json(tx, fee=entry.fees.get(txid) if (entry and verbosity >= 2) else None)
        if entry is not None:
            out["blockhash"] = entry.hash
            out["confirmations"] = max(self._confirmations(entry), 0)
            out["time"] = entry.block.nTime
            out["blocktime"] = entry.block.nTime
            if blockhash is not None:
                out = {"in_active_chain": self.chain.is_active(entry.hash), **out}
        return out

    def rpc_decoderawtransaction(self, hexstring, iswitness=None) -> Any:
        return tx_json(_decode_tx(hexstring), include_hex=False)

    def _mempool_entry(self, txid: str) -> dict[str, Any]:
        chain = self.chain
        m = chain.mempool[txid]
        anc = chain.ancestors(txid)
        desc = chain.descendants(txid)
        return {
            "vsize": m.vsize,
            "weight": m.weight,
            "time": m.time,
            "height": m.height,
            "descendantcount": len(desc) + 1,
            "descendantsize": m.vsize + sum(chain.mempool[d].vsize for d in desc),
            "ancestorcount": len(anc) + 1,
            "ancestorsize": m.vsize + sum(chain.mempool[a].vsize for a in anc),
            "wtxid": b2lx(m.tx.GetHash()),
            "fees": {
                "base": Amount(m.fee),
                "modified": Amount(m.fee),
                "ancestor": Amount(m.fee + sum(chain.mempool[a].fee for a in anc)),
                "descendant": Amount(m.fee + sum(chain.mempool[d].fee for d in desc)),
            },
            "depends": sorted(m.parents),
            "spentby": sorted(t for t, c in chain.mempool.items() if txid in c.parents),
            "bip125-replaceable": any(i.nSequence < 0xFFFFFFFE for i in m.tx.vin),
            "unbroadcast": False,
        }

    def rpc_getrawmempool(self, verbose=False, mempool_sequence=False) -> Any:
        if verbose:
            return {txid: self._mempool_entry(txid) for txid in self.chain.mempool}
        return list(self.chain.mempool)

    def rpc_getmempoolentry(self, txid) -> Any:
        txid = _hash_param(txid, "parameter 1")
        if txid not in self.chain.mempool:
            raise RPCError(INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        return self._mempool_entry(txid)

    def rpc_getmempoolinfo(self) -> Any:
        pool = self.chain.mempool.values()
        return {
            "loaded": True,
            "size": len(pool),
            "bytes": sum(m.vsize for m in pool),
            "usage": sum(m.weight for m in pool),
            "total_fee": Amount(sum(m.fee for m in pool)),
            "maxmempool": 300_000_000,
            "mempoolminfee": Amount(FEE_FLOOR_BTC_KVB),
            "minrelaytxfee": Amount(FEE_FLOOR_BTC_KVB),
            "incrementalrelayfee": Amount(1000),
            "unbroadcastcount": 0,
            "fullrbf": True,
        }

    def rpc_sendrawtransaction(self, hexstring, maxfeerate=None, maxburnamount=None) -> str:
        tx = _decode_tx(hexstring)
        max_rate = DEFAULT_MAX_FEERATE_SAT_PER_KVB if maxfeerate is None else to_sats(maxfeerate)
        txid = b2lx(tx.GetTxid())
        if txid in self.chain.mempool:
            return txid  # already in the mempool: Core returns the txid again
        try:
            self.chain.accept(tx, max_fee_sat_per_kvb=max_rate or None)
        except Rejected as exc:
            if exc.reason == "max-fee-exceeded":
                raise RPCError(
                    exc.code, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"
                ) from None
            raise
        return txid

    def rpc_testmempoolaccept(self, rawtxs, maxfeerate=None) -> list[dict[str, Any]]:
        if not isinstance(rawtxs, list):
            raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(rawtxs)} is not of expected type array")
        max_rate = DEFAULT_MAX_FEERATE_SAT_PER_KVB if maxfeerate is None else to_sats(maxfeerate)
        results = []
        for raw in rawtxs:
            tx = _decode_tx(raw)
            item: dict[str, Any] = {"txid": b2lx(tx.GetTxid()), "wtxid": b2lx(tx.GetHash())}
            try:
                m = self.chain.accept(tx, test_only=True, max_fee_sat_per_kvb=max_rate or None)
            except Rejected as exc:
                reason = exc.reason.split(", ")[0] if exc.reason.startswith(("bad-txns", "min relay")) else exc.reason
                item.update({"allowed": False, "reject-reason": reason})
            else:
                item.update(
                    {
                        "allowed": True,
                        "vsize": m.vsize,
                        "fees": {
                            "base": Amount(m.fee),
                            "effective-feerate": Amount(m.fee * 1000 // m.vsize),
                            "effective-includes": [item["wtxid"]],
                        },
                    }
                )
            results.append(item)
        return results

    def rpc_estimatesmartfee(self, conf_target, estimate_mode="economical") -> dict[str, Any]:
        target = _int_param(conf_target)
        if target < 1 or target > 1008:
            raise RPCError(INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        rates = []
        for block_hash in self.chain.active[-6:]:
            entry = self.chain.index[block_hash]
            for tx in entry.block.vtx[1:]:
                fee = entry.fees.get(b2lx(tx.GetTxid()))
                if fee is not None:
                    rates.append(fee * 1000 // tx_vsize(tx))
        rates += [m.fee * 1000 // m.vsize for m in self.chain.mempool.values()]
        rate = max(int(statistics.median(rates)) if rates else 0, FEE_FLOOR_BTC_KVB)
        return {"feerate": Amount(rate), "blocks": max(target, 2) if target == 1 else target}

    def _payout_script(self, address: Any) -> bytes:
        try:
            return decode_address(address)
        except RPCError as exc:
            if exc.code == INVALID_ADDRESS_OR_KEY:
                raise RPCError(INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None  # generatetoaddress's text
            raise

    def rpc_generatetoaddress(self, nblocks, address, maxtries=1_000_000) -> list[str]:
        n = _int_param(nblocks)
        spk = self._payout_script(address)
        return [self._mine(spk) for _ in range(n)]

    def _mine(self, spk: bytes, txs: list[CTransaction] | None = None) -> str:
        raw = self.chain.build_block(spk, txs)
        try:
            return self.chain.submit_block(raw).hash
        except BlockRejected as exc:
            raise RPCError(MISC_ERROR, f"ProcessNewBlock, block not accepted: {exc.reason}") from None

    def rpc_generateblock(self, output, transactions, submit=True) -> dict[str, Any]:
        spk = self._payout_script(output)
        txs = []
        for item in transactions:
            if isinstance(item, str) and len(item) == 64 and item in self.chain.mempool:
                txs.append(self.chain.mempool[item].tx)
            elif isinstance(item, str) and len(item) == 64:
                raise RPCError(INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
            else:
                tx = _decode_tx(item)
                self.chain.accept(tx, test_only=True)
                txs.append(tx)
        raw = self.chain.build_block(spk, txs)
        if not submit:
            return {"hash": b2lx(CBlock.deserialize(raw).GetHash()), "hex": raw.hex()}
        for tx in txs:
            if b2lx(tx.GetTxid()) not in self.chain.mempool:
                self.chain.accept(tx)
        try:
            return {"hash": self.chain.submit_block(raw).hash}
        except BlockRejected as exc:
            raise RPCError(MISC_ERROR, f"TestBlockValidity failed: {exc.reason}") from None

    def rpc_submitblock(self, hexdata, dummy=None) -> Any:
        try:
            raw = bytes.fromhex(hexdata)
            block = CBlock.deserialize(raw)
        except Exception:
            raise RPCError(DESERIALIZATION_ERROR, "Block decode failed") from None
        if b2lx(block.GetHash()) in self.chain.index:
            return "duplicate"
        try:
            self.chain.submit_block(raw)
        except BlockRejected as exc:
            return exc.reason
        return None

    def rpc_invalidateblock(self, blockhash) -> None:
        self.chain.invalidate(self._entry(blockhash).hash)

    def rpc_reconsiderblock(self, blockhash) -> None:
        self.chain.reconsider(self._entry(blockhash).hash)

    def rpc_getchaintips(self) -> list[dict[str, Any]]:
        chain = self.chain
        has_child = {e.prev for e in chain.index.values()}
        tips = []
        for entry in chain.index.values():
            if entry.hash in has_child and entry.hash != chain.tip.hash:
                continue
            cursor = entry
            while not chain.is_active(cursor.hash):
                cursor = chain.index[cursor.prev]
            status = (
                "active"
                if entry.hash == chain.tip.hash
                else ("invalid" if chain.is_invalid(entry.hash) else "valid-fork")
            )
            tips.append(
                {
                    "height": entry.height,
                    "hash": entry.hash,
                    "branchlen": entry.height - cursor.height,
                    "status": status,
                }
            )
        return sorted(tips, key=lambda t: -t["height"])

    def rpc_uptime(self) -> int:
        return int(time.time() - self.started)

    def rpc_getnetworkinfo(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "subversion": SUBVERSION,
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": Amount(FEE_FLOOR_BTC_KVB),
            "incrementalfee": Amount(1000),
            "localaddresses": [],
            "warnings": [],
        }

    def rpc_ping(self) -> None:
        return None

    def rpc_stop(self) -> str:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)
        return "Bitcoin Core stopping"

    # ----- wallet -----------------------------------------------------------------------------
    def _wallet_path(self, name: Any) -> Path:
        if not isinstance(name, str) or "/" in name or name in (".", ".."):
            raise RPCError(WALLET_ERROR, "Invalid wallet name")
        return self.wallet_dir / (name or "default_wallet")

    def rpc_createwallet(
        self,
        wallet_name,
        disable_private_keys=False,
        blank=False,
        passphrase=None,
        avoid_reuse=False,
        descriptors=True,
        load_on_startup=None,
        external_signer=False,
    ) -> dict[str, Any]:
        path = self._wallet_path(wallet_name)
        if path.exists():
            raise RPCError(
                WALLET_ERROR,
                f"Wallet file verification failed. Failed to create database path '{path}'. Database already exists.",
            )
        self.wallets[wallet_name] = Wallet.create(wallet_name, path, self.chain)
        self._save_settings()
        return {"name": wallet_name}

    def rpc_loadwallet(self, filename, load_on_startup=None) -> dict[str, Any]:
        path = self._wallet_path(filename)
        if filename in self.wallets:
            raise RPCError(WALLET_ALREADY_LOADED, f'Wallet "{filename}" is already loaded.')
        if not (path / "wallet.json").exists():
            raise RPCError(
                WALLET_NOT_FOUND,
                f"Wallet file verification failed. Failed to load database path '{path}'. Path does not exist.",
            )
        self.wallets[filename] = Wallet(filename, path, self.chain)
        self._save_settings()
        return {"name": filename}

    def rpc_unloadwallet(self, wallet_name=None, load_on_startup=None) -> dict[str, Any]:
        name = wallet_name if wallet_name is not None else self._wallet(None).name
        if name not in self.wallets:
            raise RPCError(WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
        self.wallets.pop(name).unload()
        self._save_settings()
        return {}

    def rpc_listwallets(self) -> list[str]:
        return list(self.wallets)

    def rpc_listwalletdir(self) -> dict[str, Any]:
        return {
            "wallets": [
                {"name": p.name, "warnings": []}
                for p in sorted(self.wallet_dir.iterdir())
                if (p / "wallet.json").exists()
            ]
        }

    def rpc_getwalletinfo(self, _wallet) -> dict[str, Any]:
        bal = _wallet.balances()["mine"]
        return {
            "walletname": _wallet.name,
            "walletversion": 169900,
            "format": "sqlite",
            "balance": bal["trusted"],
            "unconfirmed_balance": bal["untrusted_pending"],
            "immature_balance": bal["immature"],
            "txcount": len(_wallet.all_transactions()),
            "keypoolsize": 1000,
            "keypoolsize_hd_internal": 1000,
            "paytxfee": Amount(0),
            "private_keys_enabled": True,
            "avoid_reuse": False,
            "scanning": False,
            "descriptors": True,
            "external_signer": False,
            "blank": False,
            "lastprocessedblock": {"hash": self.chain.tip.hash, "height": self.chain.height},
        }

    def rpc_getnewaddress(self, _wallet, label="", address_type=None) -> str:
        if address_type not in (None, "bech32"):
            raise RPCError(INVALID_ADDRESS_OR_KEY, f"Unknown address type '{address_type}'")
        from embit.script import Script

        return Script(_wallet.new_script(label=label)).address(_wallet_network())

    def rpc_getrawchangeaddress(self, _wallet, address_type=None) -> str:
        from embit.script import Script

        return Script(_wallet.new_script(change=True)).address(_wallet_network())

    def rpc_getaddressinfo(self, _wallet, address) -> dict[str, Any]:
        spk = decode_address(address)
        from .encoding import descriptor_of

        mine = _wallet.is_mine(spk)
        out: dict[str, Any] = {
            "address": address,
            "scriptPubKey": spk.hex(),
            "ismine": mine,
            "solvable": mine,
            "desc": _wallet.descriptor(spk) if mine else descriptor_of(spk),
            "iswatchonly": False,
            "isscript": False,
            "iswitness": spk[0] == 0 or spk[0] > 0x50,
            "ischange": _wallet.is_change(spk) if mine else False,
            "labels": [],
        }
        if mine:
            out["pubkey"] = _wallet.pubkey(spk).sec().hex()
            out["parent_desc"] = _wallet.parent_descriptor(spk)
        return out

    def rpc_getbalances(self, _wallet) -> dict[str, Any]:
        return _wallet.balances()

    def rpc_getbalance(self, _wallet, dummy=None, minconf=0, include_watchonly=True, avoid_reuse=True) -> Amount:
        if dummy not in (None, "*"):
            raise RPCError(-32, 'dummy first argument must be excluded or set to "*".')
        minconf = _int_param(minconf)
        total = sum(c.coin.value for c in _wallet.coins() if c.trusted and c.confirmations >= minconf)
        return Amount(total)

    def rpc_getunconfirmedbalance(self, _wallet) -> Amount:
        return _wallet.balances()["mine"]["untrusted_pending"]

    def rpc_listunspent(
        self, _wallet, minconf=1, maxconf=9999999, addresses=None, include_unsafe=True, query_options=None
    ) -> list[dict[str, Any]]:
        from embit.script import Script

        wanted = {decode_address(a) for a in addresses} if addresses else None
        result = []
        for c in sorted(_wallet.coins(), key=lambda c: (-c.confirmations, c.txid, c.vout)):
            if _wallet.is_locked(c.txid, c.vout):  # Core's AvailableCoins skips locked coins
                continue
            if not (_int_param(minconf) <= c.confirmations <= _int_param(maxconf)):
                continue
            if wanted is not None and c.coin.spk not in wanted:
                continue
            if not c.trusted and not include_unsafe:
                continue
            address = Script(c.coin.spk).address(_wallet_network())
            item: dict[str, Any] = {"txid": c.txid, "vout": c.vout, "address": address}
            if not _wallet.is_change(c.coin.spk):
                item["label"] = _wallet.labels.get(address, "")
            item.update(
                {
                    "scriptPubKey": c.coin.spk.hex(),
                    "amount": Amount(c.coin.value),
                    "confirmations": c.confirmations,
                    "spendable": True,
                    "solvable": True,
                    "desc": _wallet.descriptor(c.coin.spk),
                    "parent_descs": [_wallet.parent_descriptor(c.coin.spk)],
                    "safe": c.trusted,
                }
            )
            if c.confirmations == 0:
                m = self.chain.mempool[c.txid]
                anc = self.chain.ancestors(c.txid)
                item["ancestorcount"] = len(anc) + 1
                item["ancestorsize"] = m.vsize + sum(self.chain.mempool[a].vsize for a in anc)
                item["ancestorfees"] = m.fee + sum(self.chain.mempool[a].fee for a in anc)
            result.append(item)
        return result

    def _parse_outputs(self, outputs: Any) -> list[tuple[bytes, int]]:
        if isinstance(outputs, dict):
            outputs = [{k: v} for k, v in outputs.items()]
        if not isinstance(outputs, list):
            raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(outputs)} is not of expected type array")
        parsed = []
        seen = set()
        for item in outputs:
            if not isinstance(item, dict):
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, key-value pair not an object as expected")
            for key, value in item.items():
                if key == "data":
                    data = bytes.fromhex(value)
                    parsed.append((bytes([0x6A, len(data)]) + data, 0))
                    continue
                spk = decode_address(key)
                if key in seen:
                    raise RPCError(INVALID_PARAMETER, f"Invalid parameter, duplicated address: {key}")
                seen.add(key)
                amount = to_sats(value)
                if amount <= 0:
                    raise RPCError(TYPE_ERROR, "Amount out of range")
                parsed.append((spk, amount))
        if not parsed:
            raise RPCError(INVALID_PARAMETER, "Invalid parameter, output argument must be non-null")
        return parsed

    def _fee_rate(self, options: dict[str, Any]) -> float:
        if options.get("fee_rate") is not None and options.get("feeRate") is not None:
            raise RPCError(INVALID_PARAMETER, "Cannot specify both fee_rate (sat/vB) and feeRate (BTC/kvB)")
        if options.get("fee_rate") is not None:
            rate = float(Decimal(str(options["fee_rate"])))
        elif options.get("feeRate") is not None:
            rate = _feerate_sat_vb(options["feeRate"])
        else:
            return FALLBACK_FEERATE_SAT_VB
        if rate < 1:
            raise RPCError(
                WALLET_ERROR, f"Fee rate ({rate:.3f} sat/vB) is lower than the minimum fee rate setting (1.000 sat/vB)"
            )
        return rate

    def rpc_walletcreatefundedpsbt(
        self, _wallet, inputs=None, outputs=None, locktime=0, options=None, bip32derivs=True
    ) -> dict[str, Any]:
        options = options or {}
        if outputs is None:
            raise RPCError(MISC_ERROR, "walletcreatefundedpsbt: missing required argument 'outputs'")
        parsed = self._parse_outputs(outputs)
        subtract = options.get("subtractFeeFromOutputs", [])
        for pos in subtract:
            check_param(
                isinstance(pos, int) and 0 <= pos < len(parsed), f"Invalid parameter, vout index out of bounds: {pos}"
            )
        selected = [(_hash_param(i["txid"], "txid"), _int_param(i["vout"])) for i in (inputs or [])]
        tx, fee, change_pos = _wallet.fund(
            parsed,
            self._fee_rate(options),
            subtract,
            _int_param(locktime),
            bool(options.get("replaceable", True)),
            selected,
        )
        if options.get("lockUnspents", options.get("lock_unspents", False)):
            for txin in tx.vin:  # as Core's FundTransaction: in memory only (not persistent)
                _wallet.locked.setdefault((txin.txid.hex(), txin.vout), False)
        psbt = _wallet.to_psbt(tx)
        return {"psbt": psbt.to_string(), "fee": Amount(fee), "changepos": change_pos}

    def rpc_lockunspent(self, _wallet, unlock, transactions=None, persistent=False) -> bool:
        """Core's src/wallet/rpc/coins.cpp: every outpoint is checked before any lock changes."""
        if not isinstance(unlock, bool):
            raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(unlock)} is not of expected type bool")
        if not isinstance(persistent, bool):
            raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(persistent)} is not of expected type bool")
        _wallet.unlock_spent()
        if transactions is None:
            if unlock:  # no outputs: unlock everything (persistent locks too)
                _wallet.locked.clear()
                _wallet.save()
            return True
        if not isinstance(transactions, list):
            raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(transactions)} is not of expected type array")
        known = _wallet.all_transactions()
        outpoints: list[tuple[str, int]] = []
        for item in transactions:
            if not isinstance(item, dict):
                raise RPCError(TYPE_ERROR, f"JSON value of type {_json_type(item)} is not of expected type object")
            for key, kind in (("txid", "string"), ("vout", "number")):
                if key not in item:
                    raise RPCError(TYPE_ERROR, f"Missing {key}")
                if _json_type(item[key]) != kind:
                    raise RPCError(TYPE_ERROR, f"Expected type {kind} for {key}, got {_json_type(item[key])}")
            txid, n = _hash_param(item["txid"], "txid"), _int_param(item["vout"])
            if n < 0:
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            if txid not in known:
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, unknown transaction")
            if n >= len(known[txid][0].vout):
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, vout index out of bounds")
            if _wallet.is_spent(txid, n):
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, expected unspent output")
            locked = (txid, n) in _wallet.locked
            if unlock and not locked:
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, expected locked output")
            if not unlock and locked and not persistent:
                raise RPCError(INVALID_PARAMETER, "Invalid parameter, output already locked")
            outpoints.append((txid, n))
        for outpoint in outpoints:
            if unlock:
                _wallet.locked.pop(outpoint, None)  # unlocking clears persistent and in-memory locks
            else:
                _wallet.locked[outpoint] = bool(persistent)
        if unlock or persistent:
            _wallet.save()
        return True

    def rpc_listlockunspent(self, _wallet) -> list[dict[str, Any]]:
        _wallet.unlock_spent()
        # std::set<COutPoint> order: the txid's internal (little-endian) bytes, then the index
        ordered = sorted(_wallet.locked, key=lambda o: (bytes.fromhex(o[0])[::-1], o[1]))
        return [{"txid": txid, "vout": n} for txid, n in ordered]

    def rpc_walletprocesspsbt(
        self, _wallet, psbt, sign=True, sighashtype="DEFAULT", bip32derivs=True, finalize=True
    ) -> dict[str, Any]:
        parsed, complete = _wallet.process_psbt(parse_psbt(psbt), bool(sign), bool(finalize))
        out: dict[str, Any] = {"psbt": parsed.to_string(), "complete": complete}
        if complete and finalize:
            from embit.finalizer import finalize_psbt

            out["hex"] = finalize_psbt(parsed).serialize().hex()
        return out

    def rpc_finalizepsbt(self, psbt, extract=True) -> dict[str, Any]:
        parsed = parse_psbt(psbt)
        complete = finalize_inputs(parsed) or all_final(parsed)
        if complete and extract:
            from embit.finalizer import finalize_psbt

            return {"hex": finalize_psbt(parsed).serialize().hex(), "complete": True}
        return {"psbt": parsed.to_string(), "complete": complete}

    def rpc_decodepsbt(self, psbt) -> dict[str, Any]:
        parsed = parse_psbt(psbt)
        ctx = CTransaction.deserialize(parsed.tx.serialize())
        inputs, total_in, known = [], 0, True
        for pinp in parsed.inputs:
            item: dict[str, Any] = {}
            if pinp.witness_utxo is not None:
                spk = pinp.witness_utxo.script_pubkey.data
                from .encoding import script_pubkey_json

                item["witness_utxo"] = {
                    "amount": Amount(pinp.witness_utxo.value),
                    "scriptPubKey": script_pubkey_json(spk),
                }
                total_in += pinp.witness_utxo.value
            else:
                known = False
            if pinp.partial_sigs:
                item["partial_signatures"] = {k.sec().hex(): v.hex() for k, v in pinp.partial_sigs.items()}
            if pinp.final_scriptwitness:
                item["final_scriptwitness"] = [bytes(w).hex() for w in pinp.final_scriptwitness.items]
            inputs.append(item)
        out: dict[str, Any] = {
            "tx": tx_json(ctx, include_hex=False),
            "global_xpubs": [],
            "psbt_version": 0,
            "proprietary": [],
            "unknown": {},
            "inputs": inputs,
            "outputs": [{} for _ in parsed.outputs],
        }
        if known:
            out["fee"] = Amount(total_in - sum(o.nValue for o in ctx.vout))
        return out

    def _broadcast(self, _wallet: Wallet, tx: CTransaction) -> str:
        self.chain.accept(tx)
        return b2lx(tx.GetTxid())

    def rpc_sendtoaddress(
        self,
        _wallet,
        address,
        amount,
        comment=None,
        comment_to=None,
        subtractfeefromamount=False,
        replaceable=True,
        conf_target=None,
        estimate_mode=None,
        avoid_reuse=None,
        fee_rate=None,
        verbose=False,
    ) -> Any:
        outputs = self._parse_outputs([{address: amount}])
        options = {"fee_rate": fee_rate} if fee_rate is not None else {}
        tx, _fee, _ = _wallet.fund(
            outputs, self._fee_rate(options), [0] if subtractfeefromamount else [], self.chain.height, bool(replaceable)
        )
        txid = self._broadcast(_wallet, _wallet.sign_tx(tx))
        return {"txid": txid, "fee_reason": "Fallback fee"} if verbose else txid

    def rpc_bumpfee(self, _wallet, txid, options=None) -> dict[str, Any]:
        options = options or {}
        txid = _hash_param(txid, "parameter 1")
        chain = self.chain
        if txid not in _wallet.all_transactions():
            raise RPCError(INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
        if txid in chain.txindex:
            raise RPCError(WALLET_ERROR, "Transaction has been mined, or is conflicted with a mined transaction")
        if txid in chain.replaced_by:
            raise RPCError(
                WALLET_ERROR,
                f"Cannot bump transaction {txid} which was already bumped by transaction {chain.replaced_by[txid]}",
            )
        if txid not in chain.mempool:
            raise RPCError(WALLET_ERROR, "Transaction not eligible for fee bumping")
        old = chain.mempool[txid]
        if not _wallet.from_me_trusted(old.tx):
            raise RPCError(WALLET_ERROR, "Transaction contains inputs that don't belong to this wallet")
        if chain.descendants(txid):
            raise RPCError(WALLET_ERROR, "Transaction has descendants in the wallet")
        change_pos = next((n for n, o in enumerate(old.tx.vout) if _wallet.is_change(bytes(o.scriptPubKey))), None)
        if change_pos is None:
            raise RPCError(WALLET_ERROR, "Transaction does not have a change output")
        old_rate = old.fee / old.vsize
        min_fee = old.fee + old.vsize  # + incremental relay fee (1 sat/vB)
        if options.get("fee_rate") is not None or options.get("feeRate") is not None:
            new_fee = int(-(-self._fee_rate(options) * old.vsize // 1))
            if new_fee < min_fee:
                raise RPCError(
                    INVALID_PARAMETER,
                    f"Insufficient total fee {Amount(new_fee).btc()}, must be at "
                    f"least {Amount(min_fee).btc()} (oldFee {Amount(old.fee).btc()} + incrementalFee "
                    f"{Amount(old.vsize).btc()})",
                )
        else:
            new_fee = max(min_fee, int(-(-(old_rate + 1) * old.vsize // 1)))
        from embit.transaction import Transaction

        new_tx = Transaction.parse(old.tx.serialize())
        for txin in new_tx.vin:
            txin.witness = None
            from embit.script import Witness

            txin.witness = Witness([])
            if options.get("replaceable", True):
                txin.sequence = min(txin.sequence, 0xFFFFFFFD)
        change = new_tx.vout[change_pos]
        change.value -= new_fee - old.fee
        if change.value < 294:
            raise RPCError(WALLET_ERROR, "Change output is too small to bump the fee")
        signed = _wallet.sign_tx(new_tx)
        new_txid = self._broadcast(_wallet, signed)
        _wallet.replaces[new_txid] = txid
        _wallet.save()
        return {"txid": new_txid, "origfee": Amount(old.fee), "fee": Amount(new_fee), "errors": []}

    def rpc_gettransaction(self, _wallet, txid, include_watchonly=True, verbose=False) -> dict[str, Any]:
        txid = _hash_param(txid, "txid")
        txs = _wallet.all_transactions()
        if txid not in txs:
            raise RPCError(INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
        tx, entry = txs[txid]
        chain = self.chain
        if entry is not None and not chain.is_active(entry.hash):
            entry = None
        debit, credit = _wallet.debit(tx), _wallet.credit(tx)
        value_out = sum(o.nValue for o in tx.vout)
        fee = debit - value_out if debit else None
        confirmations = chain.height - entry.height + 1 if entry else 0
        out: dict[str, Any] = {"amount": Amount(credit - debit + (fee or 0))}
        if fee is not None:
            out["fee"] = Amount(-fee)
        out["confirmations"] = confirmations
        if tx.is_coinbase():
            out["generated"] = True
        if confirmations == 0:
            out["trusted"] = txid in chain.mempool and _wallet.from_me_trusted(tx)
        if entry is not None:
            out.update(
                {
                    "blockhash": entry.hash,
                    "blockheight": entry.height,
                    "blockindex": chain.txindex[txid][1],
                    "blocktime": entry.block.nTime,
                }
            )
        spent = {(b2lx(i.prevout.hash), i.prevout.n) for i in tx.vin}
        conflicts = sorted(
            other
            for other, (otx, _) in txs.items()
            if other != txid
            and not otx.is_coinbase()
            and spent & {(b2lx(i.prevout.hash), i.prevout.n) for i in otx.vin}
        )
        recorded = _wallet.txs.get(txid, {})
        when = recorded.get("time") or (entry.block.nTime if entry else int(time.time()))
        mempool_conflicts = sorted({chain.spent_by[o] for o in spent if o in chain.spent_by} - {txid})
        out.update(
            {
                "txid": txid,
                "wtxid": b2lx(tx.GetHash()),
                "walletconflicts": conflicts,
                "mempoolconflicts": mempool_conflicts,
            }
        )
        if txid in chain.replaced_by:
            out["replaced_by_txid"] = chain.replaced_by[txid]
        if txid in _wallet.replaces:
            out["replaces_txid"] = _wallet.replaces[txid]
        out.update(
            {
                "time": when,
                "timereceived": when,
                "bip125-replaceable": "no"
                if confirmations
                else ("yes" if any(i.nSequence < 0xFFFFFFFE for i in tx.vin) else "no"),
            }
        )

        # As Core's ListTransactions: every non-change output is a "send" when we paid for the
        # transaction, and every output to one of our non-change addresses is also a "receive".
        details = []
        outputs = [(n, bytes(o.scriptPubKey), o.nValue) for n, o in enumerate(tx.vout)]
        if debit:
            for n, spk, value in outputs:
                if _wallet.is_mine(spk) and _wallet.is_change(spk):
                    continue
                item = {
                    "category": "send",
                    "amount": Amount(-value),
                    "vout": n,
                    "fee": Amount(-fee),
                    "abandoned": False,
                }
                address = address_of(spk)
                if address is not None:
                    item = {"address": address, **item}
                if _wallet.is_mine(spk):
                    item["label"] = _wallet.labels.get(address, "")
                details.append(item)
        for n, spk, value in outputs:
            if not _wallet.is_mine(spk) or (debit and _wallet.is_change(spk)):
                continue
            if tx.is_coinbase():
                category = "orphan" if entry is None else ("immature" if confirmations <= 100 else "generate")
            else:
                category = "receive"
            address = address_of(spk)
            item = {
                "address": address,
                "parent_descs": [_wallet.parent_descriptor(spk)],
                "category": category,
                "amount": Amount(value),
            }
            if not _wallet.is_change(spk):
                item["label"] = _wallet.labels.get(address, "")
            item["vout"] = n
            details.append(item)
        out["details"] = details
        out["hex"] = tx.serialize().hex()
        out["lastprocessedblock"] = {"hash": chain.tip.hash, "height": chain.height}
        if verbose:
            out["decoded"] = tx_json(tx, include_hex=False)
        return out

    def rpc_listtransactions(
        self, _wallet, label=None, count=10, skip=0, include_watchonly=True
    ) -> list[dict[str, Any]]:
        rows = []
        for txid in _wallet.all_transactions():
            info = self.rpc_gettransaction(_wallet, txid)
            for d in info["details"]:
                row = dict(d)
                for key in (
                    "confirmations",
                    "generated",
                    "trusted",
                    "blockhash",
                    "blockheight",
                    "blockindex",
                    "blocktime",
                    "txid",
                    "wtxid",
                    "walletconflicts",
                    "replaced_by_txid",
                    "replaces_txid",
                    "time",
                    "timereceived",
                    "bip125-replaceable",
                ):
                    if key in info:
                        row[key] = info[key]
                rows.append(row)
        rows.sort(key=lambda r: (r["time"], r.get("blockheight", 1 << 30)))
        count, skip = _int_param(count), _int_param(skip)
        return rows[::-1][skip : skip + count][::-1]


def _wallet_network():
    from embit.networks import NETWORKS

    return NETWORKS["regtest"]


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")
