"""Replication between two real DWN servers: 1,000 records with updates and deletes converge, a target
killed mid-run is restarted on its data dir and the re-run converges without duplicates, a re-run with
nothing new is a no-op, and a forged message on the source is never written to the target."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tributary.core.errors import SecurityError, TransientError
from tributary.dwn import messages as m
from tributary.dwn.hook import DwnHook
from tributary.dwn.replication import StateKey, load_state, replicate, snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

PROTOCOL = "https://tributary.example/protocols/replicated-notes"


def populate(hook: DwnHook, count: int, *, start: int = 0) -> list[dict[str, Any]]:
    def one(i: int) -> dict[str, Any]:
        return hook.write_record(f'{{"note": {i}}}'.encode(), protocol=PROTOCOL, protocol_path="record",
                                 tags={"i": i})

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(start, start + count)))


def _runs(pg: Any, tenant: str) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute("SELECT run_id, status, written, deleted, skipped, rejected, lag_seconds"
                    " FROM dwn_replication_runs WHERE tenant = %s ORDER BY started_at", (tenant,))
        rows = cur.fetchall()
    pg.commit()
    return rows


def test_thousand_records_replicate_survive_a_killed_target_and_rerun_is_a_noop(tenant, dwn_peers, pg) -> None:
    source, target = DwnHook(tenant.source_conn), DwnHook(tenant.target_conn)
    source.configure_protocol(m.flat_protocol(PROTOCOL))
    records = populate(source, 1000)
    for record in records[:100]:  # updates
        source.write_record(b'{"note": "updated"}', previous=record, tags={"i": -1})
    for record in records[100:150]:  # deletes
        source.delete_record(record["recordId"])
    expected = snapshot(source, PROTOCOL)
    assert len(expected) == 950

    # 1) the target dies after the third batch: the run fails as transient, the checkpoint is kept
    def kill_after_third(counts: Any) -> None:
        if counts.batches == 3:
            dwn_peers[1].kill()

    with pytest.raises(TransientError):
        replicate(source, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=100, run_id="run-1",
                  after_batch=kill_after_third)
    key = StateKey(tenant.did, PROTOCOL, source.base_url, target.base_url)
    state = load_state(pg, key)
    assert state["resume_after"] is not None and state["written"] == 300

    # 2) restart on the same data dir and port; the re-run resumes after the checkpoint and converges
    dwn_peers[1] = dwn_peers[1].restart()
    counts = replicate(source, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=100, run_id="run-2")
    assert snapshot(target, PROTOCOL) == expected
    assert counts.scanned <= 1251 - 300  # nothing before the checkpoint was read again
    total = load_state(pg, key)
    assert total["resume_after"] is None and total["written"] + total["deleted"] >= 1151 - 1
    # no duplicates: every record once on the target, with the source's latest message
    ids = [e["recordId"] for e in target.iter_records({"protocol": PROTOCOL}, page_size=500)]
    assert len(ids) == len(set(ids)) == 950

    # 3) nothing new: a no-op
    again = replicate(source, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=100, run_id="run-3")
    assert (again.scanned, again.written, again.deleted, again.batches) == (0, 0, 0, 0)

    # 4) incremental: new, updated and deleted records after the last pass
    fresh = populate(source, 20, start=1000)
    source.write_record(b'{"note": "again"}', previous=records[500])
    source.delete_record(records[501]["recordId"])
    source.delete_record(fresh[0]["recordId"])
    incremental = replicate(source, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=7, run_id="run-4")
    assert incremental.written >= 21 and incremental.deleted == 2
    assert snapshot(target, PROTOCOL) == snapshot(source, PROTOCOL)
    assert target.read_record(records[500]["recordId"])[1] == b'{"note": "again"}'
    assert target.read_record(records[501]["recordId"]) is None

    runs = _runs(pg, tenant.did)
    assert [r[1] for r in runs] == ["failed", "success", "success", "success"]
    assert runs[-1][6] is not None  # lag recorded


class _Forging:
    """A source whose MessagesRead answers with a tampered copy of one message."""

    def __init__(self, hook: DwnHook, victim: str) -> None:
        self.hook, self.victim, self.base_url = hook, victim, hook.base_url

    def query_messages(self, filters, cursor=None):
        return self.hook.query_messages(filters, cursor)

    def read_message(self, cid):
        found = self.hook.read_message(cid)
        if found and found[0].get("recordId") == self.victim:
            message = copy.deepcopy(found[0])
            message["descriptor"]["dataFormat"] = "application/jose+json"
            return message, found[1]
        return found


def test_a_message_that_fails_verification_is_never_written(tenant, pg) -> None:
    source, target = DwnHook(tenant.source_conn), DwnHook(tenant.target_conn)
    source.configure_protocol(m.flat_protocol(PROTOCOL))
    good, bad = populate(source, 2)
    with pytest.raises(SecurityError, match="failed signature"):
        replicate(_Forging(source, bad["recordId"]), target, pg, tenant=tenant.did, protocol=PROTOCOL,
                  run_id="forged")
    assert target.read_record(good["recordId"]) is not None
    assert target.read_record(bad["recordId"]) is None
    assert load_state(pg, StateKey(tenant.did, PROTOCOL, source.base_url, target.base_url))["rejected"] == 1
