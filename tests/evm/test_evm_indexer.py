"""Event indexing on anvil: logs land decoded in PostgreSQL, re-runs are idempotent, and a reorg
(anvil_reorg) that removes an indexed event is rolled back and re-indexed."""

from __future__ import annotations

import uuid

import pytest

from tests.evm.conftest import make_sender
from tributary.evm.contracts import encode_call, load_artifact
from tributary.evm.hook import EvmHook
from tributary.evm.indexer import IndexSpec, checkpoint, index_range
from tributary.evm.transactions import TxRequest

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]


def _record(sender, registry: str, value: str) -> dict:
    key = "0x" + uuid.uuid4().hex * 2
    entry = load_artifact("Registry").function("record", [key, value])
    row = sender.submit(TxRequest(idempotency_key=f"idx:{uuid.uuid4().hex}", kind="call", to=registry,
                                  data=encode_call(entry, [key, value], "record"), contract_name="Registry",
                                  function_name="record", args=[key, value]))
    return sender.wait(row)


def _logs(db, indexer: str) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT block_number, event_name, args->>'value', block_hash FROM evm_event_logs"
                    " WHERE indexer = %s ORDER BY block_number, log_index", (indexer,))
        rows = cur.fetchall()
    db.commit()
    return rows


def test_events_are_indexed_decoded_and_re_runs_are_idempotent(evm_env, registry, db) -> None:
    sender = make_sender()
    for value in ("alpha", "beta"):
        _record(sender, registry, value)
    spec = IndexSpec(indexer=f"t-{uuid.uuid4().hex[:6]}", chain_id=31337, addresses=[registry], chunk_size=3)
    result = index_range(db, EvmHook(), spec)
    rows = _logs(db, spec.indexer)
    assert [r[2] for r in rows if r[1] == "Recorded"][-2:] == ["alpha", "beta"]
    assert result.logs == len(rows) and result.chunks >= 1
    again = index_range(db, EvmHook(), spec)
    assert again.logs == 0 and _logs(db, spec.indexer) == rows
    assert checkpoint(db, spec.indexer, 31337)[0] == EvmHook().block_number()


def test_a_reorg_removes_the_orphaned_event_and_the_index_is_corrected(evm_env, registry, db, anvil) -> None:
    sender = make_sender()
    hook = EvmHook()
    spec = IndexSpec(indexer=f"reorg-{uuid.uuid4().hex[:6]}", chain_id=31337, addresses=[registry],
                     start_block=hook.block_number() + 1)
    kept = _record(sender, registry, "kept")
    orphan = _record(sender, registry, "orphaned")
    index_range(db, hook, spec)
    assert [r[2] for r in _logs(db, spec.indexer)] == ["kept", "orphaned"]
    # Replace the last block (holding "orphaned") with a block holding another record.
    entry = load_artifact("Registry").function("record", ["0x" + "ab" * 32, "replacement"])
    data = encode_call(entry, ["0x" + "ab" * 32, "replacement"], "record")
    anvil.rpc("anvil_reorg", [1, [[{"from": anvil.accounts[3].address, "to": registry, "data": data,
                                     "gas": hex(200_000)}, 0]]])
    assert hook.get_receipt(orphan["tx_hash"]) is None
    result = index_range(db, hook, spec)
    assert result.reorg is not None and result.reorg["logs_removed"] == 1
    assert result.reorg["fork_block"] == kept["block_number"]
    rows = _logs(db, spec.indexer)
    assert [r[2] for r in rows] == ["kept", "replacement"]
    assert rows[-1][3] == hook.block_hashes([rows[-1][0]])[rows[-1][0]]
    with db.cursor() as cur:
        cur.execute("SELECT fork_block, logs_removed FROM evm_index_reorgs WHERE indexer = %s", (spec.indexer,))
        assert cur.fetchall() == [(kept["block_number"], 1)]
    db.commit()
    # The orphaned transaction went back to pending: the same signed bytes are broadcast again.
    sender.ledger.mark_reorged(31337, orphan["idempotency_key"])
    again = sender.wait(sender.rebroadcast(sender.ledger.get(31337, orphan["idempotency_key"])))
    assert again["tx_hash"] == orphan["tx_hash"] and again["reorgs"] == 1 and again["broadcasts"] == 2
    assert again["block_number"] > orphan["block_number"]
    index_range(db, hook, spec)
    assert [r[2] for r in _logs(db, spec.indexer)] == ["kept", "replacement", "orphaned"]


def test_a_reorg_deeper_than_the_window_is_a_security_failure(evm_env, registry, db, anvil) -> None:
    from tributary.core.errors import SecurityError

    sender = make_sender("tributary_evm_3")  # the reorg drops these: keep them off the shared accounts
    hook = EvmHook()
    spec = IndexSpec(indexer=f"deep-{uuid.uuid4().hex[:6]}", chain_id=31337, addresses=[registry],
                     start_block=max(0, hook.block_number() - 5), reorg_window=2)
    for value in ("a", "b", "c"):
        _record(sender, registry, value)
    index_range(db, hook, spec)
    anvil.rpc("anvil_reorg", [3, []])
    with pytest.raises(SecurityError, match="below the 2-block window"):
        index_range(db, hook, spec)
