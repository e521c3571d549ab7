"""bitcoin_settlement under faults (issue 11 §5): one bad table row never blocks the others, a node that
is warming up is retried instead of failing the settlement, and coins are locked from funding until
broadcast (fee bumps included) so that two settlements never spend one coin.

Runs on the session regtest devnet of ``conftest.py`` with a wallet of its own (``settlement-faults``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from tributary.core.errors import DataError, PermanentError, TransientError, classify

WALLET = "settlement-faults"
PAYEE_WALLET = "settlement-faults-payee"


@dataclass
class Wallet:
    node: Any

    def rpc(self, method: str, *params: Any, wallet: str | None = WALLET) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(wallet=wallet).call(method, *params)

    def payee(self) -> str:
        return self.rpc("getnewaddress", wallet=PAYEE_WALLET)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("generatetoaddress", blocks, self.payee(), wallet="")

    def locked(self) -> set[tuple[str, int]]:
        return {(o["txid"], o["vout"]) for o in self.rpc("listlockunspent")}

    def inputs(self, raw_tx: str) -> set[tuple[str, int]]:
        return {(i["txid"], i["vout"]) for i in self.rpc("decoderawtransaction", raw_tx, wallet="")["vin"]}


@pytest.fixture
def wallet(regtest_node: Any, monkeypatch: pytest.MonkeyPatch, warehouse: Any) -> Wallet:
    """AIRFLOW_CONN_TRIBUTARY_BITCOIN -> the session devnet, wallet ``settlement-faults`` with mature coins."""
    conn = {"conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": regtest_node.port,
            "extra": {"cookie_file": str(regtest_node.cookie_path), "network": "regtest", "wallet": WALLET}}
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(conn))
    w = Wallet(regtest_node)
    for name in (WALLET, PAYEE_WALLET):
        if name not in w.rpc("listwallets", wallet=""):
            w.rpc("createwallet", name, wallet="")
    if len(w.rpc("listunspent")) < 6:  # several coins: each test's settlements take one each
        w.rpc("generatetoaddress", 8, w.rpc("getnewaddress"), wallet="")
        w.mine(100)
    return w


def config():
    from tributary.bitcoin.settlement import SettlementConfig

    return SettlementConfig()


def ledger(settlement_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from tributary.bitcoin.ledger import SettlementLedger

    with SettlementLedger.session("tributary_warehouse") as book:
        return book.load(settlement_id), book.events(settlement_id)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def insert_rows(rows: list[tuple[str, Any, Any, str | None]]) -> None:
    """Rows as another system writes them: (id, payouts, fee_policy, network); nothing else is pending."""
    from tributary.bitcoin.ledger import SettlementLedger

    with SettlementLedger.session("tributary_warehouse") as book:
        with book.conn.cursor() as cur:
            cur.execute("UPDATE btc_settlements SET status = 'failed' WHERE status = 'pending'")
            for sid, payouts, policy, network in rows:
                cur.execute("INSERT INTO btc_settlements (id, payouts, fee_policy, network)"
                            " VALUES (%s, %s::jsonb, %s::jsonb, %s)",
                            (sid, json.dumps(payouts), json.dumps(policy), network))
                time.sleep(0.01)  # created_at orders the claim: the bad rows come first
        book.commit()


# --------------------------------------------------------------------------- 1. bad rows (pure parts)
@pytest.mark.unit
@pytest.mark.parametrize("amount", ["123456789012345678901234567890.123456789", "1E+999999999",
                                    "9" * 40 + "." + "9" * 9])
def test_an_amount_beyond_the_decimal_context_is_a_value_error_not_an_overflow(amount: str) -> None:
    from tributary.bitcoin.settlement import parse_amount

    with pytest.raises(ValueError, match=r"21,000,000|digits"):
        parse_amount(amount)


@pytest.mark.unit
@pytest.mark.parametrize("policy", ["fast", 5, True, [], [["conf_target", 3]]])
def test_a_fee_policy_that_is_not_an_object_is_a_data_error(policy: Any) -> None:
    from tributary.bitcoin.settlement import FeePolicy

    with pytest.raises(DataError, match="fee policy must be an object"):
        FeePolicy.from_json(policy)


# --------------------------------------------------------------------------- 1. bad rows (claim loop)
@pytest.mark.postgres
@pytest.mark.devnet
def test_bad_pending_rows_are_failed_with_their_reason_and_the_others_are_paid(wallet: Wallet) -> None:
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    payee = wallet.payee()
    overflow, text_policy, list_policy, signet, good = (new_id(p) for p in
                                                         ("overflow", "policy", "policy", "signet", "good"))
    insert_rows([
        (overflow, [{"address": payee, "amount_btc": "123456789012345678901234567890.123456789"}], {}, None),
        (text_policy, [{"address": payee, "amount_btc": "0.01"}], "fast", None),
        (list_policy, [{"address": payee, "amount_btc": "0.01"}], [["conf_target", 3]], None),
        (signet, [{"address": payee, "amount_btc": "0.01"}], {}, "signet"),
        (good, [{"address": payee, "amount_btc": "0.0123"}], {"fee_rate": 2}, None),
    ])

    accepted, rejected = claim({"max_settlements": 50}, run_id="faults", config=config())

    assert accepted == [good]
    assert {r["settlement_id"] for r in rejected} == {overflow, text_policy, list_policy, signet}
    expected = {overflow: ("[data]", "21,000,000"), text_policy: ("[data]", "fee policy must be an object"),
                list_policy: ("[data]", "fee policy must be an object"),
                signet: ("[permanent]", "the node serves regtest")}
    for sid, (error_class, reason) in expected.items():
        row, history = ledger(sid)
        assert row["status"] == "failed" and row["raw_tx"] is None, sid
        assert row["last_error"].startswith(error_class) and reason in row["last_error"], row["last_error"]
        assert history[-1]["event"] == "failed"
    paid = sign_and_broadcast(good, run_id="faults", config=config())
    assert paid["status"] == "broadcast"
    outputs = wallet.rpc("decoderawtransaction", ledger(good)[0]["raw_tx"], wallet="")["vout"]
    assert any(o["scriptPubKey"].get("address") == payee and Decimal(str(o["value"])) == Decimal("0.0123")
               for o in outputs)
    # the next run finds nothing pending: the bad rows do not come back
    assert claim({"max_settlements": 50}, run_id="faults-2", config=config()) == ([], [])


# --------------------------------------------------------------------------- 2. transient funding errors
@pytest.mark.postgres
@pytest.mark.devnet
@pytest.mark.parametrize("code, message", [(-28, "Loading wallet..."), (-9, "Bitcoin Core is not connected"),
                                           (-10, "Bitcoin Core is in initial sync and waiting for blocks..."),
                                           (-32603, "Internal error"), (None, "timeout")])
def test_a_transient_node_error_while_funding_is_retried_not_a_failed_settlement(
        wallet: Wallet, monkeypatch: pytest.MonkeyPatch, code: int | None, message: str) -> None:
    from tributary.bitcoin.hook import BitcoinCoreHook, BitcoinRpcError
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    sid = new_id("warmup")
    claim({"settlement_id": sid, "payouts": [{"address": wallet.payee(), "amount_btc": "0.011"}],
           "fee_policy": {"fee_rate": 2}}, run_id="manual", config=config())
    real = BitcoinCoreHook.wallet_create_funded_psbt
    calls: list[int] = []

    def first_call_fails(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            if code is None:
                raise TransientError("bitcoind did not answer within 30s", reason="network:timeout")
            raise BitcoinRpcError(code, message)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BitcoinCoreHook, "wallet_create_funded_psbt", first_call_fails)
    with pytest.raises(Exception) as caught:
        sign_and_broadcast(sid, run_id="try-1", config=config())
    assert classify(caught.value).error_class == "transient"
    row, history = ledger(sid)
    assert row["status"] == "pending" and row["raw_tx"] is None
    assert history[-1]["event"] == "funding_deferred"

    again = sign_and_broadcast(sid, run_id="try-2", config=config())  # what Airflow's retry runs
    assert again["status"] == "broadcast" and len(calls) == 2


@pytest.mark.postgres
@pytest.mark.devnet
def test_insufficient_funds_still_fails_the_settlement(wallet: Wallet) -> None:
    from tributary.bitcoin.hook import BitcoinRpcError
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    sid = new_id("rich")
    claim({"settlement_id": sid, "payouts": [{"address": wallet.payee(), "amount_btc": "20000000"}]},
          run_id="manual", config=config())
    with pytest.raises(BitcoinRpcError):
        sign_and_broadcast(sid, run_id="manual", config=config())
    assert ledger(sid)[0]["status"] == "failed"


# --------------------------------------------------------------------------- 3. coin locks
@pytest.mark.postgres
@pytest.mark.devnet
def test_coins_of_a_signed_but_unsent_settlement_are_never_spent_by_the_next_one(
        wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first settlement's broadcast keeps failing (the flush before the second funding too): the
    second must fund from other coins, so both can confirm."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    first, second = new_id("lock"), new_id("lock")
    for sid in (first, second):
        claim({"settlement_id": sid, "payouts": [{"address": wallet.payee(), "amount_btc": "0.021"}],
               "fee_policy": {"fee_rate": 2}}, run_id="manual", config=config())
    real_send = BitcoinCoreHook.send_raw_transaction
    blocked: set[str] = set()

    def flaky_send(self: Any, raw_tx: str, *args: Any, **kwargs: Any) -> str:
        if not blocked or raw_tx in blocked:
            blocked.add(raw_tx)
            raise TransientError("bitcoind did not answer within 30s", reason="network:timeout")
        return real_send(self, raw_tx, *args, **kwargs)

    monkeypatch.setattr(BitcoinCoreHook, "send_raw_transaction", flaky_send)
    with pytest.raises(TransientError):
        sign_and_broadcast(first, run_id="try-1", config=config())
    row = ledger(first)[0]
    assert row["status"] == "signed"
    first_inputs = wallet.inputs(row["raw_tx"])
    assert first_inputs <= wallet.locked()  # held for it until it is broadcast

    done = sign_and_broadcast(second, run_id="other-run", config=config())  # its flush of `first` fails
    assert done["status"] == "broadcast" and ledger(first)[0]["status"] == "signed"
    assert not first_inputs & wallet.inputs(ledger(second)[0]["raw_tx"])

    monkeypatch.setattr(BitcoinCoreHook, "send_raw_transaction", real_send)
    assert sign_and_broadcast(first, run_id="try-2", config=config())["status"] == "broadcast"
    assert not first_inputs & wallet.locked()  # a broadcast spends them: the wallet unlocked them
    mempool = wallet.rpc("getrawmempool", wallet="")
    assert row["txid"] in mempool and done["txid"] in mempool


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_funding_that_fails_before_it_is_stored_unlocks_its_coins(wallet: Wallet) -> None:
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    before = wallet.locked()
    sid = new_id("cap")
    claim({"settlement_id": sid, "payouts": [{"address": wallet.payee(), "amount_btc": "0.01"}],
           "fee_policy": {"fee_rate": 50, "max_fee_sats": 500}}, run_id="manual", config=config())
    with pytest.raises(PermanentError, match="exceeds max_fee_sats"):
        sign_and_broadcast(sid, run_id="manual", config=config())
    assert wallet.locked() == before


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_fee_bump_waits_for_the_wallet_lock_of_a_funding_in_progress(
        wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.bitcoin.ledger import SettlementLedger
    from tributary.bitcoin.settlement import apply_event, claim, sign_and_broadcast

    sid = new_id("bump")
    claim({"settlement_id": sid, "payouts": [{"address": wallet.payee(), "amount_btc": "0.03"}],
           "fee_policy": {"fee_rate": 1, "max_fee_sats": 20_000}}, run_id="manual", config=config())
    sent = sign_and_broadcast(sid, run_id="manual", config=config())
    real_bump = BitcoinCoreHook.bump_fee
    bumped_at: list[float] = []

    def timed_bump(self: Any, *args: Any, **kwargs: Any) -> Any:
        bumped_at.append(time.monotonic())
        return real_bump(self, *args, **kwargs)

    monkeypatch.setattr(BitcoinCoreHook, "bump_fee", timed_bump)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            apply_event(sid, {"status": "stuck", "txid": sent["txid"], "confirmations": 0}, run_id="bump",
                        config=config())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    # another settlement is funding from this wallet while the bump comes
    with SettlementLedger.session("tributary_warehouse") as other, other.wallet_lock(WALLET):
        thread = threading.Thread(target=bump, daemon=True)
        thread.start()
        time.sleep(2.0)
        assert bumped_at == [], "bumpfee ran while another funding held the wallet lock"
        released = time.monotonic()
    thread.join(60)
    assert not thread.is_alive() and errors == []
    assert len(bumped_at) == 1 and bumped_at[0] >= released
    row, history = ledger(sid)
    assert row["replaced_txids"] == [sent["txid"]] and history[-1]["event"] == "bumped"


# --------------------------------------------------------------------------- the devnet's lockunspent
@pytest.mark.devnet
def test_the_devnet_locks_coins_as_core_does(regtest: Any) -> None:
    from tributary.bitcoin.hook import BitcoinRpcError

    if not regtest.rpc("listunspent"):  # the shared chain was mined to other wallets so far
        regtest.mine(101)
    coin = regtest.rpc("listunspent")[0]
    outpoint = {"txid": coin["txid"], "vout": coin["vout"]}
    with pytest.raises(BitcoinRpcError, match="expected locked output"):
        regtest.rpc("lockunspent", True, [outpoint])
    assert regtest.rpc("lockunspent", False, [outpoint]) is True
    assert regtest.rpc("listlockunspent") == [outpoint]
    with pytest.raises(BitcoinRpcError, match="output already locked"):
        regtest.rpc("lockunspent", False, [outpoint])
    assert regtest.rpc("lockunspent", False, [outpoint], True) is True  # in memory -> persistent is allowed
    assert outpoint not in [{"txid": c["txid"], "vout": c["vout"]} for c in regtest.rpc("listunspent")]
    assert regtest.rpc("lockunspent", True) is True and regtest.rpc("listlockunspent") == []
    with pytest.raises(BitcoinRpcError, match="unknown transaction"):
        regtest.rpc("lockunspent", False, [{"txid": "00" * 32, "vout": 0}])
    # a funded PSBT with lockUnspents holds its coins; a transaction of the wallet spending them frees them
    funded = regtest.rpc("walletcreatefundedpsbt", [], [{regtest.mining_address: 1}], 0,
                         {"lockUnspents": True, "fee_rate": 2})
    spent = [{"txid": i["txid"], "vout": i["vout"]} for i in regtest.rpc("decodepsbt", funded["psbt"])["tx"]["vin"]]
    assert all(o in regtest.rpc("listlockunspent") for o in spent)
    signed = regtest.rpc("walletprocesspsbt", funded["psbt"])
    regtest.rpc("sendrawtransaction", signed["hex"])
    assert not any(o in regtest.rpc("listlockunspent") for o in spent)
    with pytest.raises(BitcoinRpcError, match="expected unspent output"):
        regtest.rpc("lockunspent", False, spent[:1])
