"""Rejected source messages (issue 11 §5): the checkpoint moves past them so the rest replicates, each is
recorded with its reason in ``dwn_replication_rejects``, and every later run retries it: a message
that now verifies is written (with its record's latest write) and the reject is closed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tributary.core.errors import SecurityError
from tributary.dwn import messages as m
from tributary.dwn.hook import DwnHook
from tributary.dwn.replication import StateKey, load_state, replicate, snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]

PROTOCOL = "https://tributary.example/protocols/rejected-notes"


class _Forging:
    """A source whose MessagesRead answers with a tampered copy of one record's messages while ``on``
    (e.g. a proxy in the way, or a source that served a corrupt copy for a while)."""

    def __init__(self, hook: DwnHook, victim: str | None, *, cids: frozenset[str] = frozenset(),
                 malformed: bool = False) -> None:
        self.hook, self.victim, self.base_url, self.on, self.malformed = hook, victim, hook.base_url, True, malformed
        self.cids = cids

    def query_messages(self, filters, cursor=None):
        return self.hook.query_messages(filters, cursor)

    def read_message(self, cid):
        found = self.hook.read_message(cid)
        if self.on and found and (cid in self.cids or (self.victim and found[0].get("recordId") == self.victim)):
            message = copy.deepcopy(found[0])
            if self.malformed:  # not even the shape of a message: the checks themselves would crash
                del message["descriptor"]
            else:
                message["descriptor"]["dataFormat"] = "application/jose+json"
            return message, found[1]
        return found

    def read_record(self, record_id):
        return self.hook.read_record(record_id)


def _rejects(pg: Any, tenant: str) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute("SELECT message_cid, record_id, reason, error, status, attempts FROM dwn_replication_rejects"
                    " WHERE tenant = %s ORDER BY first_seen, message_cid", (tenant,))
        rows = cur.fetchall()
    pg.commit()
    return rows


def _run_counts(pg: Any, tenant: str, run_id: str) -> tuple:
    with pg.cursor() as cur:
        cur.execute("SELECT status, rejected, retried, recovered FROM dwn_replication_runs"
                    " WHERE tenant = %s AND run_id = %s", (tenant, run_id))
        row = cur.fetchone()
    pg.commit()
    return row


@pytest.mark.parametrize("malformed", [False, True], ids=["bad-signature", "malformed"])
def test_a_rejected_message_is_recorded_and_retried_until_it_replicates(tenant, pg, malformed: bool) -> None:
    source, target = DwnHook(tenant.source_conn), DwnHook(tenant.target_conn)
    source.configure_protocol(m.flat_protocol(PROTOCOL))
    notes = [source.write_record(f'{{"n": {i}}}'.encode(), protocol=PROTOCOL, protocol_path="record")
             for i in range(6)]
    victim = notes[2]
    source.write_record(b'{"n": "updated"}', previous=victim)  # the victim's later write comes after it
    forging = _Forging(source, victim["recordId"], malformed=malformed)
    key = StateKey(tenant.did, PROTOCOL, source.base_url, target.base_url)

    # 1) the victim's messages are rejected; every other record replicates and the checkpoint moves on
    with pytest.raises(SecurityError, match="failed signature/CID verification"):
        replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=3, run_id="forged")
    assert target.read_record(victim["recordId"]) is None
    assert all(target.read_record(n["recordId"]) is not None for n in notes if n is not victim)
    state = load_state(pg, key)
    assert state["resume_after"] is None and state["rejected"] == 2
    rejects = _rejects(pg, tenant.did)
    assert len(rejects) == 2 and {r[1] for r in rejects} == {victim["recordId"]}
    assert all(r[4] == "open" and r[5] == 1 and r[2].startswith("dwn:") and r[3] for r in rejects)

    # 2) still forged: retried, counted, still open; nothing else is read again
    with pytest.raises(SecurityError, match="2 retried, 0 recovered"):
        replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=3, run_id="forged-2")
    assert _run_counts(pg, tenant.did, "forged-2") == ("success", 0, 2, 0)
    assert [r[5] for r in _rejects(pg, tenant.did)] == [2, 2]

    # 3) the source serves the real messages again: the next run writes them and closes the rejects
    forging.on = False
    counts = replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=3, run_id="healed")
    assert (counts.retried, counts.recovered, counts.scanned) == (2, 2, 0)
    assert _run_counts(pg, tenant.did, "healed") == ("success", 0, 2, 2)
    assert [r[4] for r in _rejects(pg, tenant.did)] == ["replicated", "replicated"]
    assert target.read_record(victim["recordId"])[1] == b'{"n": "updated"}'
    assert snapshot(target, PROTOCOL) == snapshot(source, PROTOCOL)

    # 4) nothing open, nothing new: a no-op
    again = replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, batch_size=3, run_id="quiet")
    assert (again.retried, again.scanned, again.written) == (0, 0, 0)


def test_a_reject_the_source_no_longer_has_is_closed_as_gone(tenant, pg) -> None:
    source, target = DwnHook(tenant.source_conn), DwnHook(tenant.target_conn)
    source.configure_protocol(m.flat_protocol(PROTOCOL))
    note = source.write_record(b'{"n": 0}', protocol=PROTOCOL, protocol_path="record")
    update = source.write_record(b'{"n": 1}', previous=note)
    forging = _Forging(source, None, cids=frozenset({m.message_cid(update)}))
    with pytest.raises(SecurityError):
        replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, run_id="forged")
    assert [r[4] for r in _rejects(pg, tenant.did)] == ["open"]
    source.write_record(b'{"n": 2}', previous=note)  # supersedes the rejected update on the source
    forging.on = False
    counts = replicate(forging, target, pg, tenant=tenant.did, protocol=PROTOCOL, run_id="superseded")
    assert counts.retried == 1 and counts.recovered == 0
    assert [r[4] for r in _rejects(pg, tenant.did)] == ["gone"]
    assert target.read_record(note["recordId"])[1] == b'{"n": 2}'
    assert snapshot(target, PROTOCOL) == snapshot(source, PROTOCOL)
