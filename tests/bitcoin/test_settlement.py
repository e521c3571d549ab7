"""bitcoin_settlement: validation, ledger idempotency, RBF and reorgs, on a private regtest devnet + PostgreSQL.

The devnet is private to this module (reorgs and fee bumps must not disturb the shared chain of
the other Bitcoin tests). End-to-end runs use ``dag.test()``, which runs the deferrable wait's
trigger inline; a background thread mines blocks while the DAG waits.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tributary.core.errors import DataError, PermanentError, SecurityError

ROOT = Path(__file__).resolve().parents[2]
WALLET = "settlement"


# --------------------------------------------------------------------------- fixtures
@dataclass
class Devnet:
    handle: Any
    conn: dict[str, Any]
    miner_address: str

    def rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        from tributary.bitcoin.hook import BitcoinCoreHook

        return BitcoinCoreHook(wallet=wallet).call(method, *params)

    def mine(self, blocks: int = 1) -> list[str]:
        return self.rpc("generatetoaddress", blocks, self.miner_address, wallet="")

    def payee(self) -> str:
        return self.rpc("getnewaddress", wallet="payee")

    def sends(self) -> int:
        """Wallet transactions that pay out (one per transaction, whatever its number of outputs)."""
        return len({row["txid"] for row in self.rpc("listtransactions", "*", 1000, 0) if row["category"] == "send"})

    def total_balance(self) -> Decimal:
        mine = self.rpc("getbalances")["mine"]
        return Decimal(str(mine["trusted"])) + Decimal(str(mine["untrusted_pending"])) + Decimal(str(mine["immature"]))

    def tx(self, txid: str) -> dict[str, Any]:
        return self.rpc("getrawtransaction", txid, 1, wallet="")


@pytest.fixture(scope="module")
def devnet_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from devnets.bitcoin.process import start_devnet

    with start_devnet(tmp_path_factory.mktemp("settlement-devnet")) as handle:
        yield handle


@pytest.fixture
def devnet(devnet_process: Any, monkeypatch: pytest.MonkeyPatch, warehouse: Any) -> Devnet:
    """AIRFLOW_CONN_TRIBUTARY_BITCOIN -> the private devnet, wallet ``settlement`` funded; ``payee`` receives."""
    conn = {"conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": devnet_process.port,
            "extra": {"cookie_file": str(devnet_process.cookie_path), "network": "regtest", "wallet": WALLET}}
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps(conn))
    from tributary.bitcoin.hook import BitcoinCoreHook

    node = BitcoinCoreHook(wallet="")
    for name in (WALLET, "payee"):
        if name not in node.call("listwallets"):
            node.call("createwallet", name)
    miner = BitcoinCoreHook(wallet="payee").call("getnewaddress")
    if node.call("getblockcount") < 110:
        node.call("generatetoaddress", 10, BitcoinCoreHook().call("getnewaddress"))
        node.call("generatetoaddress", 101, miner)
    return Devnet(devnet_process, conn, miner)


@pytest.fixture(scope="module")
def settlement_dag(private_dag_bundle: Any) -> Any:
    """A fresh metadata DB and a private DAG bundle holding only bitcoin_settlement.py."""
    from airflow.dag_processing.dagbag import DagBag

    folder = private_dag_bundle(ROOT / "dags" / "bitcoin" / "bitcoin_settlement.py")
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.get_dag("bitcoin_settlement")


@contextmanager
def mining(devnet: Devnet, every: float = 0.5, when: Callable[[], bool] | None = None) -> Iterator[None]:
    """Mine a block every ``every`` seconds (once ``when()`` holds) while the body runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                if when is None or when():
                    devnet.mine(1)
            except Exception as exc:  # keep mining: a failed poll must not end the test's chain
                print(f"miner: {exc}")
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


DEFAULT_CONF = {"settlement_id": None, "payouts": [], "fee_policy": {"conf_target": 6, "max_fee_sats": 100_000},
                "confirmations": 1, "bump_after_minutes": 60, "poll_interval_seconds": 0.2, "max_settlements": 50}


def run_dag(dag: Any, **conf: Any) -> Any:
    """``dag.test`` with every param given: in-process runs would otherwise see the previous run's params."""
    return dag.test(run_conf={**DEFAULT_CONF, **conf})


def ledger(settlement_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from tributary.bitcoin.ledger import SettlementLedger

    with SettlementLedger.session("tributary_warehouse") as book:
        return book.load(settlement_id), book.events(settlement_id)


def new_id(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def config():
    from tributary.bitcoin.settlement import SettlementConfig

    return SettlementConfig()


def states(run: Any) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}


def chain_outputs(devnet: Devnet, txid: str) -> dict[str, int]:
    from tributary.bitcoin.amounts import btc_to_sats

    return {o["scriptPubKey"]["address"]: btc_to_sats(str(o["value"])) for o in devnet.tx(txid)["vout"]}


# --------------------------------------------------------------------------- validation (pure)
MAIN_P2PKH = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
MAIN_BECH32 = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
TEST_P2PKH = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
REGTEST_TAPROOT = "bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6"


@pytest.mark.unit
@pytest.mark.parametrize("address, kind", [
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "p2wpkh"),
    ("BCRT1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KYGT080", "p2wpkh"),
    (TEST_P2PKH, "p2pkh"),
    ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "p2sh"),
])
def test_regtest_addresses_decode_to_their_script(address: str, kind: str) -> None:
    from tributary.bitcoin.addresses import address_script
    from tributary.bitcoin.parse import script_type

    assert script_type(address_script(address, "regtest")).startswith(kind[:4])


@pytest.mark.unit
@pytest.mark.parametrize("address, reason", [
    (MAIN_BECH32, "network 'main'"),
    (MAIN_P2PKH, "belongs to ['main']"),
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt08q", "checksum"),
    ("bcrt1qW508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "mixed-case"),
    ("not-an-address", "not a valid"),
    ("", "empty"),
])
def test_addresses_of_other_networks_or_garbage_are_rejected_with_the_reason(address: str, reason: str) -> None:
    from tributary.bitcoin.addresses import address_script

    with pytest.raises(ValueError, match=re.escape(reason)):
        address_script(address, "regtest")


@pytest.mark.unit
def test_taproot_needs_bech32m_and_is_accepted_on_its_network() -> None:
    from tributary.bitcoin.addresses import address_script, script_address

    script = address_script(REGTEST_TAPROOT, "regtest")
    assert script[:2] == b"\x51\x20" and script_address(script, "regtest") == REGTEST_TAPROOT


@pytest.mark.unit
@pytest.mark.parametrize("amount, sats", [("0.1", 10_000_000), (0.25, 25_000_000), (1, 100_000_000),
                                          ("0.00000294", 294), ("20999999.99999999", 2_099_999_999_999_999)])
def test_amounts_are_exact_satoshis(amount: Any, sats: int) -> None:
    from tributary.bitcoin.settlement import parse_amount

    assert parse_amount(amount) == sats


@pytest.mark.unit
@pytest.mark.parametrize("amount, reason", [("0", "not positive"), (0, "not positive"), ("-1", "not positive"),
                                            (-0.5, "not positive"), ("0.123456789", "more than 8 decimals"),
                                            (0.000000001, "more than 8 decimals"), ("21000000.00000001", "21,000,000"),
                                            ("abc", "not a number"), (True, "not a string"), ("NaN", "not finite")])
def test_bad_amounts_are_refused(amount: Any, reason: str) -> None:
    from tributary.bitcoin.settlement import parse_amount

    with pytest.raises(ValueError, match=reason):
        parse_amount(amount)


@pytest.mark.unit
def test_validate_payouts_reports_every_bad_payout_and_dust() -> None:
    from tributary.bitcoin.settlement import validate_payouts

    good = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    with pytest.raises(DataError) as caught:
        validate_payouts([{"address": good, "amount_btc": "0.00000293"}, {"address": MAIN_BECH32, "amount_btc": "1"},
                          {"address": TEST_P2PKH, "amount_btc": "0.0000001"}], "regtest")
    text = str(caught.value)
    assert "payout 0" in text and "dust" in text and "payout 1" in text and "payout 2" in text
    assert caught.value.quarantined == 3
    with pytest.raises(DataError, match="appears twice"):
        validate_payouts([{"address": good, "amount_btc": "1"}, {"address": good.upper(), "amount_btc": "2"}],
                         "regtest")


@pytest.mark.unit
def test_fingerprint_ignores_order_but_not_amounts() -> None:
    from tributary.bitcoin.settlement import fingerprint, validate_payouts

    a = {"address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "amount_btc": "1"}
    b = {"address": TEST_P2PKH, "amount_btc": "0.5"}
    assert fingerprint(validate_payouts([a, b], "regtest")) == fingerprint(validate_payouts([b, a], "regtest"))
    assert fingerprint(validate_payouts([a, b], "regtest")) != fingerprint(
        validate_payouts([a, {**b, "amount_btc": "0.50000001"}], "regtest"))


@pytest.mark.unit
def test_fee_policy_is_one_of_conf_target_or_fee_rate() -> None:
    from tributary.bitcoin.settlement import FeePolicy

    assert FeePolicy.from_json({"fee_rate": 3}).funding_options() == {"replaceable": True, "fee_rate": Decimal(3)}
    assert FeePolicy.from_json({"conf_target": 2}).funding_options()["conf_target"] == 2
    with pytest.raises(DataError):
        FeePolicy.from_json({"conf_target": 2, "fee_rate": 3})
    with pytest.raises(DataError):
        FeePolicy.from_json({"fee_rate": 0.5})


@pytest.mark.unit
def test_trigger_serializes_to_its_own_arguments() -> None:
    from tributary.bitcoin.triggers import TransactionConfirmedTrigger

    trigger = TransactionConfirmedTrigger(["aa" * 32, "bb" * 32], confirmations=3, wallet="w", poll_interval=1.5,
                                          bump_at=123.0, seen_blocks={"aa" * 32: "cc" * 32})
    classpath, kwargs = trigger.serialize()
    assert classpath == "tributary.bitcoin.triggers.TransactionConfirmedTrigger"
    again = TransactionConfirmedTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    json.dumps(kwargs)


@pytest.mark.unit
def test_an_error_event_fails_the_wait_with_the_class_the_trigger_gave_it() -> None:
    from tributary.bitcoin.operators import SettlementConfirmationOperator
    from tributary.core.failfast import ClassifiedFailure

    wait = SettlementConfirmationOperator(task_id="wait_for_confirmations", settlement_id="s-1")
    event = {"status": "error", "error_class": "security", "reason": "jsonrpc:auth", "message": "bad credentials",
             "txid": "aa" * 32}
    with pytest.raises(ClassifiedFailure) as caught:
        wait.execute_complete({"run_id": "manual"}, event)
    assert caught.value.classification.error_class == "security"


# --------------------------------------------------------------------------- end to end with dag.test
@pytest.mark.postgres
@pytest.mark.devnet
def test_settlement_with_three_payouts_is_confirmed_end_to_end(devnet: Devnet, settlement_dag: Any) -> None:
    sid = new_id("e2e")
    payees = [devnet.payee() for _ in range(3)]
    payouts = [{"address": payees[0], "amount_btc": "0.1"}, {"address": payees[1], "amount_btc": 0.25},
               {"address": payees[2], "amount_btc": "1.23456789"}]
    sends = devnet.sends()
    with mining(devnet):
        run = run_dag(settlement_dag, **{"settlement_id": sid, "payouts": payouts, "confirmations": 2,
                                            "fee_policy": {"fee_rate": 3, "max_fee_sats": 50_000},
                                            "poll_interval_seconds": 0.2})

    assert run.state == "success", states(run)
    assert states(run) == {"claim[-1]": "success", "settle.sign_and_broadcast[0]": "success",
                           "settle.wait_for_confirmations[0]": "success", "report[-1]": "success"}
    row, history = ledger(sid)
    assert row["status"] == "confirmed" and row["confirmations"] >= 2 and row["replaced_txids"] == []
    outputs = chain_outputs(devnet, row["txid"])
    assert {a: outputs[a] for a in payees} == {payees[0]: 10_000_000, payees[1]: 25_000_000, payees[2]: 123_456_789}
    assert len(outputs) == 4  # the three payouts and the wallet's change
    assert devnet.tx(row["txid"])["blockhash"] == row["block_hash"]
    assert [e["event"] for e in history] == ["registered", "signed", "broadcast", "confirmed"]
    assert devnet.sends() == sends + 1
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:  # what GET .../taskInstances/report/xcomEntries/return_value serves
        result = session.scalars(XComModel.get_many(run_id=run.run_id, key="return_value", task_ids="report",
                                                    dag_ids="bitcoin_settlement")).first()
        assert XComModel.deserialize_value(result)[0]["txid"] == row["txid"]

    # A re-trigger with the same id and payouts pays nothing: the ledger says already settled.
    balance, sends = devnet.total_balance(), devnet.sends()
    again = run_dag(settlement_dag, **{"settlement_id": sid, "payouts": list(reversed(payouts)),
                                          "poll_interval_seconds": 0.2})
    assert again.state == "success", states(again)
    row_after, history = ledger(sid)
    assert row_after["txid"] == row["txid"] and row_after["status"] == "confirmed"
    assert [e["event"] for e in history][-2:] == ["retriggered", "already_settled"]
    assert devnet.sends() == sends and devnet.total_balance() == balance

    # The same id with other payouts is refused before anything is signed.
    other = run_dag(settlement_dag, **{"settlement_id": sid, "payouts": payouts[:2],
                                          "poll_interval_seconds": 0.2})
    assert other.state == "failed" and states(other)["claim[-1]"] == "failed"
    with pytest.raises(PermanentError, match="settlement id reused with different payouts"):
        from tributary.bitcoin.settlement import claim

        claim({"settlement_id": sid, "payouts": payouts[:2]}, run_id="manual", config=config())
    assert devnet.sends() == sends and ledger(sid)[0]["txid"] == row["txid"]


@pytest.mark.postgres
@pytest.mark.devnet
def test_invalid_payouts_fail_the_run_before_anything_is_signed(devnet: Devnet, settlement_dag: Any) -> None:
    sid = new_id("bad")
    sends = devnet.sends()
    run = run_dag(settlement_dag, **{"settlement_id": sid, "poll_interval_seconds": 0.2, "payouts": [
        {"address": devnet.payee(), "amount_btc": "0.1"}, {"address": MAIN_BECH32, "amount_btc": "0.1"}]})
    assert run.state == "failed"
    assert states(run)["claim[-1]"] == "failed" and states(run)["report[-1]"] == "failed"
    row, history = ledger(sid)
    assert row["status"] == "failed" and row["raw_tx"] is None and "network 'main'" in row["last_error"]
    assert [e["event"] for e in history] == ["rejected"]
    assert devnet.sends() == sends


@pytest.mark.postgres
@pytest.mark.devnet
@pytest.mark.parametrize("payout", [
    {"address": "garbage", "amount_btc": "0.1"},
    {"address": MAIN_P2PKH, "amount_btc": "0.1"},
    {"address": None, "amount_btc": "0"},
    {"address": "payee", "amount_btc": "0"},
    {"address": "payee", "amount_btc": "-0.1"},
    {"address": "payee", "amount_btc": "0.123456789"},
    {"address": "payee", "amount_btc": "0.00000100"},  # dust for P2WPKH
])
def test_bad_payouts_are_data_errors_and_nothing_is_signed(devnet: Devnet, payout: dict[str, Any]) -> None:
    from tributary.bitcoin.settlement import claim
    from tributary.core.errors import classify

    if payout["address"] == "payee":
        payout = {**payout, "address": devnet.payee()}
    sid, sends = new_id("bad"), devnet.sends()
    with pytest.raises(DataError) as caught:
        claim({"settlement_id": sid, "payouts": [payout]}, run_id="manual", config=config())
    assert classify(caught.value).error_class == "data"
    row, _ = ledger(sid)
    assert row["status"] == "failed" and row["raw_tx"] is None and row["txid"] is None
    assert devnet.sends() == sends


@pytest.mark.postgres
@pytest.mark.devnet
def test_more_than_the_balance_is_a_permanent_insufficient_funds_failure(devnet: Devnet) -> None:
    from tributary.bitcoin.hook import BitcoinRpcError
    from tributary.bitcoin.settlement import claim, sign_and_broadcast
    from tributary.core.errors import classify

    sid, sends = new_id("rich"), devnet.sends()
    ids, _ = claim({"settlement_id": sid, "payouts": [{"address": devnet.payee(), "amount_btc": "20000000"}]},
                   run_id="manual", config=config())
    with pytest.raises(BitcoinRpcError) as caught:
        sign_and_broadcast(ids[0], run_id="manual", config=config())
    assert caught.value.code == -6 and classify(caught.value).error_class == "permanent"
    row, history = ledger(sid)
    assert row["status"] == "failed" and row["raw_tx"] is None and "Insufficient funds" in row["last_error"]
    assert history[-1]["event"] == "failed" and devnet.sends() == sends


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_fee_above_the_cap_fails_before_signing(devnet: Devnet) -> None:
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    sid = new_id("cap")
    claim({"settlement_id": sid, "payouts": [{"address": devnet.payee(), "amount_btc": "0.01"}],
           "fee_policy": {"fee_rate": 50, "max_fee_sats": 500}}, run_id="manual", config=config())
    with pytest.raises(PermanentError, match="exceeds max_fee_sats"):
        sign_and_broadcast(sid, run_id="manual", config=config())
    assert ledger(sid)[0]["raw_tx"] is None


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_crash_after_broadcast_before_the_ledger_update_does_not_pay_twice(
        devnet: Devnet, settlement_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.bitcoin import settlement
    from tributary.bitcoin.hook import BitcoinCoreHook

    sid, sends = new_id("crash"), devnet.sends()
    payouts = [{"address": devnet.payee(), "amount_btc": "0.3"}, {"address": devnet.payee(), "amount_btc": "0.4"}]
    settlement.claim({"settlement_id": sid, "payouts": payouts, "fee_policy": {"fee_rate": 2}},
                     run_id="manual", config=config())
    real_send = BitcoinCoreHook.send_raw_transaction

    def send_then_die(self: Any, raw_tx: str, *args: Any, **kwargs: Any) -> str:
        real_send(self, raw_tx, *args, **kwargs)
        raise ConnectionError("worker lost after sendrawtransaction")

    monkeypatch.setattr(BitcoinCoreHook, "send_raw_transaction", send_then_die)
    with pytest.raises(ConnectionError):
        settlement.sign_and_broadcast(sid, run_id="try-1", config=config())
    row, _ = ledger(sid)
    assert row["status"] == "signed" and row["txid"] in devnet.rpc("getrawmempool", wallet="")
    assert devnet.sends() == sends + 1
    monkeypatch.setattr(BitcoinCoreHook, "send_raw_transaction", real_send)

    # The retry (here: the whole DAG re-triggered by id) re-broadcasts the stored bytes and confirms.
    with mining(devnet):
        run = run_dag(settlement_dag, **{"settlement_id": sid, "poll_interval_seconds": 0.2})
    assert run.state == "success", states(run)
    row_after, history = ledger(sid)
    assert row_after["txid"] == row["txid"] and row_after["status"] == "confirmed"
    assert [e["event"] for e in history] == ["registered", "signed", "retriggered", "broadcast", "confirmed"]
    assert devnet.sends() == sends + 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_stuck_transaction_is_fee_bumped_and_the_replacement_confirms(devnet: Devnet, settlement_dag: Any) -> None:
    sid, sends = new_id("rbf"), devnet.sends()
    payee = devnet.payee()

    def bumped() -> bool:
        row, _ = ledger(sid)
        return bool(row and row["replaced_txids"])

    with mining(devnet, every=0.5, when=bumped):
        run = run_dag(settlement_dag, **{
            "settlement_id": sid, "payouts": [{"address": payee, "amount_btc": "0.5"}],
            "fee_policy": {"fee_rate": 1, "max_fee_sats": 20_000}, "bump_after_minutes": 0.03,
            "poll_interval_seconds": 0.2})
    assert run.state == "success", states(run)
    row, history = ledger(sid)
    assert row["status"] == "confirmed" and row["replaced_txids"]
    bump = next(e for e in history if e["event"] == "bumped")
    assert bump["detail"]["old_txid"] == row["replaced_txids"][0]
    assert bump["detail"]["new_fee_sats"] > bump["detail"]["old_fee_sats"]
    assert chain_outputs(devnet, row["txid"])[payee] == 50_000_000
    for old in row["replaced_txids"]:
        assert devnet.rpc("gettransaction", old)["confirmations"] <= 0
    assert devnet.sends() == sends + 1 + len(row["replaced_txids"])  # replacements, one payment on chain
    assert row["fee_sats"] <= 20_000


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_sends_a_confirmed_settlement_back_to_broadcast_until_it_confirms_again(
        devnet: Devnet, settlement_dag: Any) -> None:
    sid = new_id("reorg")
    payouts = [{"address": devnet.payee(), "amount_btc": "0.2"}, {"address": devnet.payee(), "amount_btc": "0.7"}]
    with mining(devnet):
        first = run_dag(settlement_dag, **{"settlement_id": sid, "payouts": payouts,
                                              "poll_interval_seconds": 0.2})
    assert first.state == "success", states(first)
    row, _ = ledger(sid)
    sends = devnet.sends()

    devnet.rpc("invalidateblock", row["block_hash"], wallet="")  # the confirming block leaves the active chain
    assert devnet.rpc("gettransaction", row["txid"])["confirmations"] == 0

    from tributary.bitcoin.settlement import sign_and_broadcast

    back = sign_and_broadcast(sid, run_id="recheck", config=config())
    assert back["status"] == "broadcast" and back["txid"] == row["txid"]
    with mining(devnet):
        again = run_dag(settlement_dag, **{"settlement_id": sid, "poll_interval_seconds": 0.2})
    assert again.state == "success", states(again)
    row_after, history = ledger(sid)
    assert row_after["status"] == "confirmed" and row_after["txid"] == row["txid"]
    assert row_after["block_hash"] != row["block_hash"]
    assert [e["event"] for e in history][-5:] == ["reorged", "rebroadcast", "retriggered", "rebroadcast",
                                                  "confirmed"]
    assert devnet.sends() == sends


@pytest.mark.postgres
@pytest.mark.devnet
def test_the_trigger_reports_a_reorg_while_waiting_and_the_old_transaction_may_win(devnet: Devnet) -> None:
    """Reorg during the wait, RBF while unconfirmed, then the original block returns: the old txid wins."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.bitcoin.settlement import apply_event, claim, confirmation_plan, sign_and_broadcast
    from tributary.bitcoin.triggers import TransactionConfirmedTrigger

    sid = new_id("race")
    claim({"settlement_id": sid, "payouts": [{"address": devnet.payee(), "amount_btc": "0.05"}],
           "confirmations": 3, "fee_policy": {"fee_rate": 2}}, run_id="manual", config=config())
    first = sign_and_broadcast(sid, run_id="manual", config=config())
    hook = BitcoinCoreHook()
    plan = confirmation_plan(sid, config=config())
    trigger = TransactionConfirmedTrigger(plan["txids"], plan["confirmations"], wallet=plan["wallet"],
                                          poll_interval=0.1)
    assert trigger.poll(hook) is None  # in the mempool, no bump deadline
    [block] = devnet.mine(1)
    assert trigger.poll(hook) is None and trigger.seen_blocks == {first["txid"]: block}

    devnet.rpc("invalidateblock", block, wallet="")
    event = trigger.poll(hook)
    assert event["status"] == "reorged" and event["orphaned_block"] == block
    apply_event(sid, event, run_id="manual", config=config())
    assert ledger(sid)[0]["status"] == "broadcast"

    stuck = {"status": "stuck", "txid": first["txid"], "confirmations": 0}
    plan = apply_event(sid, stuck, run_id="manual", config=config())
    row, _ = ledger(sid)
    assert row["replaced_txids"] == [first["txid"]] and plan["txids"] == [row["txid"], first["txid"]]

    devnet.rpc("reconsiderblock", block, wallet="")  # the block with the original transaction is back
    devnet.mine(2)
    event = TransactionConfirmedTrigger(plan["txids"], 3, wallet=plan["wallet"]).poll(hook)
    assert event["status"] == "confirmed" and event["txid"] == first["txid"]
    done = apply_event(sid, event, run_id="manual", config=config())["done"]
    assert done["txid"] == first["txid"] and done["replaced_txids"] == [row["txid"]]
    assert done["status"] == "confirmed" and done["block_hash"] == block


@pytest.mark.postgres
@pytest.mark.devnet
def test_pending_rows_from_other_systems_are_picked_up_and_bad_ones_quarantined(
        devnet: Devnet, settlement_dag: Any) -> None:
    from tributary.bitcoin.ledger import SettlementLedger

    good, bad, payee = new_id("tbl"), new_id("tbl-bad"), devnet.payee()
    with SettlementLedger.session("tributary_warehouse") as book:
        with book.conn.cursor() as cur:
            cur.execute("UPDATE btc_settlements SET status = 'failed' WHERE status = 'pending'")
            cur.execute("INSERT INTO btc_settlements (id, payouts, fee_policy) VALUES (%s, %s::jsonb, %s::jsonb),"
                        " (%s, %s::jsonb, '{}'::jsonb)",
                        (good, json.dumps([{"address": payee, "amount_btc": "0.015"}]), json.dumps({"fee_rate": 2}),
                         bad, json.dumps([{"address": MAIN_P2PKH, "amount_btc": "0.015"}])))
        book.commit()
    with mining(devnet):
        run = run_dag(settlement_dag, **{"poll_interval_seconds": 0.2})
    assert run.state == "failed", states(run)  # the report fails on the quarantined row, after paying
    assert states(run)["settle.wait_for_confirmations[0]"] == "success"
    good_row, _ = ledger(good)
    bad_row, _ = ledger(bad)
    assert good_row["status"] == "confirmed" and chain_outputs(devnet, good_row["txid"])[payee] == 1_500_000
    assert bad_row["status"] == "failed" and "belongs to ['main']" in bad_row["last_error"]


@pytest.mark.unit
def test_outputs_that_differ_from_the_payouts_are_a_security_error() -> None:
    from bitcoin.core import CMutableTransaction, CMutableTxIn, CMutableTxOut, COutPoint, lx

    from tributary.bitcoin.settlement import check_outputs, validate_payouts

    payouts = validate_payouts([{"address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "amount_btc": "1"}],
                               "regtest")
    tx = CMutableTransaction([CMutableTxIn(COutPoint(lx("11" * 32), 0))],
                             [CMutableTxOut(99_999_999, payouts[0].script_pubkey)])
    with pytest.raises(SecurityError):
        check_outputs(tx.serialize().hex(), payouts)
    tx.vout[0].nValue = 100_000_000
    assert check_outputs(tx.serialize().hex(), payouts)[1] == []


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_wallet_payment_the_ledger_lost_is_adopted_instead_of_paying_again(devnet: Devnet) -> None:
    """The wallet is checked too: a transaction paying exactly these payouts, claimed by no settlement."""
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    payee = devnet.payee()
    paid = devnet.rpc("sendtoaddress", payee, Decimal("0.0123"))  # e.g. a run whose ledger write was lost
    sid, sends = new_id("lost"), devnet.sends()
    claim({"settlement_id": sid, "payouts": [{"address": payee, "amount_btc": "0.0123"}]}, run_id="manual",
          config=config())
    result = sign_and_broadcast(sid, run_id="manual", config=config())
    assert result["txid"] == paid and result["status"] == "broadcast"
    assert [e["event"] for e in ledger(sid)[1]] == ["registered", "adopted_wallet_transaction", "broadcast"]
    assert devnet.sends() == sends

    # A second settlement with the same payouts is a new payment: that transaction belongs to `sid` now.
    other = new_id("lost")
    claim({"settlement_id": other, "payouts": [{"address": payee, "amount_btc": "0.0123"}]}, run_id="manual",
          config=config())
    assert sign_and_broadcast(other, run_id="manual", config=config())["txid"] != paid
    assert devnet.sends() == sends + 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_signed_but_never_broadcast_settlement_goes_out_before_the_next_one_is_funded(
        devnet: Devnet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Otherwise the wallet would fund the next settlement with the same coins and the two would conflict."""
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    first, second = new_id("flush"), new_id("flush")
    for sid in (first, second):
        claim({"settlement_id": sid, "payouts": [{"address": devnet.payee(), "amount_btc": "0.02"}],
               "fee_policy": {"fee_rate": 2}}, run_id="manual", config=config())

    def die(self: Any, raw_tx: str, *args: Any, **kwargs: Any) -> str:
        raise ConnectionError("worker lost before sendrawtransaction")

    with monkeypatch.context() as patch:
        patch.setattr(BitcoinCoreHook, "send_raw_transaction", die)
        with pytest.raises(ConnectionError):
            sign_and_broadcast(first, run_id="try-1", config=config())
    assert ledger(first)[0]["status"] == "signed"

    done = sign_and_broadcast(second, run_id="other-run", config=config())
    row, history = ledger(first)
    assert row["status"] == "broadcast" and history[-1]["dag_run_id"] == "other-run"
    mempool = devnet.rpc("getrawmempool", wallet="")
    assert row["txid"] in mempool and done["txid"] in mempool
    spent = [{(i["txid"], i["vout"]) for i in devnet.tx(t)["vin"]} for t in (row["txid"], done["txid"])]
    assert not spent[0] & spent[1]


@pytest.mark.postgres
@pytest.mark.devnet
def test_airflow_retrying_a_task_that_died_after_sendrawtransaction_pays_once(
        devnet: Devnet, settlement_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real retry path: the transient failure is retried by Airflow in the same run."""
    from tributary.bitcoin.hook import BitcoinCoreHook

    real_send = BitcoinCoreHook.send_raw_transaction
    calls: list[str] = []

    def first_call_dies(self: Any, raw_tx: str, *args: Any, **kwargs: Any) -> str:
        txid = real_send(self, raw_tx, *args, **kwargs)
        calls.append(txid)
        if len(calls) == 1:
            raise ConnectionError("worker lost after sendrawtransaction")
        return txid

    monkeypatch.setattr(BitcoinCoreHook, "send_raw_transaction", first_call_dies)
    task = settlement_dag.get_task("settle.sign_and_broadcast")
    monkeypatch.setattr(task, "retry_delay", timedelta(seconds=1))  # the DAG's 15 s, shortened for the test
    monkeypatch.setattr(task, "retry_exponential_backoff", 0)
    sid, sends = new_id("retry"), devnet.sends()
    with mining(devnet):
        run = run_dag(settlement_dag, settlement_id=sid, fee_policy={"fee_rate": 2, "max_fee_sats": 10_000},
                      payouts=[{"address": devnet.payee(), "amount_btc": "0.06"},
                               {"address": devnet.payee(), "amount_btc": "0.07"}])
    assert run.state == "success", states(run)
    [ti] = [ti for ti in run.get_task_instances() if ti.task_id == "settle.sign_and_broadcast"]
    assert ti.try_number == 2
    row, history = ledger(sid)
    assert calls == [row["txid"], row["txid"]]  # the retry re-sent the very same transaction
    assert [e["event"] for e in history] == ["registered", "signed", "broadcast", "confirmed"]
    assert devnet.sends() == sends + 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_signed_transaction_whose_coins_were_spent_elsewhere_fails_without_paying(
        devnet: Devnet, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.bitcoin.hook import BitcoinCoreHook
    from tributary.bitcoin.settlement import claim, sign_and_broadcast

    sid = new_id("spent")
    claim({"settlement_id": sid, "payouts": [{"address": devnet.payee(), "amount_btc": "0.03"}],
           "fee_policy": {"fee_rate": 2}}, run_id="manual", config=config())

    def die(self: Any, raw_tx: str, *args: Any, **kwargs: Any) -> str:
        raise ConnectionError("worker lost before sendrawtransaction")

    with monkeypatch.context() as patch:
        patch.setattr(BitcoinCoreHook, "send_raw_transaction", die)
        with pytest.raises(ConnectionError):
            sign_and_broadcast(sid, run_id="try-1", config=config())
    row, _ = ledger(sid)
    inputs = {(i["txid"], i["vout"]) for i in devnet.rpc("decoderawtransaction", row["raw_tx"], wallet="")["vin"]}
    # Someone unlocks the coins the settlement holds (or the node restarted: locks of lockUnspents live in
    # memory), spends them from the wallet by hand, and it is mined.
    devnet.rpc("lockunspent", True)
    other = devnet.rpc("sendtoaddress", devnet.payee(), Decimal("0.5"), None, None, False, True, None, None, None, 50)
    assert inputs & {(i["txid"], i["vout"]) for i in devnet.tx(other)["vin"]}
    devnet.mine(1)
    sends = devnet.sends()
    with pytest.raises(PermanentError, match="spent elsewhere"):
        sign_and_broadcast(sid, run_id="try-2", config=config())
    row, history = ledger(sid)
    assert row["status"] == "failed" and history[-1]["event"] == "failed"
    assert devnet.sends() == sends
