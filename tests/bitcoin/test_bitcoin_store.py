"""Loading parsed blocks into the real PostgreSQL warehouse: idempotent upserts, reorg rollback."""

from __future__ import annotations

import uuid

import pytest

from tests._shared import SHARED
from tributary.bitcoin import store
from tributary.bitcoin.parse import iter_block_file, parse_block, parse_blocks, read_block
from tributary.core.errors import DataError

pytestmark = pytest.mark.postgres

DATA = SHARED / "data" / "bitcoin"


def _chain() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _table_counts(conn, chain: str) -> dict[str, int]:
    with conn.cursor() as cur:
        counts = {}
        for table in ("btc_blocks", "btc_transactions", "btc_inputs", "btc_outputs"):
            cur.execute(f"SELECT count(*) FROM {table} WHERE chain = %s", (chain,))
            counts[table.removeprefix("btc_")] = cur.fetchone()[0]
    conn.rollback()
    return counts


def _rows(blocks) -> dict[str, int]:
    return {"blocks": len(blocks), "transactions": sum(len(b.transactions) for b in blocks),
            "inputs": sum(len(b.inputs) for b in blocks), "outputs": sum(len(b.outputs) for b in blocks)}


@pytest.fixture(scope="module")
def first_blocks():
    return list(parse_blocks(iter_block_file(DATA / "btcd_blocks1-256"), first_height=1))


def test_loading_the_same_blocks_twice_gives_the_same_rows(pg, first_blocks) -> None:
    chain = _chain()
    written = store.load_blocks(pg, first_blocks, chain=chain)
    expected = _rows(first_blocks)
    assert expected["blocks"] == 255
    assert written.as_dict() == expected
    assert _table_counts(pg, chain) == expected
    again = store.load_blocks(pg, first_blocks + first_blocks[:3], chain=chain)
    assert again.as_dict() == {"blocks": 0, "transactions": 0, "inputs": 0, "outputs": 0}
    assert _table_counts(pg, chain) == expected
    assert store.stored_tip(pg, chain=chain) == (255, first_blocks[-1].hash)


def test_a_big_block_loads_through_a_psycopg3_connection(warehouse, pg) -> None:
    from tributary.storage.warehouse import WarehouseHook

    chain = _chain()
    block = parse_block(read_block(DATA / "block413567.raw"), height=413567)
    conn = WarehouseHook().get_conn()
    try:
        assert type(conn).__module__.startswith("psycopg")
        written = store.load_blocks(conn, [block], chain=chain, checkpoint_conn_id="node-a")
        assert (written.transactions, written.inputs, written.outputs) == (1557, 4887, 3581)
        with conn.cursor() as cur:
            cur.execute("SELECT height, tx_count, extract(epoch FROM time)::bigint, weight FROM btc_blocks"
                        " WHERE chain = %s", (chain,))
            assert cur.fetchone() == (413567, 1557, block.block.time, block.block.weight)
            cur.execute("SELECT script_type, count(*) FROM btc_outputs WHERE chain = %s GROUP BY 1 ORDER BY 1",
                        (chain,))
            assert dict(cur.fetchall()) == {"nulldata": 3, "p2pkh": 2841, "p2sh": 737}
            cur.execute("SELECT sum(output_value) FROM btc_transactions WHERE chain = %s", (chain,))
            assert cur.fetchone()[0] == sum(o.value for o in block.outputs)
        conn.rollback()
        assert store.get_checkpoint(conn, chain=chain, conn_id="node-a") == (413567, block.hash)
    finally:
        conn.close()


def test_fees_filled_in_by_a_later_load_with_known_prevouts(pg) -> None:
    chain = _chain()
    raw = list(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
    store.load_blocks(pg, [parse_block(b, height=h) for h, b in enumerate(raw[:2])], chain=chain)
    lonely = parse_block(raw[2], height=2)
    assert lonely.transactions[1].fee is None
    store.load_blocks(pg, [lonely], chain=chain)
    priced = parse_block(raw[2], height=2, lookup=store.stored_prevouts(pg, chain=chain))
    assert priced.transactions[1].fee == 0
    written = store.load_blocks(pg, [priced], chain=chain)
    assert (written.blocks, written.transactions, written.inputs, written.outputs) == (0, 1, 1, 0)
    with pg.cursor() as cur:
        cur.execute("SELECT fee FROM btc_transactions WHERE chain = %s AND NOT is_coinbase", (chain,))
        assert cur.fetchall() == [(0,)]
    pg.rollback()


def test_delete_from_height_removes_orphans_with_everything_derived(pg) -> None:
    chain = _chain()
    blocks = list(parse_blocks(iter_block_file(DATA / "btcd_blk_0_to_4.dat"), first_height=0))
    store.load_blocks(pg, blocks, chain=chain, checkpoint_conn_id="node-a")
    assert store.get_checkpoint(pg, chain=chain, conn_id="node-a") == (4, blocks[4].hash)
    removed = store.delete_from_height(pg, 3, chain=chain)
    assert removed.as_dict() == _rows(blocks[3:]) == {"blocks": 2, "transactions": 5, "inputs": 5, "outputs": 5}
    assert _table_counts(pg, chain) == _rows(blocks[:3])
    assert store.get_checkpoint(pg, chain=chain, conn_id="node-a") == (2, blocks[2].hash)
    assert store.stored_hashes(pg, chain=chain, start=0, stop=10) == {h: b.hash for h, b in enumerate(blocks[:3])}
    # the rolled-back branch can be loaded again (or a new one in its place)
    assert store.load_blocks(pg, blocks[3:], chain=chain).blocks == 2


def test_a_different_block_at_a_stored_height_is_refused_until_rolled_back(pg) -> None:
    chain = _chain()
    raw = list(iter_block_file(DATA / "btcd_blk_0_to_4.dat"))
    store.load_blocks(pg, [parse_block(raw[0], height=0), parse_block(raw[1], height=1)], chain=chain)
    competitor = parse_block(raw[2], height=1)  # pretend a reorg replaced block 1
    with pytest.raises(DataError, match="height 1 already holds"):
        store.load_blocks(pg, [competitor], chain=chain)
    assert _table_counts(pg, chain)["blocks"] == 2
    store.delete_from_height(pg, 1, chain=chain)
    assert store.load_blocks(pg, [competitor], chain=chain).blocks == 1


def test_chains_are_stored_apart(pg, first_blocks) -> None:
    one, two = _chain(), _chain()
    store.load_blocks(pg, first_blocks[:5], chain=one)
    store.load_blocks(pg, first_blocks[:5], chain=two)
    store.delete_from_height(pg, 0, chain=one)
    assert _table_counts(pg, one)["blocks"] == 0 and _table_counts(pg, two)["blocks"] == 5


def test_loads_work_on_an_autocommit_connection_too(warehouse, pg) -> None:
    from tributary.storage.warehouse import WarehouseHook

    chain = _chain()
    blocks = list(parse_blocks(iter_block_file(DATA / "btcd_blk_0_to_4.dat"), first_height=0))
    conn = WarehouseHook().get_conn()
    try:
        conn.autocommit = True
        assert store.load_blocks(conn, blocks, chain=chain).as_dict() == _rows(blocks)
        assert store.delete_from_height(conn, 0, chain=chain).blocks == 5
    finally:
        conn.close()
    assert _table_counts(pg, chain)["blocks"] == 0
