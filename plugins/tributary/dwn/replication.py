"""Incremental, checkpointed replication of one tenant's protocol records from a source DWN to a target.

The source's event log (``MessagesQuery`` filtered on the protocol, oldest first) lists every message
still in force: the ProtocolsConfigure, each record's initial write, its latest write and its delete.
Each message is fetched with its data (latest writes in bulk with ``RecordsQuery`` pages, the rest with
``MessagesRead``), its JWS verified against the author's did:key
and its data against ``dataCid`` (:func:`messages.verify_message`), then sent **as is** to the target:
the original signature stays valid there, record ids and message CIDs are content addresses, so a
message sent twice is stored once (the target answers 409).

Conflicts follow the DWN's newest-wins rule (later ``messageTimestamp``, then the larger message CID):
within a batch only the newest write of a record is sent, and the target itself refuses an older
write or a write after a delete (409/400) — both counted as ``skipped``. Messages that fail
verification are never written (``rejected``): the checkpoint moves past them so the rest of the log
replicates, and each is recorded in ``dwn_replication_rejects`` with its reason. Every later run
retries the open rejects first (read again from the source, verified again): one that now verifies is
written, followed by its record's latest write (``recovered``); one the source no longer has is
closed as ``gone``. While any reject stays open the run raises :class:`SecurityError` at its end,
after replicating everything else.

Checkpoint (``dwn_replication_state``): the cursor the pass started from and the last message applied,
written after every batch. A failed run resumes after that message; a finished pass stores the
source's new cursor, so the next run reads only what came after (a re-run with nothing new is a no-op).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tributary.core.errors import SecurityError, classify
from tributary.dwn import SYSTEM
from tributary.dwn import messages as m

log = logging.getLogger(__name__)


class Peer(Protocol):
    """What replication needs of a DWN (``DwnHook`` implements it)."""

    base_url: str

    def query_messages(self, filters: list[Mapping[str, Any]],
                       cursor: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, Any] | None]: ...

    def read_message(self, cid: str) -> tuple[dict[str, Any], bytes | None] | None: ...

    def send(self, message: Mapping[str, Any], data: bytes | None = None) -> Any: ...


@dataclass(frozen=True)
class StateKey:
    tenant: str
    protocol: str
    source: str
    target: str

    def values(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.protocol, self.source, self.target)


@dataclass
class Counts:
    batches: int = 0
    scanned: int = 0
    written: int = 0
    deleted: int = 0
    skipped: int = 0
    rejected: int = 0
    retried: int = 0  # earlier rejects verified again this run
    recovered: int = 0  # ... of which verified and were written
    lag_seconds: float | None = None
    rejected_cids: list[str] = field(default_factory=list)
    open_rejects: list[str] = field(default_factory=list)  # rejects still open after this run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_KEY = "tenant = %s AND protocol = %s AND source = %s AND target = %s"


def load_state(conn: Any, key: StateKey) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT cursor, resume_after, written, deleted, skipped, rejected, lag_seconds, last_run,"
                    " source_timestamp"
                    f" FROM dwn_replication_state WHERE {_KEY}", key.values())
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return None
    cursor = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return {"cursor": cursor, "resume_after": row[1], "written": row[2], "deleted": row[3], "skipped": row[4],
            "rejected": row[5], "lag_seconds": row[6], "last_run": row[7], "source_timestamp": row[8]}


def save_state(conn: Any, key: StateKey, *, cursor: Mapping[str, Any] | None, resume_after: str | None,
               run_id: str, delta: Counts, lag_seconds: float | None, source_timestamp: str | None = None) -> None:
    """Upsert the checkpoint and add ``delta`` to the totals, in one committed transaction."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO dwn_replication_state (tenant, protocol, source, target, cursor, resume_after, last_run,"
            " last_batch_at, written, deleted, skipped, rejected, lag_seconds, source_timestamp, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (tenant, protocol, source, target) DO UPDATE SET cursor = EXCLUDED.cursor,"
            " resume_after = EXCLUDED.resume_after, last_run = EXCLUDED.last_run, last_batch_at = now(),"
            " written = dwn_replication_state.written + EXCLUDED.written,"
            " deleted = dwn_replication_state.deleted + EXCLUDED.deleted,"
            " skipped = dwn_replication_state.skipped + EXCLUDED.skipped,"
            " rejected = dwn_replication_state.rejected + EXCLUDED.rejected,"
            " lag_seconds = COALESCE(EXCLUDED.lag_seconds, dwn_replication_state.lag_seconds),"
            " source_timestamp = GREATEST(EXCLUDED.source_timestamp, dwn_replication_state.source_timestamp),"
            " updated_at = now()",
            (*key.values(), json.dumps(dict(cursor)) if cursor else None, resume_after, run_id,
             delta.written, delta.deleted, delta.skipped, delta.rejected, lag_seconds, source_timestamp))
    conn.commit()


def record_run(conn: Any, key: StateKey, run_id: str, counts: Counts, *, status: str,
               started_at: datetime, error: str | None = None) -> None:
    finished = None if status == "running" else datetime.now(UTC)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO dwn_replication_runs (run_id, tenant, protocol, source, target, started_at, finished_at,"
            " status, batches, scanned, written, deleted, skipped, rejected, retried, recovered, lag_seconds, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id, tenant, protocol, source, target) DO UPDATE SET"
            " finished_at = EXCLUDED.finished_at, status = EXCLUDED.status, batches = EXCLUDED.batches,"
            " scanned = EXCLUDED.scanned, written = EXCLUDED.written, deleted = EXCLUDED.deleted,"
            " skipped = EXCLUDED.skipped, rejected = EXCLUDED.rejected, retried = EXCLUDED.retried,"
            " recovered = EXCLUDED.recovered, lag_seconds = EXCLUDED.lag_seconds, error = EXCLUDED.error",
            (run_id, *key.values(), started_at, finished, status, counts.batches, counts.scanned, counts.written,
             counts.deleted, counts.skipped, counts.rejected, counts.retried, counts.recovered, counts.lag_seconds,
             error))
    conn.commit()


# --------------------------------------------------------------------------- rejects
def _verify(message: Any, data: bytes | None) -> BaseException | None:
    """None when the message verifies, else the (non-transient) reason it does not.

    Anything a hostile or broken source sends fails only that message: a malformed message (a
    KeyError, a TypeError deep in the checks) is a reject like a bad signature, not a crash that
    would stop every run on the same message.
    """
    try:
        if not isinstance(message, Mapping):
            raise SecurityError(f"not a DWN message: {type(message).__name__}", system=SYSTEM,
                                reason="dwn:malformed")
        m.verify_message(message, data)
    except SecurityError as exc:
        return exc
    except Exception as exc:
        if classify(exc).retryable:
            raise
        return SecurityError(f"malformed DWN message: {type(exc).__name__}: {exc}"[:500], system=SYSTEM,
                             reason="dwn:malformed")
    return None


def record_reject(conn: Any, key: StateKey, cid: str, message: Any, error: BaseException, run_id: str) -> None:
    """Insert (or count again) a reject with its reason; committed with the batch's checkpoint."""
    from tributary.core.masking import mask_text

    record_id = message.get("recordId") if isinstance(message, Mapping) else None
    reason = classify(error).reason
    text = mask_text(f"{type(error).__name__}: {error}")[:2000]
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO dwn_replication_rejects (tenant, protocol, source, target, message_cid, record_id, reason,"
            " error, first_run, last_run) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant, protocol, source, target, message_cid) DO UPDATE SET"
            " reason = EXCLUDED.reason, error = EXCLUDED.error, last_run = EXCLUDED.last_run,"
            " attempts = dwn_replication_rejects.attempts + 1, last_attempt = now(), resolved_at = NULL,"
            " status = CASE WHEN dwn_replication_rejects.status = 'dismissed' THEN 'dismissed' ELSE 'open' END",
            (*key.values(), cid, record_id if isinstance(record_id, str) else None, reason, text, run_id, run_id))


def open_rejects(conn: Any, key: StateKey, limit: int = 1000) -> list[tuple[str, str | None]]:
    """(message CID, record id) of the open rejects, oldest first."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT message_cid, record_id FROM dwn_replication_rejects WHERE {_KEY} AND status = 'open'"
                    " ORDER BY first_seen, message_cid LIMIT %s", (*key.values(), limit))
        rows = cur.fetchall()
    conn.commit()
    return [(r[0], r[1]) for r in rows]


def _close_reject(conn: Any, key: StateKey, cid: str, status: str, run_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"UPDATE dwn_replication_rejects SET status = %s, resolved_at = now(), last_run = %s,"
                    f" last_attempt = now() WHERE {_KEY} AND message_cid = %s", (status, run_id, *key.values(), cid))
    conn.commit()


def retry_rejects(source: Peer, target: Peer, conn: Any, key: StateKey, run_id: str, counts: Counts) -> None:
    """Read every open reject again from the source and verify it again; write those that now verify.

    A reject that verifies is written and so is its record's latest write (read with RecordsRead): the
    record's later messages were refused by the target (or skipped) while it lacked this one, and the
    checkpoint has moved past them.
    """
    for cid, record_id in open_rejects(conn, key):
        counts.retried += 1
        found = source.read_message(cid)
        if found is None:  # superseded or deleted on the source: nothing of it to replicate any more
            _close_reject(conn, key, cid, "gone", run_id)
            continue
        message, data = found
        error = _verify(message, data)
        if error is not None:
            log.error("still not replicating %s: %s", cid, error)
            record_reject(conn, key, cid, message, error, run_id)
            conn.commit()
            continue
        apply_message(target, message, data, counts)
        if record_id and hasattr(source, "read_record"):
            latest = source.read_record(record_id)
            if latest is not None and m.message_cid(m.strip_reply_fields(latest[0])) != cid:
                latest_message = m.strip_reply_fields(latest[0])
                if _verify(latest_message, latest[1]) is None:
                    apply_message(target, latest_message, latest[1], counts)
        counts.recovered += 1
        _close_reject(conn, key, cid, "replicated", run_id)
        log.info("replicated %s, rejected by an earlier run", cid)


def _age_seconds(message: Mapping[str, Any]) -> float | None:
    try:
        stamp = datetime.fromisoformat(message["descriptor"]["messageTimestamp"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return max((datetime.now(UTC) - stamp).total_seconds(), 0.0)


Fetched = list[tuple[str, dict[str, Any], bytes | None]]


def _collapse(fetched: Fetched) -> Fetched:
    """Newest-wins inside a batch: of several non-initial writes of one record keep only the newest."""
    newest: dict[str, dict[str, Any]] = {}
    initial = {id(message) for _, message, _ in fetched
               if message["descriptor"].get("method") == "Write" and m.is_initial_write(message)}
    for _, message, _ in fetched:
        d = message["descriptor"]
        if d.get("interface") == "Records" and d.get("method") == "Write" and id(message) not in initial:
            current = newest.get(message["recordId"])
            if current is None or m.compare(message, current) > 0:
                newest[message["recordId"]] = message
    kept = []
    for cid, message, data in fetched:
        d = message["descriptor"]
        if (d.get("method") == "Write" and message.get("recordId") in newest
                and newest[message["recordId"]] is not message and id(message) not in initial):
            continue
        kept.append((cid, message, data))
    return kept


def apply_message(target: Peer, message: Mapping[str, Any], data: bytes | None, counts: Counts) -> None:
    """Send one verified message to the target and count the outcome."""
    reply = target.send(message, data)
    method = message["descriptor"].get("method")
    status = getattr(reply, "status", 0)
    if status in (200, 202, 204):
        if method == "Delete":
            counts.deleted += 1
        else:
            counts.written += 1
    else:  # 409: the target has this or a newer message (newest-wins); 404: nothing to delete
        counts.skipped += 1


def _apply_batch(target: Peer, kept: Fetched, delta: Counts, pool: ThreadPoolExecutor | None) -> None:
    """Send a batch in event-log order per record: protocol messages first, then one lane per record
    (its initial write, later write, delete stay in order), lanes in parallel."""
    lanes: dict[str, list[tuple[dict[str, Any], bytes | None]]] = {}
    for cid, message, data in kept:
        if message["descriptor"].get("interface") != "Records":
            apply_message(target, message, data, delta)
        else:
            lanes.setdefault(message.get("recordId") or cid, []).append((message, data))
    lock = threading.Lock()

    def run_lane(lane: list[tuple[dict[str, Any], bytes | None]]) -> None:
        local = Counts()
        for message, data in lane:
            apply_message(target, message, data, local)
        with lock:
            delta.written += local.written
            delta.deleted += local.deleted
            delta.skipped += local.skipped

    if pool is None:
        for lane in lanes.values():
            run_lane(lane)
    else:
        list(pool.map(run_lane, lanes.values()))


def replicate(source: Peer, target: Peer, conn: Any, *, tenant: str, protocol: str, batch_size: int = 100,
              run_id: str = "manual", max_batches: int | None = None, workers: int = 8,
              after_batch: Callable[[Counts], None] | None = None) -> Counts:
    """Replicate until the source's event log is exhausted (or ``max_batches``); returns this run's counts.

    ``workers`` > 1 reads and writes the messages of a batch concurrently (records in parallel, each
    record's messages in order); the checkpoint still moves only after a whole batch.
    """
    key = StateKey(tenant, protocol, source.base_url, target.base_url)
    started = datetime.now(UTC)
    counts = Counts()
    record_run(conn, key, run_id, counts, status="running", started_at=started)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="dwn-write") if workers > 1 else None
    readers = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="dwn-read")
    prefetch = ThreadPoolExecutor(1, thread_name_prefix="dwn-prefetch")

    bulk: dict[str, tuple[dict[str, Any], bytes]] = {}

    def read_one(cid: str) -> tuple[dict[str, Any], bytes | None] | None:
        return bulk.pop(cid, None) or source.read_message(cid)

    def fetch(batch: list[str]) -> list[tuple[dict[str, Any], bytes | None] | None]:
        return list(readers.map(read_one, batch))

    try:
        retry_rejects(source, target, conn, key, run_id, counts)
        state = load_state(conn, key) or {}
        base_cursor = state.get("cursor")
        cids, new_cursor = source.query_messages([{"protocol": protocol}], base_cursor)
        resume_after = state.get("resume_after")
        if resume_after and resume_after in cids:
            cids = cids[cids.index(resume_after) + 1:]
        batches = [cids[i:i + batch_size] for i in range(0, len(cids), batch_size)][:max_batches]
        if cids and hasattr(source, "iter_records"):
            # one RecordsQuery page carries up to batch_size latest writes with their data (<= 30,000
            # bytes): far cheaper for the source than one MessagesRead each. Anything not found here
            # (initial writes, deletes, large data, clock skew) is read with MessagesRead.
            bulk.update(prefetch_latest(source, protocol, state.get("source_timestamp"), batch_size, set(cids)))
        # the source (reads) and the target (writes) are different servers: read batch n+1 while
        # batch n is written
        upcoming = prefetch.submit(fetch, batches[0]) if batches else None
        for index, batch in enumerate(batches):
            assert upcoming is not None
            found_all = upcoming.result()
            upcoming = prefetch.submit(fetch, batches[index + 1]) if index + 1 < len(batches) else None
            delta = Counts()
            fetched = []
            for cid, found in zip(batch, found_all, strict=True):
                delta.scanned += 1
                if found is None:  # superseded or deleted on the source since the query
                    delta.skipped += 1
                    continue
                message, data = found
                error = _verify(message, data)
                if error is not None:  # recorded and retried by the next runs; the checkpoint moves on
                    log.error("not replicating %s: %s", cid, error)
                    record_reject(conn, key, cid, message, error, run_id)
                    delta.rejected += 1
                    counts.rejected_cids.append(cid)
                    continue
                fetched.append((cid, message, data))
            kept = _collapse(fetched)
            delta.skipped += len(fetched) - len(kept)
            _apply_batch(target, kept, delta, pool)
            lag = _age_seconds(kept[-1][1]) if kept else None
            newest_stamp = max((msg["descriptor"]["messageTimestamp"] for _, msg, _ in kept), default=None)
            done = index == len(batches) - 1 and len(batches) * batch_size >= len(cids)
            save_state(conn, key, cursor=(new_cursor if done else base_cursor) or base_cursor,
                       resume_after=None if done else batch[-1], run_id=run_id, delta=delta, lag_seconds=lag,
                       source_timestamp=newest_stamp)
            counts.batches += 1
            for name in ("scanned", "written", "deleted", "skipped", "rejected"):
                setattr(counts, name, getattr(counts, name) + getattr(delta, name))
            if lag is not None:
                counts.lag_seconds = lag
            record_run(conn, key, run_id, counts, status="running", started_at=started)
            if after_batch is not None:
                after_batch(counts)
        if not cids and new_cursor and new_cursor != base_cursor:
            save_state(conn, key, cursor=new_cursor, resume_after=None, run_id=run_id, delta=Counts(),
                       lag_seconds=None)
    except Exception as exc:
        for executor in (pool, readers, prefetch):
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        conn.rollback()
        record_run(conn, key, run_id, counts, status="failed", started_at=started,
                   error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    for executor in (pool, readers, prefetch):
        if executor is not None:
            executor.shutdown()
    record_run(conn, key, run_id, counts, status="success", started_at=started)
    counts.open_rejects = [cid for cid, _ in open_rejects(conn, key)]
    if counts.open_rejects:  # everything else was replicated; a person looks at these (or dismisses them)
        raise SecurityError(f"{len(counts.open_rejects)} source message(s) failed signature/CID verification and "
                            f"were not replicated ({counts.rejected} new this run, {counts.retried} retried, "
                            f"{counts.recovered} recovered): {counts.open_rejects[:5]}; they are retried by every "
                            "run (dwn_replication_rejects)", system=SYSTEM, reason="dwn:rejected")
    return counts


def prefetch_latest(source: Any, protocol: str, since: str | None, page_size: int,
                    wanted: set[str]) -> dict[str, tuple[dict[str, Any], bytes]]:
    """{message CID: (latest write, data)} of the protocol's records updated at or after ``since``."""
    import base64

    query: dict[str, Any] = {"protocol": protocol}
    if since:
        query["dateUpdated"] = {"from": since}
    found: dict[str, tuple[dict[str, Any], bytes]] = {}
    for entry in source.iter_records(query, page_size=page_size):
        if "encodedData" not in entry:
            continue
        message = m.strip_reply_fields(entry)
        cid = m.message_cid(message)
        if cid in wanted:
            encoded = entry["encodedData"]
            found[cid] = (message, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return found


def snapshot(hook: Any, protocol: str, *, page_size: int = 200) -> dict[str, str]:
    """{recordId: CID of its latest write} of a tenant's protocol records, read with RecordsQuery pages."""
    return {entry["recordId"]: m.message_cid(m.strip_reply_fields(entry))
            for entry in hook.iter_records({"protocol": protocol}, page_size=page_size)}


# --------------------------------------------------------------------------- task entry points (DAG)
def check_peers(source_conn_id: str, target_conn_id: str, tenant: str | None = None) -> dict[str, Any]:
    """Both peers answer and sign as the same tenant; returns what the task may put in XCom (no keys)."""
    from tributary.core.errors import PermanentError
    from tributary.dwn.hook import DwnHook

    source, target = DwnHook(source_conn_id), DwnHook(target_conn_id)
    if source.tenant != target.tenant or (tenant and tenant != source.tenant):
        raise PermanentError(f"source and target must sign as the same tenant (source {source.tenant}, "
                             f"target {target.tenant}, asked {tenant})", system=SYSTEM, reason="config:tenant")
    return {"tenant": source.tenant, "source": source.base_url, "target": target.base_url,
            "source_info": source.probe(), "target_info": target.probe()}


def run_replication(source_conn_id: str, target_conn_id: str, *, protocol: str, batch_size: int = 100,
                    max_batches: int | None = None, run_id: str = "manual") -> dict[str, Any]:
    from tributary.dwn.hook import DwnHook
    from tributary.storage.warehouse import WarehouseHook

    source, target = DwnHook(source_conn_id), DwnHook(target_conn_id)
    with WarehouseHook().session() as conn:
        counts = replicate(source, target, conn, tenant=source.tenant, protocol=protocol, batch_size=batch_size,
                           run_id=run_id, max_batches=max_batches)
    result = counts.as_dict()
    result.pop("rejected_cids")
    result.pop("open_rejects")
    return {"tenant": source.tenant, "protocol": protocol, **result}


def verify_convergence(source_conn_id: str, target_conn_id: str, protocol: str) -> dict[str, Any]:
    from tributary.core.errors import DataError
    from tributary.dwn.hook import DwnHook

    source, target = snapshot(DwnHook(source_conn_id), protocol), snapshot(DwnHook(target_conn_id), protocol)
    if source != target:
        missing = sorted(set(source) - set(target))
        extra = sorted(set(target) - set(source))
        stale = sorted(k for k in set(source) & set(target) if source[k] != target[k])
        raise DataError(f"target differs from source: {len(missing)} missing, {len(extra)} extra, "
                        f"{len(stale)} stale (e.g. {(missing + extra + stale)[:3]})", system=SYSTEM,
                        reason="dwn:diverged")
    return {"records": len(source)}
