"""bitcoin_chain_sync and tributary.bitcoin.sync against a private regtest devnet and the real warehouse.

Each test starts its own devnet (0.3 s), so reorgs never disturb the session chain of other tests,
and stores under its own ``chain_label`` so tests sharing the warehouse never see each other's rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests._shared import SHARED
from tributary.bitcoin import store, sync
from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "bitcoin" / "bitcoin_chain_sync.py"


# --------------------------------------------------------------------------- fixtures
class Devnet:
    """A private devnet with a funded wallet, configured as the ``tributary_bitcoin`` Connection."""

    def __init__(self, handle: Any) -> None:
        from tributary.bitcoin.hook import BitcoinCoreHook

        self.handle = handle
        self.node = BitcoinCoreHook(wallet="")
        self.wallet = BitcoinCoreHook(wallet="w")
        self.node.call("createwallet", "w")
        self.address = self.wallet.call("getnewaddress")

    def rpc(self, method: str, *params: Any) -> Any:
        return self.node.call(method, *params)

    def mine(self, blocks: int = 1) -> list[str]:
        return self.node.call("generatetoaddress", blocks, self.address)

    def send(self, count: int, amount: str = "0.1") -> list[str]:
        return [self.wallet.call("sendtoaddress", self.wallet.call("getnewaddress"), Decimal(amount))
                for _ in range(count)]

    def height(self) -> int:
        return int(self.rpc("getblockcount"))


@pytest.fixture
def devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Devnet]:
    from devnets.bitcoin.process import start_devnet

    with start_devnet(tmp_path / "devnet") as handle:
        monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
            "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": handle.port,
            "extra": {"cookie_file": str(handle.cookie_path), "network": "regtest"}}))
        net = Devnet(handle)
        net.mine(101)
        yield net


@pytest.fixture
def funded(devnet: Devnet) -> Devnet:
    """~120 blocks, some of them with wallet transactions (fees, spends of spends)."""
    for _ in range(3):
        devnet.send(4)
        devnet.mine(2)
    devnet.send(3, "0.05")
    devnet.mine(10)
    return devnet


@pytest.fixture
def label() -> str:
    return f"rt_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conn(pg: Any, warehouse: Any) -> Iterator[Any]:
    """A psycopg 3 connection (what the DAG's tasks get from ``WarehouseHook``), schema applied."""
    from tributary.storage.warehouse import WarehouseHook

    with WarehouseHook().get_conn() as connection:
        yield connection


@pytest.fixture(scope="module")
def dag_folder(warehouse: Any) -> Iterator[Path]:
    """A migrated Airflow metadata DB and a private DAG bundle holding only this DAG file."""
    folder = Path(tempfile.mkdtemp(prefix="tributary-btc-sync-dags-"))
    shutil.copy(DAG_FILE, folder / DAG_FILE.name)
    key = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    saved = os.environ.get(key)
    os.environ[key] = json.dumps([{"name": f"btc-sync-tests-{uuid.uuid4().hex[:6]}",
                                   "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                                   "kwargs": {"path": str(folder), "refresh_interval": 0}}])
    from airflow.utils import db

    db.resetdb()
    yield folder
    if saved is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = saved
    shutil.rmtree(folder, ignore_errors=True)


def _dag(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder / DAG_FILE.name))
    assert bag.import_errors == {}
    return bag.get_dag("bitcoin_chain_sync")


def _states(run: Any) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}


def _counts(conn: Any, chain: str) -> dict[str, int]:
    with conn.cursor() as cur:
        counts = {}
        for table in ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs"):
            cur.execute(f"SELECT count(*) FROM {table} WHERE chain = %s", (chain,))
            counts[table] = int(cur.fetchone()[0])
    conn.rollback()
    return counts


def _assert_matches_node(conn: Any, net: Devnet, chain: str, heights: range) -> None:
    """Hashes, prev links, tx counts, txids and fees (getblock verbosity 2) as the node says."""
    from tributary.bitcoin.amounts import btc_to_sats

    with conn.cursor() as cur:
        for height in heights:
            block = net.rpc("getblock", net.rpc("getblockhash", height), 2)
            cur.execute("SELECT hash, prev_hash, tx_count, size, weight FROM btc_blocks"
                        " WHERE chain = %s AND height = %s", (chain, height))
            assert cur.fetchone() == (block["hash"], block.get("previousblockhash", "0" * 64), block["nTx"],
                                      block["size"], block["weight"]), height
            cur.execute("SELECT txid, fee, output_count FROM btc_transactions WHERE chain = %s AND block_hash = %s"
                        " ORDER BY idx", (chain, block["hash"]))
            rows = cur.fetchall()
            assert [r[0] for r in rows] == [tx["txid"] for tx in block["tx"]]
            for (txid, fee, outputs), tx in zip(rows, block["tx"], strict=True):
                assert fee == (btc_to_sats(tx["fee"]) if "fee" in tx else None), txid
                assert outputs == len(tx["vout"])
    conn.rollback()


def _error_events(conn: Any, run_id: str) -> list[tuple[str, str | None, str]]:
    with conn.cursor() as cur:
        cur.execute("SELECT kind, error_class, task_id FROM error_events WHERE dag_id = 'bitcoin_chain_sync'"
                    " AND run_id = %s AND kind <> 'success' ORDER BY occurred_at", (run_id,))
        rows = [tuple(r) for r in cur.fetchall()]
    conn.rollback()
    return rows


# --------------------------------------------------------------------------- pure logic
@pytest.mark.unit
def test_fork_point_is_below_the_lowest_disagreeing_height() -> None:
    stored = {10: "a", 11: "b", 12: "c", 13: "d"}
    assert sync.find_fork_point(stored, {10: "a", 11: "b", 12: "c", 13: "d", 14: "e"}) is None
    assert sync.find_fork_point(stored, {10: "a", 11: "b", 12: "x", 13: "y"}) == 11
    assert sync.find_fork_point(stored, {10: "a", 11: "b"}) == 11  # the node is shorter: 12, 13 orphaned
    assert sync.find_fork_point(stored, {10: "z", 11: "b", 12: "c", 13: "d"}) == 9  # inconsistent: lowest wins


@pytest.mark.unit
def test_ranges_cover_the_heights_once_in_order() -> None:
    assert sync.split_ranges(0, 9, 4) == [(0, 3), (4, 7), (8, 9)]
    assert sync.split_ranges(5, 5, 100) == [(5, 5)]
    assert sync.split_ranges(6, 5, 100) == []


@pytest.mark.unit
def test_max_reorg_depth_comes_from_param_then_variable_then_chain_default() -> None:
    assert sync.resolve_max_reorg_depth(3, "main", '{"main": 9}') == 3
    assert sync.resolve_max_reorg_depth(None, "main", '{"main": 9}') == 9
    assert sync.resolve_max_reorg_depth(None, "regtest", '{"main": 9}') == 100
    assert sync.resolve_max_reorg_depth(None, "main", "12") == 12
    assert sync.resolve_max_reorg_depth(None, "main", None) == 6


@pytest.mark.unit
def test_a_conf_with_end_below_start_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="end_height 5 is below start_height 10") as caught:
        sync.SyncRequest.from_params({"start_height": 10, "end_height": 5})
    assert caught.value.reason == "invalid_conf"
    assert sync.SyncRequest.from_params({"start_height": None, "batch_size": 7}).batch_size == 7


# --------------------------------------------------------------------------- sync functions
def _sync_all(conn: Any, net: Devnet, chain: str, *, max_depth: int = 100, **params: Any) -> tuple[Any, Any]:
    from tributary.bitcoin.hook import BitcoinCoreHook

    hook = BitcoinCoreHook()
    node = sync.NodeState.read(hook)
    reorg = sync.check_reorg(conn, hook, chain=chain, node=node, max_depth=max_depth, conn_id="tributary_bitcoin")
    plan = sync.plan(conn, chain=chain, node=node, request=sync.SyncRequest(**params))
    for block_range in plan.ranges:
        sync.sync_range(conn, hook, **block_range)
    sync.fill_missing_fees(conn, chain=chain)
    sync.advance_checkpoint(conn, chain=chain, conn_id="tributary_bitcoin")
    return plan, reorg


@pytest.mark.postgres
@pytest.mark.devnet
def test_ranges_loaded_out_of_order_get_their_fees_filled_in(conn, funded: Devnet, label: str) -> None:
    from tributary.bitcoin.hook import BitcoinCoreHook

    hook = BitcoinCoreHook()
    tip = funded.height()
    pieces = sync.split_ranges(0, tip, 9)
    for low, high in reversed(pieces):  # later ranges first: their spends' outputs are not stored yet
        sync.sync_range(conn, hook, chain=label, network="regtest", start=low, stop=high, batch_size=4)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM btc_transactions WHERE chain = %s AND fee IS NULL AND NOT is_coinbase",
                    (label,))
        assert cur.fetchone()[0] > 0
    conn.rollback()
    inputs, fees = sync.fill_missing_fees(conn, chain=label)
    assert inputs > 0 and fees > 0
    assert sync.fill_missing_fees(conn, chain=label) == (0, 0)  # idempotent
    _assert_matches_node(conn, funded, label, range(100, tip + 1))
    best = funded.rpc("getbestblockhash")
    assert sync.advance_checkpoint(conn, chain=label, conn_id="tributary_bitcoin") == (tip, best)
    assert sync.check_continuity(conn, chain=label, start=0, stop=tip).ok


@pytest.mark.postgres
@pytest.mark.devnet
def test_the_parallel_parse_path_stores_what_the_node_has(conn, funded: Devnet, label: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Big batches are parsed in forked workers (spent-output values and fees resolved afterwards in
    height order): forced on small blocks, the rows and fees must equal the node's, like the serial path."""
    from tributary.bitcoin.hook import BitcoinCoreHook

    monkeypatch.setattr(sync, "PARALLEL_MIN_BLOCKS", 1)
    monkeypatch.setattr(sync, "PARALLEL_MIN_BYTES", 0)
    tip = funded.height()
    sync.sync_range(conn, BitcoinCoreHook(), chain=label, network="regtest", start=0, stop=tip, batch_size=16)
    assert sync.fill_missing_fees(conn, chain=label) == (0, 0)  # every in-batch spend was priced by the parent
    _assert_matches_node(conn, funded, label, range(0, tip + 1))
    assert _counts(conn, label)["btc_blocks"] == tip + 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_deeper_than_the_limit_raises_security_error_and_deletes_nothing(conn, funded: Devnet,
                                                                                  label: str) -> None:
    _sync_all(conn, funded, label)
    before = _counts(conn, label)
    tip = funded.height()
    stored = store.stored_hashes(conn, chain=label, start=0, stop=tip)
    funded.rpc("invalidateblock", funded.rpc("getblockhash", tip - 3))
    funded.mine(6)

    with pytest.raises(SecurityError, match="reorg of 4 blocks") as caught:
        _sync_all(conn, funded, label, max_depth=3)
    assert caught.value.reason == "reorg_too_deep"
    assert _counts(conn, label) == before
    assert store.stored_hashes(conn, chain=label, start=0, stop=tip) == stored
    with conn.cursor() as cur:
        cur.execute("SELECT action, fork_height, depth, max_depth FROM btc_reorgs WHERE chain = %s", (label,))
        assert cur.fetchall() == [("refused", tip - 4, 4, 3)]
    conn.rollback()


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_deeper_than_the_window_reports_a_lower_bound(conn, funded: Devnet, label: str) -> None:
    _sync_all(conn, funded, label)
    tip = funded.height()
    funded.rpc("invalidateblock", funded.rpc("getblockhash", tip - 30))
    funded.mine(35)
    with pytest.raises(SecurityError, match="at least"):
        _sync_all(conn, funded, label, max_depth=2)


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_node_in_initial_block_download_below_the_stored_tip_is_transient(conn, devnet: Devnet, label: str) -> None:
    from tributary.bitcoin.hook import BitcoinCoreHook

    _sync_all(conn, devnet, label)
    behind = sync.NodeState("regtest", 50, "00" * 32, True)
    with pytest.raises(TransientError, match="initial block download"):
        sync.check_reorg(conn, BitcoinCoreHook(), chain=label, node=behind, max_depth=100, conn_id="x")


class _NodeAnswering:
    """The real hook, except for the hashes it reports (a node whose chain moves under the sync)."""

    def __init__(self, hashes: list[str], blocks_of: list[str] | None = None) -> None:
        from tributary.bitcoin.hook import BitcoinCoreHook

        self.real, self.hashes, self.blocks_of = BitcoinCoreHook(), hashes, blocks_of

    def get_block_hashes(self, start: int, stop: int) -> list[str]:
        return self.hashes

    def get_blocks_bytes(self, hashes: list[str], *, chunk_size: int) -> list[bytes]:
        return self.real.get_blocks_bytes(self.blocks_of or hashes, chunk_size=chunk_size)


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_chain_that_changes_during_a_range_is_transient_and_a_wrong_block_is_data(conn, devnet: Devnet,
                                                                                      label: str) -> None:
    first, third = devnet.rpc("getblockhash", 50), devnet.rpc("getblockhash", 52)
    with pytest.raises(TransientError, match="chain changed during the sync") as caught:
        sync.sync_range(conn, _NodeAnswering([first, third]), chain=label, network="regtest", start=50, stop=51)
    assert caught.value.reason == "reorg_during_sync"
    with pytest.raises(DataError, match=f"getblock {first} answered block {third}"):
        sync.sync_range(conn, _NodeAnswering([first], [third]), chain=label, network="regtest", start=50, stop=50)
    assert _counts(conn, label)["btc_blocks"] == 0  # checked before anything is loaded


@pytest.mark.postgres
def test_continuity_reports_gaps_and_broken_links_on_mainnet_blocks(conn, label: str) -> None:
    from tributary.bitcoin.parse import iter_block_file, parse_blocks

    path = SHARED / "data" / "bitcoin" / "btcd_blocks1-256"
    if not path.exists():
        pytest.skip("mainnet sample blocks not present")
    store.load_blocks(conn, list(parse_blocks(iter_block_file(path), first_height=1)), chain=label)
    assert sync.check_continuity(conn, chain=label, start=1, stop=255).ok
    assert sync.contiguous_tip(conn, chain=label, after=-1) is None  # genesis is not in the file
    assert sync.contiguous_tip(conn, chain=label, after=0)[0] == 255
    with conn.cursor() as cur:
        cur.execute("DELETE FROM btc_blocks WHERE chain = %s AND height = 100", (label,))
        cur.execute("UPDATE btc_blocks SET prev_hash = repeat('0', 64) WHERE chain = %s AND height = 200", (label,))
    conn.commit()
    report = sync.continuity(conn, chain=label, start=1, stop=255)
    assert (report.missing, report.missing_count, report.broken_links) == ([100], 1, [200])
    with pytest.raises(DataError, match="1 missing"):
        sync.check_continuity(conn, chain=label, start=1, stop=255)
    assert sync.contiguous_tip(conn, chain=label, after=0)[0] == 99


# --------------------------------------------------------------------------- the DAG end to end
@pytest.mark.postgres
@pytest.mark.devnet
def test_sync_from_scratch_then_incremental_matches_the_node(dag_folder, conn, funded: Devnet, label: str) -> None:
    dag = _dag(dag_folder)
    run = dag.test(run_conf={"chain_label": label, "batch_size": 8})
    assert run.state == "success", _states(run)
    tip = funded.height()
    assert _counts(conn, label)["btc_blocks"] == tip + 1
    _assert_matches_node(conn, funded, label, range(0, tip + 1))
    assert store.get_checkpoint(conn, chain=label, conn_id="tributary_bitcoin") == (tip, funded.rpc("getbestblockhash"))

    funded.send(5)
    funded.mine(3)
    again = dag.test(run_conf={"chain_label": label})
    assert again.state == "success", _states(again)
    plan = again.get_task_instance("plan_ranges").xcom_pull(task_ids="plan_ranges", key="plan")
    assert (plan["start"], plan["stop"], plan["blocks"]) == (tip + 1, tip + 3, 3)
    _assert_matches_node(conn, funded, label, range(tip - 2, tip + 4))
    assert _counts(conn, label)["btc_blocks"] == tip + 4

    before = _counts(conn, label)
    idle = dag.test(run_conf={"chain_label": label})
    assert idle.state == "success"
    assert _states(idle)[("publish", -1)] == "skipped"  # no new blocks: no Asset event
    again_range = dag.test(run_conf={"chain_label": label, "start_height": 100, "end_height": tip + 3})
    assert again_range.state == "success"
    assert _counts(conn, label) == before  # re-syncing stored heights duplicates nothing

    events = _asset_events(label)
    assert [(e["from_height"], e["to_height"], e["blocks"]) for e in events] == [
        (0, tip, tip + 1), (tip + 1, tip + 3, 3), (100, tip + 3, tip - 96)]
    assert events[1]["tip_hash"] == funded.rpc("getbestblockhash") and events[1]["reorg"] is None


def _asset_events(chain: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                               .where(AssetModel.name == "btc_blocks").order_by(AssetEvent.id)).all()
        return [dict(e.extra) for e in rows if (e.extra or {}).get("chain") == chain]


@pytest.mark.postgres
@pytest.mark.devnet
def test_sync_rolls_back_orphaned_blocks_after_reorg(dag_folder, conn, funded: Devnet, label: str) -> None:
    dag = _dag(dag_folder)
    funded.send(3)
    funded.mine(3)
    assert dag.test(run_conf={"chain_label": label}).state == "success"
    tip = funded.height()
    orphans = [funded.rpc("getblockhash", h) for h in range(tip - 2, tip + 1)]
    orphan_txids = {tx for h in orphans for tx in funded.rpc("getblock", h, 1)["tx"][1:]}
    assert orphan_txids

    funded.rpc("invalidateblock", orphans[0])  # its transactions return to the mempool
    different = funded.send(1, "0.3")[0]
    funded.mine(4)  # a longer branch holding the old transactions and a different one
    assert funded.height() == tip + 1

    run = dag.test(run_conf={"chain_label": label})
    assert run.state == "success", _states(run)
    with conn.cursor() as cur:
        cur.execute("SELECT action, fork_height, depth, old_tip, new_tip, old_tip_height, new_tip_height, removed"
                    " FROM btc_reorgs WHERE chain = %s", (label,))
        action, fork, depth, old_tip, new_tip, old_height, new_height, removed = cur.fetchone()
        for table in ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs"):
            column = "hash" if table == "btc_blocks" else "block_hash"
            cur.execute(f"SELECT count(*) FROM {table} WHERE chain = %s AND {column} = ANY(%s)", (label, orphans))
            assert cur.fetchone()[0] == 0, table
        cur.execute("SELECT b.height FROM btc_transactions t JOIN btc_blocks b ON b.chain = t.chain"
                    " AND b.hash = t.block_hash WHERE t.chain = %s AND t.txid = %s", (label, different))
        assert cur.fetchone()[0] > tip - 3
        cur.execute("SELECT count(DISTINCT txid) FROM btc_transactions WHERE chain = %s AND txid = ANY(%s)",
                    (label, list(orphan_txids)))
        assert cur.fetchone()[0] == len(orphan_txids)  # re-mined on the new branch
    conn.rollback()
    assert (action, fork, depth, old_tip, old_height) == ("rolled_back", tip - 3, 3, orphans[-1], tip)
    assert (new_tip, new_height) == (funded.rpc("getbestblockhash"), tip + 1)
    assert removed["blocks"] == 3 and removed["transactions"] >= 3 + len(orphan_txids)
    _assert_matches_node(conn, funded, label, range(tip - 5, tip + 2))
    assert store.get_checkpoint(conn, chain=label, conn_id="tributary_bitcoin")[0] == tip + 1
    event = _asset_events(label)[-1]
    assert (event["from_height"], event["to_height"]) == (tip - 2, tip + 1)
    assert event["reorg"] == {"fork_height": tip - 3, "depth": 3, "old_tip": orphans[-1], "new_tip": new_tip}


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_too_deep_reorg_fails_the_run_with_a_security_alert(dag_folder, conn, funded: Devnet, label: str) -> None:
    dag = _dag(dag_folder)
    assert dag.test(run_conf={"chain_label": label}).state == "success"
    before = _counts(conn, label)
    tip = funded.height()
    funded.rpc("invalidateblock", funded.rpc("getblockhash", tip - 4))
    funded.mine(8)

    run = dag.test(run_conf={"chain_label": label, "max_reorg_depth": 2})
    assert run.state == "failed"
    check = run.get_task_instance("check_reorg")
    assert (str(check.state), check.try_number) == ("failed", 1)  # security: no retry
    assert _counts(conn, label) == before
    assert ("failure", "security", "check_reorg") in _error_events(conn, run.run_id)


@pytest.mark.postgres
@pytest.mark.devnet
def test_backfill_runs_one_mapped_task_per_range(dag_folder, conn, funded: Devnet, label: str) -> None:
    tip = funded.height()
    run = _dag(dag_folder).test(run_conf={"chain_label": label, "start_height": 0, "end_height": tip,
                                          "range_size": 30, "batch_size": 7})
    assert run.state == "success", _states(run)
    states = _states(run)
    mapped = sorted(index for task, index in states if task == "sync_range")
    assert mapped == list(range(len(sync.split_ranges(0, tip, 30))))
    assert {states[("sync_range", i)] for i in mapped} == {"success"}
    labels = sorted(ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "sync_range")
    assert "0..29" in labels
    _assert_matches_node(conn, funded, label, range(0, tip + 1))
    assert sync.continuity(conn, chain=label, start=0, stop=tip).ok


@pytest.mark.postgres
@pytest.mark.devnet
def test_bad_conf_fails_fast_with_a_clear_error(dag_folder, conn, devnet: Devnet, label: str) -> None:
    run = _dag(dag_folder).test(run_conf={"chain_label": label, "start_height": 50, "end_height": 10})
    assert run.state == "failed"
    check = run.get_task_instance("check_reorg")
    assert (str(check.state), check.try_number) == ("failed", 1)
    assert ("failure", "permanent", "check_reorg") in _error_events(conn, run.run_id)
    assert _counts(conn, label)["btc_blocks"] == 0


@pytest.mark.postgres
def test_an_unreachable_node_is_retried_then_fails_as_transient(dag_folder, conn, label: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from devnets.bitcoin.process import free_port

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
        "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": free_port(), "login": "u", "password": "p",
        "extra": {"timeout": 2}}))
    dag = _dag(dag_folder)
    for task in dag.tasks:  # keep the backoff of the test short; the number of retries stays the DAG's
        task.retry_delay = timedelta(milliseconds=100)
        task.max_retry_delay = timedelta(milliseconds=200)
    run = dag.test(run_conf={"chain_label": label})
    assert run.state == "failed"
    check = run.get_task_instance("check_reorg")
    assert str(check.state) == "failed" and check.try_number == check.max_tries + 1 == 4
    events = _error_events(conn, run.run_id)
    assert [kind for kind, _, _ in events] == ["retry", "retry", "retry", "failure"]
    assert {cls for _, cls, _ in events} == {"transient"}


# --------------------------------------------------------------------------- longer chains, reorgs, a dying node
def _node_counts(net: Devnet, start: int, stop: int) -> dict[str, int]:
    """Rows the node's blocks ``start..stop`` make in each table (getblock verbosity 2)."""
    counts = {"btc_blocks": 0, "btc_transactions": 0, "btc_inputs": 0, "btc_outputs": 0}
    for height in range(start, stop + 1):
        block = net.rpc("getblock", net.rpc("getblockhash", height), 2)
        counts["btc_blocks"] += 1
        counts["btc_transactions"] += len(block["tx"])
        counts["btc_inputs"] += sum(len(tx["vin"]) for tx in block["tx"])
        counts["btc_outputs"] += sum(len(tx["vout"]) for tx in block["tx"])
    return counts


def _rows_off_the_chain(conn: Any, chain: str, hashes: list[str]) -> dict[str, int]:
    """Per table, the stored rows whose block is not one of ``hashes`` (the node's active chain)."""
    found = {}
    with conn.cursor() as cur:
        for table in ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs"):
            column = "hash" if table == "btc_blocks" else "block_hash"
            cur.execute(f"SELECT count(*) FROM {table} WHERE chain = %s AND NOT ({column} = ANY(%s))", (chain, hashes))
            found[table] = int(cur.fetchone()[0])
    conn.rollback()
    return found


def _duplicate_keys(conn: Any, chain: str) -> dict[str, int]:
    """Per table, rows minus distinct primary keys (0: no key is stored twice)."""
    keys = {"btc_blocks": "hash", "btc_transactions": "block_hash, txid", "btc_inputs": "block_hash, txid, idx",
            "btc_outputs": "block_hash, txid, idx"}
    found = {}
    with conn.cursor() as cur:
        for table, key in keys.items():
            cur.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table} WHERE chain = %s", (chain,))
            found[table] = int(cur.fetchone()[0])
    conn.rollback()
    return found


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_chain_of_500_blocks_with_transactions_syncs_end_to_end(dag_folder, conn, devnet: Devnet,
                                                                    label: str) -> None:
    for _ in range(20):  # 101 + 20 x 21 = 521 blocks, a few wallet payments every 21 blocks
        devnet.send(3)
        devnet.mine(21)
    tip = devnet.height()
    assert tip >= 500

    run = _dag(dag_folder).test(run_conf={"chain_label": label, "range_size": 200, "batch_size": 25})
    assert run.state == "success", _states(run)
    assert sorted(i for task, i in _states(run) if task == "sync_range") == [0, 1, 2]
    assert _counts(conn, label) == _node_counts(devnet, 0, tip)
    _assert_matches_node(conn, devnet, label, range(0, tip + 1))
    assert sync.check_continuity(conn, chain=label, start=0, stop=tip).ok
    assert store.get_checkpoint(conn, chain=label, conn_id="tributary_bitcoin") == (tip, devnet.rpc("getbestblockhash"))


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_of_depth_3_rolls_back_exactly_3_heights_and_resyncs_them(conn, funded: Devnet, label: str) -> None:
    funded.send(2)
    funded.mine(3)
    _sync_all(conn, funded, label)
    tip = funded.height()
    before = _counts(conn, label)
    orphans = [funded.rpc("getblockhash", h) for h in range(tip - 2, tip + 1)]
    orphaned_rows = {table: n for table, n in _node_counts(funded, tip - 2, tip).items()}

    funded.rpc("invalidateblock", orphans[0])  # heights tip-2 .. tip leave the active chain
    assert funded.height() == tip - 3
    different = funded.send(1, "0.25")[0]  # a transaction no orphaned block holds
    funded.mine(4)
    new_tip = funded.height()
    assert new_tip == tip + 1

    plan, reorg = _sync_all(conn, funded, label)
    assert (reorg.fork_height, reorg.depth, reorg.exact) == (tip - 3, 3, True)
    assert reorg.removed == {"blocks": 3, "transactions": orphaned_rows["btc_transactions"],
                             "inputs": orphaned_rows["btc_inputs"], "outputs": orphaned_rows["btc_outputs"]}
    assert (plan.start, plan.stop) == (tip - 2, new_tip)  # exactly the rolled-back heights, then the new ones
    node_hashes = [funded.rpc("getblockhash", h) for h in range(new_tip + 1)]
    assert store.stored_hashes(conn, chain=label, start=0, stop=new_tip) == dict(enumerate(node_hashes))
    assert _rows_off_the_chain(conn, label, node_hashes) == {"btc_blocks": 0, "btc_transactions": 0,
                                                             "btc_inputs": 0, "btc_outputs": 0}
    assert _counts(conn, label) == _node_counts(funded, 0, new_tip)
    assert _counts(conn, label)["btc_blocks"] == before["btc_blocks"] + 1
    _assert_matches_node(conn, funded, label, range(tip - 4, new_tip + 1))
    with conn.cursor() as cur:
        cur.execute("SELECT action, fork_height, depth, exact, old_tip, old_tip_height, new_tip_height"
                    " FROM btc_reorgs WHERE chain = %s", (label,))
        assert cur.fetchall() == [("rolled_back", tip - 3, 3, True, orphans[-1], tip, new_tip)]
        cur.execute("SELECT count(*) FROM btc_transactions WHERE chain = %s AND txid = %s", (label, different))
        assert cur.fetchone()[0] == 1
    conn.rollback()
    assert sync.check_continuity(conn, chain=label, start=0, stop=new_tip).ok


def _kill_when_stored(handle: Any, chain: str, blocks: int, done: threading.Event) -> threading.Thread:
    """A thread that SIGKILLs the devnet as soon as ``blocks`` blocks of ``chain`` are committed."""
    from tributary.storage.warehouse import WarehouseHook

    def watch() -> None:
        with WarehouseHook().get_conn() as watcher:
            watcher.autocommit = True
            while not done.is_set() and handle.process.poll() is None:
                with watcher.cursor() as cur:
                    cur.execute("SELECT count(*) FROM btc_blocks WHERE chain = %s", (chain,))
                    if cur.fetchone()[0] >= blocks:
                        handle.process.send_signal(signal.SIGKILL)
                        handle.process.wait()
                        return
                time.sleep(0.005)

    thread = threading.Thread(target=watch, name="kill-devnet", daemon=True)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_node_killed_mid_sync_fails_transient_then_a_rerun_completes_without_duplicates(
        dag_folder, conn, devnet: Devnet, label: str) -> None:
    from devnets.bitcoin.process import start_devnet

    for _ in range(5):
        devnet.send(3)
        devnet.mine(40)
    tip, best = devnet.height(), devnet.rpc("getbestblockhash")
    expected = _node_counts(devnet, 0, tip)
    dag = _dag(dag_folder)
    for task in dag.tasks:  # a short backoff; the number of retries stays the DAG's
        task.retry_delay = timedelta(milliseconds=100)
        task.max_retry_delay = timedelta(milliseconds=200)

    done = threading.Event()
    killer = _kill_when_stored(devnet.handle, label, 40, done)
    try:
        run = dag.test(run_conf={"chain_label": label, "batch_size": 5, "rpc_batch_size": 5})
    finally:
        done.set()
        killer.join(10)
    assert devnet.handle.process.returncode == -signal.SIGKILL, "the sync finished before the node was killed"
    assert run.state == "failed"
    ranges = run.get_task_instance("sync_range", map_index=0)
    assert str(ranges.state) == "failed" and ranges.try_number == ranges.max_tries + 1 == 4
    events = [(kind, cls) for kind, cls, task in _error_events(conn, run.run_id) if task == "sync_range"]
    assert events == [("retry", "transient")] * 3 + [("failure", "transient")]
    stored = _counts(conn, label)["btc_blocks"]
    assert 40 <= stored < tip + 1  # committed batches stay; the rest was never loaded

    restarted = start_devnet(devnet.handle.datadir, port=devnet.handle.port)
    try:
        from tributary.bitcoin.hook import BitcoinCoreHook

        node = BitcoinCoreHook(wallet="")
        assert (node.call("getblockcount"), node.call("getbestblockhash")) == (tip, best)
        again = dag.test(run_conf={"chain_label": label, "batch_size": 5, "rpc_batch_size": 5})
        assert again.state == "success", _states(again)
        plan = again.get_task_instance("plan_ranges").xcom_pull(task_ids="plan_ranges", key="plan")
        assert plan["start"] <= stored and plan["stop"] == tip
        assert _counts(conn, label) == expected
        assert _duplicate_keys(conn, label) == {"btc_blocks": 0, "btc_transactions": 0, "btc_inputs": 0,
                                                "btc_outputs": 0}
        devnet.node = node
        _assert_matches_node(conn, devnet, label, range(0, tip + 1))
        assert store.get_checkpoint(conn, chain=label, conn_id="tributary_bitcoin") == (tip, best)
    finally:
        restarted.stop()
