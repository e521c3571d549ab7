"""bitcoin_mempool: snapshots, fee estimates and watched transactions against the regtest devnet and a real
PostgreSQL warehouse."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "bitcoin_mempool"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def label() -> str:
    return f"regtest-mempool-{uuid.uuid4().hex[:10]}"


def _hook(wallet: str | None = None) -> Any:
    from tributary.bitcoin.hook import BitcoinCoreHook

    return BitcoinCoreHook(wallet=wallet)


def _send(regtest: Any, amount: str = "0.05") -> str:
    return regtest.rpc("sendtoaddress", regtest.rpc("getnewaddress"), Decimal(amount))


def _signed_unsent(regtest: Any, amount: str = "0.07") -> tuple[str, str]:
    """A signed transaction that is not broadcast yet: (txid, hex)."""
    address = regtest.rpc("getnewaddress")
    psbt = regtest.rpc("walletcreatefundedpsbt", [], [{address: Decimal(amount)}])["psbt"]
    signed = regtest.rpc("walletprocesspsbt", psbt)["psbt"]
    raw = regtest.rpc("finalizepsbt", signed)["hex"]
    return _hook().call("decoderawtransaction", raw, wallet="")["txid"], raw


def _watched(pg: Any, chain: str, txid: str) -> dict[str, Any]:
    with pg.cursor() as cur:
        cur.execute("SELECT status, confirmations, block_hash, replaced_by, inputs, first_seen, label, fee, vsize"
                    " FROM btc_watched_txs WHERE chain = %s AND txid = %s", (chain, txid))
        row = cur.fetchone()
    pg.rollback()
    keys = ("status", "confirmations", "block_hash", "replaced_by", "inputs", "first_seen", "label", "fee", "vsize")
    return dict(zip(keys, row, strict=True)) if row else {}


def _track(pg: Any, chain: str, **kwargs: Any) -> Any:
    from tributary.bitcoin.mempool import track_watched

    return track_watched(_hook(), pg, chain=chain, **kwargs)


# --------------------------------------------------------------------------- pure logic
@pytest.mark.unit
def test_weighted_percentiles_follow_core_getblockstats() -> None:
    from tributary.bitcoin.mempool import weighted_percentiles

    pairs = [(Decimal(1), 100), (Decimal(5), 100), (Decimal(2), 200), (Decimal(10), 600)]
    # total 1000: 10% -> 100 (rate 1), 25% -> 250 (rate 2, cumulative 300), 50/75/90% -> rate 10
    assert weighted_percentiles(pairs) == [1, 2, 10, 10, 10]
    assert weighted_percentiles([]) == [None] * 5


@pytest.mark.unit
def test_summarize_mempool_counts_fees_and_bins() -> None:
    from tributary.bitcoin.mempool import summarize_mempool

    pool = {"a" * 64: {"vsize": 100, "fees": {"base": Decimal("0.00000250")}},
            "b" * 64: {"vsize": 200, "fees": {"base": Decimal("0.00004000")}}}
    snap = summarize_mempool(pool)
    assert (snap.tx_count, snap.vsize_total, snap.fee_total) == (2, 300, 4250)
    assert (snap.min_feerate, snap.max_feerate) == (Decimal("2.5"), Decimal("20"))
    assert [(b["min"], b["max"], b["count"]) for b in snap.histogram] == [(2, 3, 1), (20, 30, 1)]


@pytest.mark.unit
def test_decide_marks_a_vanished_tx_dropped_without_a_conflicting_spend() -> None:
    from tributary.bitcoin.mempool import Spender, Watch, decide

    now = datetime.now(UTC)
    seen = Watch(txid="a" * 64, status="mempool", inputs=("c" * 64 + ":0",), seen_height=10)
    assert decide(seen, None, None, now=now, tip_height=11).status == "dropped"
    replaced = decide(seen, None, Spender("b" * 64), now=now, tip_height=11)
    assert (replaced.status, replaced.replaced_by) == ("replaced", "b" * 64)
    mined_itself = decide(seen, None, Spender("a" * 64, "d" * 64, 11), now=now, tip_height=12)
    assert (mined_itself.status, mined_itself.confirmations, mined_itself.block_hash) == ("confirmed", 2, "d" * 64)
    assert decide(Watch(txid="a" * 64), None, None, now=now, tip_height=11).status == "unseen"


@pytest.mark.unit
def test_malformed_txids_are_a_permanent_error() -> None:
    from tributary.bitcoin.mempool import normalize_txids
    from tributary.core.errors import PermanentError

    assert normalize_txids(["ab" * 32, "ab" * 32]) == ["ab" * 32]
    for bad in ("xyz", "AB" * 32, "ab" * 31, 12):
        with pytest.raises(PermanentError, match="not a txid"):
            normalize_txids([bad])


# --------------------------------------------------------------------------- against the devnet
@pytest.mark.postgres
@pytest.mark.devnet
def test_snapshot_matches_getrawmempool(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.mempool import store_snapshot, summarize_mempool

    for amount in ("0.01", "0.02"):
        _send(regtest, amount)
    pool = _hook().get_raw_mempool(verbose=True)
    snap = summarize_mempool(pool)
    store_snapshot(pg, chain=label, key="run-1", snapshot=snap, taken_at=datetime.now(UTC), tip_height=1, tip_hash="x")
    store_snapshot(pg, chain=label, key="run-1", snapshot=snap, taken_at=datetime.now(UTC), tip_height=1, tip_hash="x")
    with pg.cursor() as cur:
        cur.execute("SELECT count(*), max(tx_count), max(vsize_total), max(fee_total),"
                    " max(jsonb_array_length(feerate_histogram)) FROM btc_mempool_snapshots WHERE chain = %s", (label,))
        row = cur.fetchone()
    assert row[0] == 1  # the re-run replaced its row
    assert row[1] == len(pool) >= 2
    assert row[2] == sum(e["vsize"] for e in pool.values())
    assert row[3] == sum(int(e["fees"]["base"] * 100_000_000) for e in pool.values())
    assert row[4] >= 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_watched_tx_goes_unseen_mempool_confirmed(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.mempool import add_watches

    txid, raw = _signed_unsent(regtest)
    assert add_watches(pg, chain=label, txids=[txid], label="payout #7") == 1
    assert add_watches(pg, chain=label, txids=[txid]) == 0

    report = _track(pg, label)
    assert _watched(pg, label, txid)["status"] == "unseen" and report.transitions == []

    _hook().send_raw_transaction(raw)
    report = _track(pg, label)
    state = _watched(pg, label, txid)
    assert state["status"] == "mempool" and state["first_seen"] is not None and state["label"] == "payout #7"
    assert state["inputs"] and state["fee"] > 0 and state["vsize"] > 0
    assert report.transitions == [{"txid": txid, "from": "unseen", "to": "mempool", "replaced_by": None,
                                   "confirmations": 0}]

    block = regtest.mine(1)[0]
    _track(pg, label)
    state = _watched(pg, label, txid)
    assert (state["status"], state["confirmations"], state["block_hash"]) == ("confirmed", 1, block)

    regtest.mine(2)
    _track(pg, label)
    assert _watched(pg, label, txid)["confirmations"] == 3


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_fee_bumped_tx_is_marked_replaced_by_the_new_txid(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.mempool import add_watches

    original = _send(regtest)
    add_watches(pg, chain=label, txids=[original])
    _track(pg, label)
    assert _watched(pg, label, original)["status"] == "mempool"

    bumped = regtest.rpc("bumpfee", original)["txid"]
    report = _track(pg, label)
    state = _watched(pg, label, original)
    assert (state["status"], state["replaced_by"]) == ("replaced", bumped)
    assert report.transitions[0]["to"] == "replaced"

    regtest.mine(1)  # the replacement confirms: the original stays replaced
    _track(pg, label)
    assert (_watched(pg, label, original)["status"], _watched(pg, label, original)["replaced_by"]) == (
        "replaced", bumped)


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_replacement_found_in_a_block_marks_the_original_replaced(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.mempool import add_watches

    original = _send(regtest)
    add_watches(pg, chain=label, txids=[original])
    _track(pg, label)
    bumped = regtest.rpc("bumpfee", original)["txid"]
    regtest.mine(1)  # replaced and mined before the next run: found by the block scan
    _track(pg, label)
    assert (_watched(pg, label, original)["status"], _watched(pg, label, original)["replaced_by"]) == (
        "replaced", bumped)


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_tx_that_vanishes_without_a_conflicting_spend_is_dropped(tmp_path: Path, pg: Any, label: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from devnets.bitcoin.process import start_devnet
    from tributary.bitcoin.mempool import add_watches

    def use(handle: Any) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
            "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": handle.port,
            "extra": {"cookie_file": str(handle.cookie_path), "network": "regtest", "wallet": "w"}}))

    datadir = tmp_path / "node"
    handle = start_devnet(datadir)
    try:
        use(handle)
        _hook(wallet="").call("createwallet", "w")
        _hook().call("generatetoaddress", 101, _hook().call("getnewaddress"))
        txid = _hook().call("sendtoaddress", _hook().call("getnewaddress"), Decimal("1"))
        add_watches(pg, chain=label, txids=[txid])
        _track(pg, label)
        assert _watched(pg, label, txid)["status"] == "mempool"
    finally:
        handle.process.kill()  # no clean shutdown: the mempool is not saved
        handle.process.wait()
    with start_devnet(datadir) as again:
        use(again)
        if txid in _hook().get_raw_mempool():
            pytest.skip("the devnet re-broadcast its wallet transaction after the restart")
        _track(pg, label)
    state = _watched(pg, label, txid)
    assert (state["status"], state["replaced_by"], state["confirmations"]) == ("dropped", None, 0)


@pytest.mark.postgres
@pytest.mark.devnet
def test_fee_estimates_are_stored_per_target(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.mempool import estimate_fees, store_fee_estimates

    estimates = estimate_fees(_hook(), [1, 3, 6, 12, 144])
    for _ in range(2):
        store_fee_estimates(pg, chain=label, key="run-1", estimates=estimates, estimated_at=datetime.now(UTC))
    with pg.cursor() as cur:
        cur.execute("SELECT conf_target, feerate_sat_vb FROM btc_fee_estimates WHERE chain = %s ORDER BY conf_target",
                    (label,))
        rows = cur.fetchall()
    node = _hook().estimate_smart_fee(6)
    assert [r[0] for r in rows] == [1, 3, 6, 12, 144]
    assert all(r[1] >= 1 for r in rows)  # regtest floor: 1 sat/vB
    assert rows[2][1] == node["feerate_sat_vb"].quantize(Decimal("0.001"))


# --------------------------------------------------------------------------- the DAG
def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "bitcoin" / f"{DAG_ID}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(DAG_ID)


@pytest.mark.postgres
@pytest.mark.devnet
def test_dag_runs_snapshot_estimate_and_track_a_watched_tx(regtest: Any, pg: Any, project_dags: Path,
                                                           label: str) -> None:
    dag = _dag()
    txid = _send(regtest)
    run = dag.test(run_conf={"chain_label": label, "watch_txids": [txid], "watch_label": "rest"})

    assert run.state == "success"
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {
        "register_watches": "success", "snapshot_mempool": "success", "estimate_fees": "success",
        "track_watched_txs": "success"}
    pool = _hook().get_raw_mempool(verbose=True)
    with pg.cursor() as cur:
        cur.execute("SELECT tx_count, vsize_total FROM btc_mempool_snapshots WHERE chain = %s AND snapshot_key = %s",
                    (label, run.run_id))
        assert cur.fetchone() == (len(pool), sum(e["vsize"] for e in pool.values()))
        cur.execute("SELECT count(*) FROM btc_fee_estimates WHERE chain = %s AND snapshot_key = %s",
                    (label, run.run_id))
        assert cur.fetchone()[0] == 5
    pg.rollback()
    assert _watched(pg, label, txid)["status"] == "mempool"

    block = regtest.mine(1)[0]
    again = dag.test(run_conf={"chain_label": label})
    assert again.state == "success"
    state = _watched(pg, label, txid)
    assert (state["status"], state["block_hash"], state["label"]) == ("confirmed", block, "rest")


@pytest.mark.unit
def test_a_malformed_txid_in_the_conf_is_refused_with_a_clear_error(project_dags: Path) -> None:
    with pytest.raises(Exception, match="watch_txids") as info:
        _dag().test(run_conf={"watch_txids": ["not-a-txid"]})
    assert type(info.value).__name__ == "ParamValidationError"
    assert "'not-a-txid' does not match '^[0-9a-f]{64}$'" in str(info.value)
