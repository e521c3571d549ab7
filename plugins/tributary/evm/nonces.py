"""Nonce allocation for senders shared by many tasks, threads and processes, backed by PostgreSQL.

One row per (chain_id, address) in ``evm_nonces`` is locked (``SELECT ... FOR UPDATE``) while a
nonce is chosen, so two allocators never hand out the same nonce. Each choice is synced with the
node's ``eth_getTransactionCount(address, "pending")``:

* a nonce is *leased* (``evm_nonce_leases``) until the transaction signed with it is durable in the
  ledger, then the lease is deleted (:meth:`commit_in`, in the ledger's database transaction): from
  then on the ledger row owns the nonce, whatever happens to the send;
* a nonce whose transaction provably never reached the node (signing failed, the node refused it
  with an error answer) is *released*; the next allocation takes the lowest released nonce first, so
  a failure leaves no gap;
* nonces below the node's pending count were used (by us or by another wallet holding the same
  key): released leases below it are dropped and the counter jumps ahead, so "nonce too low" only
  happens when someone outside the manager raced us (then :meth:`Lease.discard` and allocate again);
* a lease older than ``lease_ttl`` (its holder died between lease and send) is taken over, unless the
  node counts it already;
* when the node counts fewer transactions than were handed out, no lease is open and nothing was
  allocated for ``stale_after`` seconds, the node forgot them (dropped, or a reorg on a devnet): the
  counter falls back to the node's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Lease:
    manager: NonceManager
    chain_id: int
    address: str
    nonce: int
    reused: bool = False
    done: bool = field(default=False)

    def commit(self) -> None:
        """The node accepted the transaction with this nonce."""
        self.manager._finish(self, "commit")

    def release(self) -> None:
        """The send failed before reaching the node: the nonce is free again."""
        self.manager._finish(self, "release")

    def discard(self) -> None:
        """The nonce turned out to be used already ("nonce too low"): forget it."""
        self.manager._finish(self, "discard")


class NonceManager:
    """Hands out nonces for ``(chain_id, address)``; ``connect`` returns a new DB-API connection.

    ``pending_count(address)`` returns the node's pending transaction count (``EvmHook.pending_nonce``).
    Connections are kept one per thread.
    """

    def __init__(self, connect: Callable[[], Any], pending_count: Callable[[str], int], *,
                 lease_ttl: float = 120.0, stale_after: float = 30.0) -> None:
        self._connect = connect
        self._pending_count = pending_count
        self.lease_ttl = lease_ttl
        self.stale_after = stale_after
        self._local = threading.local()

    @property
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(conn, "closed", False):
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ----------------------------------------------------------------- allocation
    def allocate(self, chain_id: int, address: str, *, guard: Callable[[Any], None] | None = None) -> Lease:
        """A nonce for ``address``. ``guard(cursor)`` runs once the nonce row is locked, in the same
        database transaction: raising there (a fenced caller that was superseded while it waited for
        the lock) allocates nothing."""
        conn = self.conn
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO evm_nonces (chain_id, address, next_nonce) VALUES (%s, %s, 0)"
                            " ON CONFLICT DO NOTHING", (chain_id, address))
                cur.execute("SELECT next_nonce, extract(epoch FROM now() - updated_at) FROM evm_nonces"
                            " WHERE chain_id = %s AND address = %s FOR UPDATE", (chain_id, address))
                stored, idle = cur.fetchone()
                if guard is not None:
                    guard(cur)
                stored, idle = int(stored), float(idle)
                node = self._pending_count(address)  # read under the lock: no allocation can interleave
                # Released or abandoned nonces the node has since seen are used: forget them.
                cur.execute("DELETE FROM evm_nonce_leases WHERE chain_id = %s AND address = %s AND nonce < %s",
                            (chain_id, address, node))
                cur.execute(
                    "SELECT nonce FROM evm_nonce_leases WHERE chain_id = %s AND address = %s"
                    " AND (state = 'released' OR leased_at < now() - make_interval(secs => %s))"
                    " ORDER BY nonce LIMIT 1", (chain_id, address, self.lease_ttl))
                row = cur.fetchone()
                if row is not None:
                    nonce, reused = int(row[0]), True
                    cur.execute("UPDATE evm_nonce_leases SET state = 'leased', holder = %s, leased_at = now()"
                                " WHERE chain_id = %s AND address = %s AND nonce = %s",
                                (_HOLDER, chain_id, address, nonce))
                else:
                    reused = False
                    nonce = max(stored, node)
                    if node < stored and idle > self.stale_after:
                        cur.execute("SELECT count(*) FROM evm_nonce_leases WHERE chain_id = %s AND address = %s",
                                    (chain_id, address))
                        if int(cur.fetchone()[0]) == 0:
                            log.warning("node counts %d transactions from %s, %d were handed out and none is"
                                        " open: falling back to the node's count", node, address, stored)
                            nonce = node
                    cur.execute("INSERT INTO evm_nonce_leases (chain_id, address, nonce, state, holder)"
                                " VALUES (%s, %s, %s, 'leased', %s) ON CONFLICT (chain_id, address, nonce)"
                                " DO UPDATE SET state = 'leased', holder = EXCLUDED.holder, leased_at = now()",
                                (chain_id, address, nonce, _HOLDER))
                    cur.execute("UPDATE evm_nonces SET next_nonce = %s, updated_at = now()"
                                " WHERE chain_id = %s AND address = %s", (nonce + 1, chain_id, address))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return Lease(self, chain_id, address, nonce, reused=reused)

    @contextmanager
    def lease(self, chain_id: int, address: str) -> Iterator[Lease]:
        """``with manager.lease(...) as lease``: released on an exception unless committed/discarded."""
        lease = self.allocate(chain_id, address)
        try:
            yield lease
        except BaseException:
            if not lease.done:
                lease.release()
            raise

    def _finish(self, lease: Lease, action: str) -> None:
        if lease.done:
            return
        conn = self.conn
        try:
            with conn.cursor() as cur:
                if action == "release":
                    cur.execute("UPDATE evm_nonce_leases SET state = 'released', holder = NULL"
                                " WHERE chain_id = %s AND address = %s AND nonce = %s",
                                (lease.chain_id, lease.address, lease.nonce))
                else:
                    cur.execute("DELETE FROM evm_nonce_leases WHERE chain_id = %s AND address = %s AND nonce = %s",
                                (lease.chain_id, lease.address, lease.nonce))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        lease.done = True

    def release_nonce(self, chain_id: int, address: str, nonce: int) -> None:
        """Give back a nonce whose lease was already committed (its signed transaction was refused
        by the node before it reached the chain): the next allocation takes it first."""
        conn = self.conn
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO evm_nonce_leases (chain_id, address, nonce, state, holder)"
                            " VALUES (%s, %s, %s, 'released', NULL) ON CONFLICT (chain_id, address, nonce)"
                            " DO UPDATE SET state = 'released', holder = NULL", (chain_id, address, nonce))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def commit_in(self, cur: Any, lease: Lease) -> None:
        """Commit ``lease`` inside the caller's database transaction (with the ledger update)."""
        cur.execute("DELETE FROM evm_nonce_leases WHERE chain_id = %s AND address = %s AND nonce = %s",
                    (lease.chain_id, lease.address, lease.nonce))
        lease.done = True
