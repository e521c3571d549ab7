"""bitcoin_block_watch: NewTipTrigger (bitcoin/triggers.py), WaitForNewTipOperator (bitcoin/operators.py) and
btc_block_stats (bitcoin/block_stats.py) against the regtest devnet and a real PostgreSQL warehouse."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tributary.bitcoin import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "bitcoin_block_watch"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def label() -> str:
    """A chain label of its own, so tests sharing the session devnet and warehouse do not see each other's rows."""
    return f"regtest-watch-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def private_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A devnet of this test only (for reorgs), as the tributary_bitcoin Connection."""
    from devnets.bitcoin.process import start_devnet

    with start_devnet(tmp_path / "node") as handle:
        monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
            "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": handle.port,
            "extra": {"cookie_file": str(handle.cookie_path), "network": "regtest"}}))
        yield handle


def _hook(wallet: str | None = None) -> Any:
    from tributary.bitcoin.hook import BitcoinCoreHook

    return BitcoinCoreHook(wallet=wallet)


def _mine_later(regtest: Any, delay: float, blocks: int = 1) -> tuple[threading.Thread, list[str]]:
    mined: list[str] = []

    def work() -> None:
        time.sleep(delay)
        mined.extend(regtest.mine(blocks))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, mined


def _stats_rows(pg: Any, chain: str) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute("SELECT height, hash, in_active_chain, tx_count, total_fee, size, weight FROM btc_block_stats"
                    " WHERE chain = %s ORDER BY height, hash", (chain,))
        rows = cur.fetchall()
    pg.rollback()
    return rows


# --------------------------------------------------------------------------- trigger
@pytest.mark.unit
def test_trigger_round_trips_through_serialize() -> None:
    from airflow.sdk._shared.module_loading import import_string

    from tributary.bitcoin.triggers import NewTipTrigger

    trigger = NewTipTrigger("ab" * 32, conn_id="node_a", poll_interval=2.5, deadline=1_900_000_000.0)
    classpath, kwargs = trigger.serialize()
    again = import_string(classpath)(**kwargs)
    assert classpath == "tributary.bitcoin.triggers.NewTipTrigger"
    assert again.serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs


@pytest.mark.unit
def test_trigger_survives_the_triggerer_table_encryption() -> None:
    from airflow.models.trigger import Trigger

    from tributary.bitcoin.triggers import NewTipTrigger

    trigger = NewTipTrigger(None, poll_interval=1, deadline=1_900_000_000.5)
    row = Trigger.from_object(trigger)
    assert row.classpath == "tributary.bitcoin.triggers.NewTipTrigger"
    assert row.kwargs == trigger.serialize()[1]


@pytest.mark.devnet
def test_trigger_fires_when_a_block_is_mined(regtest: Any) -> None:
    from tributary.bitcoin.triggers import NewTipTrigger

    before = _hook().get_best_block_hash()
    height = _hook().get_block_count()
    trigger = NewTipTrigger(before, poll_interval=0.2, deadline=time.time() + 60)
    thread, mined = _mine_later(regtest, 1.0)

    started = time.monotonic()
    event = asyncio.run(anext(trigger.run()))
    thread.join()

    assert event.payload["status"] == "new_tip"
    assert event.payload["hash"] == mined[0]
    assert event.payload["height"] == height + 1
    assert event.payload["previous"] == before
    assert time.monotonic() - started >= 0.9  # it waited for the block, it did not fire on the old tip


@pytest.mark.devnet
def test_trigger_times_out_when_no_block_comes(regtest: Any) -> None:
    from tributary.bitcoin.triggers import NewTipTrigger

    trigger = NewTipTrigger(_hook().get_best_block_hash(), poll_interval=0.2, deadline=time.time() + 0.7)
    event = asyncio.run(anext(trigger.run()))
    assert event.payload == {"status": "timeout", "previous": trigger.last_tip}


@pytest.mark.devnet
def test_trigger_retries_transient_errors_and_then_fires(regtest: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.bitcoin.triggers import NewTipTrigger
    from tributary.core.errors import TransientError

    trigger = NewTipTrigger("00" * 32, poll_interval=0.05, deadline=time.time() + 30)
    real = trigger.poll
    calls = {"n": 0}

    def flaky(hook: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise TransientError("node warming up", system=SYSTEM, reason="jsonrpc:-28")
        return real(hook)

    monkeypatch.setattr(trigger, "poll", flaky)
    event = asyncio.run(anext(trigger.run()))
    assert calls["n"] == 3
    assert event.payload["status"] == "new_tip"
    assert event.payload["hash"] == _hook().get_best_block_hash()


@pytest.mark.unit
def test_trigger_keeps_polling_an_unreachable_node_until_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from devnets.bitcoin.process import free_port
    from tributary.bitcoin.triggers import NewTipTrigger

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
        "conn_type": "tributary_bitcoin", "host": "127.0.0.1", "port": free_port(), "login": "u", "password": "p",
        "extra": {"timeout": 1}}))
    trigger = NewTipTrigger("00" * 32, poll_interval=0.1, deadline=time.time() + 1.5)
    event = asyncio.run(anext(trigger.run()))
    assert event.payload["status"] == "timeout"  # connection refused is transient: not fatal to the wait


@pytest.mark.devnet
def test_trigger_reports_a_permanent_error_at_once(regtest: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.bitcoin.triggers import NewTipTrigger
    from tributary.core.errors import PermanentError
    from tributary.core.triggers import error_from_event

    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
        **regtest.conn, "login": "mallory", "password": "wrong"}))
    trigger = NewTipTrigger("00" * 32, poll_interval=0.1, deadline=time.time() + 30)
    started = time.monotonic()
    event = asyncio.run(anext(trigger.run()))
    assert time.monotonic() - started < 10
    assert event.payload["status"] == "error"
    assert event.payload["error_class"] == "permanent"
    assert "wrong" not in event.payload["message"]
    assert isinstance(error_from_event(event.payload, SYSTEM), PermanentError)


# --------------------------------------------------------------------------- block statistics
@pytest.mark.postgres
@pytest.mark.devnet
def test_block_stats_match_the_nodes_getblock_verbosity_2(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.block_stats import sync_block_stats

    for amount in ("0.1", "0.2", "0.3"):
        regtest.rpc("sendtoaddress", regtest.rpc("getnewaddress"), Decimal(amount))
    block_hash = regtest.mine(1)[0]
    block = _hook().call("getblock", block_hash, 2, wallet="")
    assert block["nTx"] >= 4

    report = sync_block_stats(_hook(), pg, chain=label, max_blocks=2)

    assert report.tip_hash == block_hash and report.computed == [block["height"] - 1, block["height"]]
    with pg.cursor() as cur:
        cur.execute("SELECT tx_count, total_fee, size, weight, stripped_size, height, prev_hash, input_count,"
                    " feerate_p10, feerate_p50, feerate_p90, min_feerate, max_feerate, in_active_chain"
                    " FROM btc_block_stats WHERE chain = %s AND hash = %s", (label, block_hash))
        row = cur.fetchone()
    expected_fee = sum(int(Decimal(str(tx["fee"])) * 100_000_000) for tx in block["tx"][1:])
    assert row[:7] == (block["nTx"], expected_fee, block["size"], block["weight"], block["strippedsize"],
                       block["height"], block["previousblockhash"])
    assert row[7] == sum(len(tx["vin"]) for tx in block["tx"][1:])
    rates = sorted(Decimal(str(tx["fee"])) * 100_000_000 * 4 / tx["weight"] for tx in block["tx"][1:])
    assert row[11] == pytest.approx(rates[0], abs=Decimal("0.001"))
    assert row[12] == pytest.approx(rates[-1], abs=Decimal("0.001"))
    assert row[11] <= row[8] <= row[9] <= row[10] <= row[12]
    assert row[13] is True


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_rerun_does_not_duplicate_stats(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.block_stats import sync_block_stats

    regtest.mine(1)
    sync_block_stats(_hook(), pg, chain=label, max_blocks=3)
    first = _stats_rows(pg, label)
    again = sync_block_stats(_hook(), pg, chain=label, max_blocks=3)
    assert again.computed == [] and again.orphaned == []
    assert _stats_rows(pg, label) == first and len(first) == 3


@pytest.mark.postgres
@pytest.mark.devnet
def test_stats_fill_every_block_since_the_last_seen_tip(regtest: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.block_stats import sync_block_stats

    sync_block_stats(_hook(), pg, chain=label, max_blocks=1)
    mined = regtest.mine(3)
    report = sync_block_stats(_hook(), pg, chain=label, max_blocks=144)
    assert len(report.computed) == 3
    assert [r[1] for r in _stats_rows(pg, label)][-3:] == mined


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_marks_the_orphaned_blocks_and_stores_the_new_branch(private_node: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.block_stats import sync_block_stats

    node = _hook()
    node.call("createwallet", "w")
    address = _hook("w").call("getnewaddress")
    node.call("generatetoaddress", 6, address)
    sync_block_stats(node, pg, chain=label, max_blocks=10)
    old = {r[0]: r[1] for r in _stats_rows(pg, label)}
    fork_height = max(old) - 2  # orphan the top two blocks

    node.call("invalidateblock", old[fork_height + 1])
    other = _hook("w").call("getnewaddress")
    new_branch = node.call("generatetoaddress", 3, other)
    report = sync_block_stats(node, pg, chain=label, max_blocks=10)

    assert report.fork_height == fork_height
    assert report.orphaned == [old[fork_height + 1], old[fork_height + 2]]
    assert report.computed == [fork_height + 1, fork_height + 2, fork_height + 3]
    rows = _stats_rows(pg, label)
    active = [(h, x) for h, x, a, *_ in rows if a]
    assert [x for _, x in active][-3:] == new_branch
    assert {x for _, x, a, *_ in rows if not a} == {old[fork_height + 1], old[fork_height + 2]}

    # The old branch wins again: its blocks become active again, the other branch's are marked.
    node.call("reconsiderblock", old[fork_height + 1])
    node.call("invalidateblock", new_branch[0])
    node.call("generatetoaddress", 2, address)
    report = sync_block_stats(node, pg, chain=label, max_blocks=10)
    assert report.orphaned == new_branch
    rows = _stats_rows(pg, label)
    assert {x for _, x, a, *_ in rows if not a} == set(new_branch)
    assert [h for h, _, a, *_ in rows if a] == list(range(max(old) + 3))


@pytest.mark.postgres
@pytest.mark.devnet
def test_a_reorg_deeper_than_allowed_is_a_security_error(private_node: Any, pg: Any, label: str) -> None:
    from tributary.bitcoin.block_stats import sync_block_stats
    from tributary.core.errors import SecurityError

    node = _hook()
    node.call("createwallet", "w")
    address = _hook("w").call("getnewaddress")
    node.call("generatetoaddress", 5, address)
    sync_block_stats(node, pg, chain=label, max_blocks=10)
    node.call("invalidateblock", node.get_block_hash(1))
    node.call("generatetoaddress", 6, _hook("w").call("getnewaddress"))
    with pytest.raises(SecurityError, match="reorg deeper than 2"):
        sync_block_stats(node, pg, chain=label, max_blocks=10, max_reorg_depth=2)


# --------------------------------------------------------------------------- the DAG
def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "bitcoin" / f"{DAG_ID}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(DAG_ID)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.mark.postgres
@pytest.mark.devnet
def test_dag_run_defers_until_a_block_is_mined_then_stores_its_stats(regtest: Any, pg: Any, project_dags: Path,
                                                                   label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dag()
    conf = {"chain_label": label, "poll_interval": 0.2, "wait_timeout": 120, "max_blocks": 5}
    first = dag.test(run_conf=conf)  # nothing seen yet under this label: no wait, stats of the newest blocks
    assert first.state == "success" and _states(first) == {"wait_for_new_tip": "success",
                                                           "compute_block_stats": "success"}
    seen = _stats_rows(pg, label)
    assert seen and seen[-1][1] == _hook().get_best_block_hash()

    # Mine only once the run has deferred and the trigger polls (the trigger runs in this process).
    from tributary.bitcoin.triggers import NewTipTrigger

    polling, real_poll = threading.Event(), NewTipTrigger.poll

    def spy(self: Any, hook: Any) -> Any:
        polling.set()
        return real_poll(self, hook)

    monkeypatch.setattr(NewTipTrigger, "poll", spy)
    mined: list[str] = []

    def mine_when_polling() -> None:
        if polling.wait(120):
            time.sleep(0.5)
            mined.extend(regtest.mine(1))

    thread = threading.Thread(target=mine_when_polling, daemon=True)
    thread.start()
    run = dag.test(run_conf=conf)
    thread.join()

    assert run.state == "success", _states(run)
    tip = run.get_task_instance("wait_for_new_tip").xcom_pull(task_ids="wait_for_new_tip")
    assert tip["hash"] == mined[0] and tip["waited"] is True and tip["previous"] == seen[-1][1]
    rows = _stats_rows(pg, label)
    assert rows[-1][1] == mined[0] and rows[-1][2] is True
    assert len(rows) == len(seen) + 1


@pytest.mark.postgres
@pytest.mark.devnet
def test_dag_run_without_a_new_block_skips_after_the_wait_timeout(regtest: Any, pg: Any, project_dags: Path,
                                                                 label: str) -> None:
    dag = _dag()
    tip = _hook().get_best_block_hash()
    run = dag.test(run_conf={"chain_label": label, "last_tip": tip, "poll_interval": 0.2, "wait_timeout": 1})
    assert run.state == "success"
    assert _states(run) == {"wait_for_new_tip": "skipped", "compute_block_stats": "skipped"}
    assert _stats_rows(pg, label) == []


@pytest.mark.postgres
@pytest.mark.devnet
def test_dag_run_with_bad_credentials_fails_without_retrying(regtest: Any, pg: Any, project_dags: Path, label: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_BITCOIN", json.dumps({
        **regtest.conn, "login": "mallory", "password": "wrong"}))
    run = _dag().test(run_conf={"chain_label": label, "poll_interval": 0.2, "wait_timeout": 5})
    assert run.state == "failed"
    wait = run.get_task_instance("wait_for_new_tip")
    assert (str(wait.state), wait.try_number) == ("failed", 1)  # permanent: no retry
    assert str(run.get_task_instance("compute_block_stats").state) == "upstream_failed"
