"""The Bitcoin Core regtest devnet, exercised as a client would: JSON-RPC over HTTP to the subprocess."""

from __future__ import annotations

import hashlib
import itertools
from decimal import Decimal
from typing import Any

import bitcoin
import pytest
import requests
from bitcoin.core import CBlock, CMutableTransaction, CTransaction, CTxInWitness, CTxWitness, b2lx
from bitcoin.core.script import CScript

from devnets.bitcoin.process import start_devnet

pytestmark = pytest.mark.devnet

bitcoin.SelectParams("regtest")

REGTEST_GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


class RPCFailure(Exception):
    def __init__(self, status: int, error: dict[str, Any]):
        super().__init__(f"{status} {error}")
        self.status = status
        self.code = error["code"]
        self.message = error["message"]


class Client:
    _ids = itertools.count()

    def __init__(self, url: str, auth: tuple[str, str], wallet: str | None = None):
        self.url = url + (f"/wallet/{wallet}" if wallet else "")
        self.base = url
        self.auth = auth
        self.session = requests.Session()

    def raw(self, payload: Any, path: str = "") -> requests.Response:
        return self.session.post(self.base + path, json=payload, auth=self.auth, timeout=30)

    def __call__(self, method: str, *params: Any) -> Any:
        resp = self.session.post(
            self.url,
            data=f'{{"method":"{method}","params":{_dumps(params)},"id":{next(self._ids)}}}',
            auth=self.auth,
            timeout=30,
        )
        body = resp.json(parse_float=Decimal)
        if body["error"] is not None:
            raise RPCFailure(resp.status_code, body["error"])
        assert resp.status_code == 200
        return body["result"]


def _dumps(params: Any) -> str:
    import json

    return json.dumps(list(params), default=str)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    datadir = tmp_path_factory.mktemp("btc")
    handle = start_devnet(datadir)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def node(devnet) -> Client:
    return Client(devnet.url, devnet.auth)


@pytest.fixture(scope="module")
def funded(node, devnet) -> dict[str, Any]:
    node("createwallet", "alice")
    node("createwallet", "bob")
    alice = Client(devnet.url, devnet.auth, "alice")
    bob = Client(devnet.url, devnet.auth, "bob")
    address = alice("getnewaddress")
    hashes = node("generatetoaddress", 101, address)
    return {"alice": alice, "bob": bob, "address": address, "hashes": hashes}


def test_starts_on_real_regtest_genesis_with_cookie_auth(devnet, node):
    assert devnet.cookie_path.read_text().startswith("__cookie__:")
    assert node("getblockhash", 0) == REGTEST_GENESIS
    info = node("getblockchaininfo")
    assert info["chain"] == "regtest"


def test_mining_101_blocks_matures_the_first_coinbase(funded):
    alice = funded["alice"]
    balances = alice("getbalances")
    assert balances["mine"]["trusted"] == Decimal("50.00000000")
    assert balances["mine"]["immature"] == Decimal("5000.00000000")
    assert alice("getbalance") == Decimal("50.00000000")
    [utxo] = alice("listunspent")
    assert utxo["address"] == funded["address"] and utxo["confirmations"] == 101
    assert funded["address"].startswith("bcrt1q")


def test_mined_blocks_are_consensus_valid_regtest_blocks(funded, node):
    tip = funded["hashes"][-1]
    raw = bytes.fromhex(node("getblock", tip, 0))
    block = CBlock.deserialize(raw)
    assert b2lx(block.GetHash()) == tip
    assert block.calc_merkle_root() == block.hashMerkleRoot
    assert int.from_bytes(block.GetHash(), "little") <= 0x7FFFFF << (8 * 29)
    coinbase = block.vtx[0]
    assert bytes(coinbase.vin[0].scriptSig)[:2] == bytes([1, 101])  # BIP34 height push
    commitment = next(
        bytes(o.scriptPubKey) for o in coinbase.vout if bytes(o.scriptPubKey)[:6] == bytes.fromhex("6a24aa21a9ed")
    )
    reserved = coinbase.wit.vtxinwit[0].scriptWitness.stack[0]
    witness_root = block.calc_witness_merkle_root()
    assert commitment[6:] == hashlib.sha256(hashlib.sha256(witness_root + reserved).digest()).digest()
    assert coinbase.vout[0].nValue == 50 * 100_000_000
    # The same bytes pass Bitcoin Core's own context-free block checks (libbitcoinkernel).
    import pbk

    params = pbk.ChainParameters(pbk.ChainType.REGTEST).consensus_params
    assert pbk.Block(raw).check(params).validation_mode == pbk.ValidationMode.VALID


def test_getblock_verbosity_shapes(funded, node):
    tip = funded["hashes"][-1]
    v1 = node("getblock", tip)
    assert v1["height"] == 101 and v1["confirmations"] >= 1 and isinstance(v1["tx"][0], str)
    assert {"hash", "merkleroot", "previousblockhash", "chainwork", "nTx", "weight", "bits"} <= set(v1)
    v2 = node("getblock", tip, 2)
    assert v2["tx"][0]["vin"][0]["coinbase"].startswith("0165")
    assert v2["tx"][0]["vout"][0]["scriptPubKey"]["address"] == funded["address"]
    header = node("getblockheader", tip)
    assert header["hash"] == tip and node("getblockheader", tip, False) == node("getblock", tip, 0)[:160]


def test_psbt_payment_is_signed_broadcast_and_confirmed(funded, node):
    alice, bob = funded["alice"], funded["bob"]
    to = bob("getnewaddress")
    funded_psbt = alice("walletcreatefundedpsbt", [], [{to: 1.5}], 0, {"fee_rate": 5})
    assert funded_psbt["fee"] > 0
    processed = alice("walletprocesspsbt", funded_psbt["psbt"])
    assert processed["complete"] is True
    final = node("finalizepsbt", processed["psbt"])
    txid = node("sendrawtransaction", final["hex"])
    assert txid in node("getrawmempool")
    entry = node("getmempoolentry", txid)
    assert entry["fees"]["base"] == funded_psbt["fee"]
    assert bob("getbalances")["mine"]["untrusted_pending"] == Decimal("1.5")
    block_hash = node("generatetoaddress", 1, funded["address"])[0]
    assert txid in node("getblock", block_hash)["tx"]
    assert bob("getbalance") == Decimal("1.5")
    sent = alice("gettransaction", txid)
    assert sent["confirmations"] == 1 and sent["blockhash"] == block_hash
    assert sent["amount"] == Decimal("-1.5") and sent["fee"] == -funded_psbt["fee"]
    assert node("getrawtransaction", txid, True)["blockhash"] == block_hash
    fee_in_block = next(t for t in node("getblock", block_hash, 2)["tx"] if t["txid"] == txid)["fee"]
    assert fee_in_block == funded_psbt["fee"]


def _signed_spend(client: Client, to: str, amount: float) -> str:
    psbt = client("walletcreatefundedpsbt", [], [{to: amount}], 0, {"fee_rate": 2})["psbt"]
    return client("walletprocesspsbt", psbt)["hex"]


def test_invalid_transactions_are_rejected_with_core_codes(funded, node):
    alice, bob = funded["alice"], funded["bob"]
    raw = _signed_spend(alice, bob("getnewaddress"), 0.1)
    tx = CMutableTransaction.from_tx(CTransaction.deserialize(bytes.fromhex(raw)))
    # Flip a byte of the signature: the kernel's script check fails.
    sig = bytearray(tx.wit.vtxinwit[0].scriptWitness.stack[0])
    sig[10] ^= 1
    stack = [bytes(sig), tx.wit.vtxinwit[0].scriptWitness.stack[1]]
    from bitcoin.core.script import CScriptWitness

    tx.wit = CTxWitness([CTxInWitness(CScriptWitness(stack)), *list(tx.wit.vtxinwit[1:])])
    with pytest.raises(RPCFailure) as bad_sig:
        node("sendrawtransaction", CTransaction.from_tx(tx).serialize().hex())
    assert bad_sig.value.code == -26 and bad_sig.value.status == 500
    assert bad_sig.value.message.startswith("mandatory-script-verify-flag-failed")
    verdict = node("testmempoolaccept", [CTransaction.from_tx(tx).serialize().hex()])[0]
    assert verdict["allowed"] is False and verdict["reject-reason"].startswith("mandatory-script-verify")

    # Missing input.
    tx2 = CMutableTransaction.from_tx(CTransaction.deserialize(bytes.fromhex(raw)))
    tx2.vin[0].prevout.hash = b"\x11" * 32
    with pytest.raises(RPCFailure) as missing:
        node("sendrawtransaction", CTransaction.from_tx(tx2).serialize().hex())
    assert (missing.value.code, missing.value.message) == (-25, "bad-txns-inputs-missingorspent")

    # Accepted once, then a double spend of the confirmed coin after mining.
    txid = node("sendrawtransaction", raw)
    assert node("testmempoolaccept", [raw])[0]["reject-reason"] == "txn-already-in-mempool"
    node("generatetoaddress", 1, funded["address"])
    with pytest.raises(RPCFailure) as confirmed:
        node("sendrawtransaction", raw)
    assert confirmed.value.code == -27
    assert txid not in node("getrawmempool")

    with pytest.raises(RPCFailure) as unknown:
        node("getrawtransaction", "00" * 32)
    assert unknown.value.code == -5


def test_double_spends_are_rejected(funded, node):
    alice, bob = funded["alice"], funded["bob"]
    coin = max(alice("listunspent"), key=lambda u: u["amount"])
    inputs = [{"txid": coin["txid"], "vout": coin["vout"]}]
    spends = []
    for _ in range(2):
        psbt = alice("walletcreatefundedpsbt", inputs, [{bob("getnewaddress"): 0.2}], 0, {"fee_rate": 2})["psbt"]
        spends.append(alice("walletprocesspsbt", psbt)["hex"])
    first, second = spends
    node("sendrawtransaction", first)
    # Same input, no higher fee: not a valid BIP125 replacement.
    with pytest.raises(RPCFailure) as conflict:
        node("sendrawtransaction", second)
    assert conflict.value.code == -26
    assert conflict.value.message.startswith("insufficient fee, rejecting replacement")
    assert node("testmempoolaccept", [second])[0]["reject-reason"].startswith("insufficient fee")
    unspent = {(u["txid"], u["vout"]) for u in alice("listunspent", 0)}
    assert (coin["txid"], coin["vout"]) not in unspent
    # Once the first spend is mined, the second one spends a spent output.
    node("generatetoaddress", 1, funded["address"])
    with pytest.raises(RPCFailure) as spent:
        node("sendrawtransaction", second)
    assert (spent.value.code, spent.value.message) == (-25, "bad-txns-inputs-missingorspent")


def test_bumpfee_replaces_the_transaction(funded, node):
    alice, bob = funded["alice"], funded["bob"]
    txid = alice("sendtoaddress", bob("getnewaddress"), 0.3)
    bumped = alice("bumpfee", txid)
    assert bumped["fee"] > bumped["origfee"]
    pool = node("getrawmempool")
    assert bumped["txid"] in pool and txid not in pool
    old = alice("gettransaction", txid)
    assert old["replaced_by_txid"] == bumped["txid"]
    assert bumped["txid"] in old["walletconflicts"]
    assert alice("gettransaction", bumped["txid"])["replaces_txid"] == txid
    # The original, rebroadcast, is now a replacement with a lower fee: rejected.
    with pytest.raises(RPCFailure) as low:
        node("sendrawtransaction", old["hex"])
    assert low.value.code == -26 and low.value.message.startswith("insufficient fee")
    node("generatetoaddress", 1, funded["address"])
    assert alice("gettransaction", bumped["txid"])["confirmations"] == 1


def test_invalidate_and_longer_fork_reorg_then_reconsider(funded, node):
    alice, bob = funded["alice"], funded["bob"]
    txid = alice("sendtoaddress", bob("getnewaddress"), 0.4)
    [orphan] = node("generatetoaddress", 1, funded["address"])
    height = node("getblockcount")
    assert alice("gettransaction", txid)["confirmations"] == 1

    node("invalidateblock", orphan)
    assert node("getblockcount") == height - 1
    assert txid in node("getrawmempool")  # back from the disconnected block
    other = bob("getnewaddress")
    fork = node("generatetoaddress", 2, other)
    assert node("getbestblockhash") == fork[-1] and node("getblockcount") == height + 1
    assert node("getblock", orphan)["confirmations"] == -1
    assert txid in node("getblock", fork[0])["tx"]  # re-mined on the new branch
    tips = {t["hash"]: t["status"] for t in node("getchaintips")}
    assert tips[orphan] == "invalid" and tips[fork[-1]] == "active"

    node("reconsiderblock", orphan)  # the fork has more work, so it stays active
    assert node("getbestblockhash") == fork[-1]
    assert tips.keys() == {t["hash"] for t in node("getchaintips")}


def test_reconsider_restores_the_most_work_chain(funded, node):
    node("generatetoaddress", 3, funded["address"])
    tip_before = node("getbestblockhash")
    height = node("getblockcount")
    invalidated = node("getblockhash", height - 1)
    node("invalidateblock", invalidated)
    assert node("getblockcount") == height - 2
    assert node("getblock", tip_before)["confirmations"] == -1
    node("reconsiderblock", invalidated)
    assert node("getbestblockhash") == tip_before and node("getblockcount") == height


def test_http_envelope_matches_core(devnet, node):
    wrong = requests.post(devnet.url, json={"method": "getblockcount", "id": 1}, auth=("__cookie__", "nope"))
    assert wrong.status_code == 401

    unknown = node.raw({"method": "nosuchmethod", "params": [], "id": 7})
    assert unknown.status_code == 404
    assert unknown.json() == {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 7}

    batch = node.raw([{"method": "getblockcount", "id": 1}, {"method": "nosuchmethod", "id": 2}])
    assert batch.status_code == 200
    body = batch.json()
    assert body[0]["error"] is None and isinstance(body[0]["result"], int)
    assert body[1]["error"]["code"] == -32601

    v2 = node.raw({"jsonrpc": "2.0", "method": "getblockcount", "id": "x"}).json()
    assert set(v2) == {"jsonrpc", "result", "id"}
    v2err = node.raw({"jsonrpc": "2.0", "method": "getblockhash", "params": [10**6], "id": 1})
    assert v2err.status_code == 200 and v2err.json()["error"]["code"] == -8

    parse = requests.post(devnet.url, data="{", auth=devnet.auth)
    assert parse.status_code == 500 and parse.json()["error"]["code"] == -32700

    missing_wallet = node.raw({"method": "getbalance", "id": 1}, "/wallet/nobody")
    assert missing_wallet.status_code == 500 and missing_wallet.json()["error"]["code"] == -18
    # Amounts are JSON numbers with 8 decimals, as Core's ValueFromAmount writes them.
    block = node.raw({"method": "getblock", "params": [node("getblockhash", 1), 2], "id": 1}).text
    assert '"value": 50.00000000,' in block


def test_restart_keeps_chain_and_wallet(tmp_path):
    with start_devnet(tmp_path, rpcuser="u", rpcpassword="p") as dev:
        client = Client(dev.url, dev.auth)
        client("createwallet", "w")
        address = client("getnewaddress")
        client("generatetoaddress", 102, address)
        tip = client("getbestblockhash")
        balance = client("getbalance")
        assert balance == Decimal("100")
        pending = client("sendtoaddress", client("getnewaddress"), 1)  # to self: balance only pays the fee
    assert dev.process.returncode == 0
    # The kernel's own chainstate on disk (Bitcoin Core's validation engine) agrees on the tip.
    import pbk

    chainman = pbk.load_chainman(tmp_path / "regtest" / "kernel", pbk.ChainType.REGTEST)
    chain = chainman.get_active_chain()
    assert chain.height == 102 and str(chain.block_tree_entries[102].block_hash) == tip
    del chain, chainman

    with start_devnet(tmp_path, rpcuser="u", rpcpassword="p") as dev:
        client = Client(dev.url, dev.auth)
        assert client("getblockcount") == 102 and client("getbestblockhash") == tip
        assert client("listwallets") == ["w"]
        assert pending in client("getrawmempool")  # the mempool is saved on a clean shutdown
        fee = -client("gettransaction", pending)["fee"]
        assert client("getbalance") == balance - fee
        client("generatetoaddress", 1, address)
        assert client("getbalance") == balance - fee + 50  # one more coinbase matured
        assert client("gettransaction", pending)["confirmations"] == 1


def _regrind(block: CBlock, vtx: list[CTransaction]) -> bytes:
    merkle = CBlock.build_merkle_tree_from_txs(vtx)[-1]
    for nonce in range(1 << 20):
        candidate = CBlock(block.nVersion, block.hashPrevBlock, merkle, block.nTime, block.nBits, nonce, vtx)
        if int.from_bytes(candidate.GetHash(), "little") <= 0x7FFFFF << (8 * 29):
            return candidate.serialize()
    raise AssertionError("no nonce found")


def test_kernel_rejects_invalid_blocks_via_submitblock(funded, node):
    address = funded["address"]
    proposal = node("generateblock", address, [], False)
    block = CBlock.deserialize(bytes.fromhex(proposal["hex"]))
    height = node("getblockcount")

    # A coinbase paying one satoshi more than the subsidy.
    coinbase = CMutableTransaction.from_tx(block.vtx[0])
    coinbase.vout[0].nValue += 1
    greedy = _regrind(block, [CTransaction.from_tx(coinbase), *block.vtx[1:]])
    assert node("submitblock", greedy.hex()) == "bad-cb-amount"

    # A coinbase committing to the wrong BIP34 height: only the kernel's contextual checks see it.
    coinbase = CMutableTransaction.from_tx(block.vtx[0])
    coinbase.vin[0].scriptSig = CScript([height + 7, 0])
    wrong_height = _regrind(block, [CTransaction.from_tx(coinbase), *block.vtx[1:]])
    assert node("submitblock", wrong_height.hex()) == "consensus"  # the kernel's BlockValidationResult

    # A header whose merkle root does not commit to the transactions.
    tampered = bytearray(bytes.fromhex(proposal["hex"]))
    tampered[36] ^= 1
    assert node("submitblock", bytes(tampered).hex()) in ("bad-txnmrklroot", "high-hash")
    assert node("getblockcount") == height

    # The untouched proposal is accepted, then reported as a duplicate.
    assert node("submitblock", proposal["hex"]) is None
    assert node("getbestblockhash") == proposal["hash"]
    assert node("submitblock", proposal["hex"]) == "duplicate"


def test_subsidy_halves_every_150_blocks_on_regtest(funded, node):
    height = node("getblockcount")
    node("generatetoaddress", max(0, 151 - height), funded["address"])
    for h, subsidy in ((149, Decimal(50)), (150, Decimal(25)), (151, Decimal(25))):
        block = node("getblock", node("getblockhash", h), 2)
        fees = sum(tx.get("fee", 0) for tx in block["tx"][1:])
        assert block["tx"][0]["vout"][0]["value"] == subsidy + fees
