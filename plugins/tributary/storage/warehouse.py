"""The PostgreSQL warehouse: :class:`WarehouseHook`, the one way any module reaches it, and migrations.

``WarehouseHook(conn_id).session()`` is a connection with every pending migration applied (once per
process and database) that commits when the block ends and rolls back when it raises. Long-lived
users (a per-thread nonce manager) take ``get_conn()``, which is migrated too, and close it themselves.

Migrations are the ``*.sql`` files under ``include/sql/<area>/``, applied in name order and recorded
in ``tributary_migrations`` with their checksum; a changed file that was already applied is an
error (write a new file instead). Every file is also written to be idempotent on its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook

from tributary.core.errors import PermanentError
from tributary.storage import SYSTEM, WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

_applied_in_process: set[str] = set()
_lock = threading.Lock()


def include_dir() -> Path:
    return Path(os.environ.get("TRIBUTARY_INCLUDE_DIR") or Path(__file__).resolve().parents[3] / "include")


def migration_files() -> list[Path]:
    return sorted((include_dir() / "sql").glob("*/*.sql"), key=lambda p: (p.name, p.parent.name))


class WarehouseHook(PostgresHook):
    """The ``tributary_warehouse`` Connection (type ``postgres``): host or socket dir, port, login,
    password, and the database in ``schema``. A :class:`PostgresHook` (``copy_expert``, ``bulk_load``
    and the common-sql API as usual) whose connections come with the schema migrated.

    The driver is psycopg 3 when it is installed, as here, psycopg2 otherwise: callers use the DB-API.
    """

    default_conn_name = WAREHOUSE_CONN_ID
    hook_name = "Tributary warehouse"

    def __init__(self, conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id=conn_id, **kwargs)

    def get_conn(self) -> Any:
        conn = super().get_conn()
        try:
            _ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A migrated connection: committed at the end of the block, rolled back if it raises, closed."""
        conn = self.get_conn()
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()


def warehouse_session(conn_id: str = WAREHOUSE_CONN_ID) -> Any:
    """Shorthand for ``WarehouseHook(conn_id).session()``."""
    return WarehouseHook(conn_id).session()


def apply_migrations(conn: Any) -> list[str]:
    """Apply pending migration files; returns the names applied now."""
    applied_now: list[str] = []
    with conn.cursor() as cur:
        # One migrator at a time across processes (scheduler callbacks, workers, the run command).
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('tributary_migrations'))")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS tributary_migrations ("
            " name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT name, sha256 FROM tributary_migrations")
        done = dict(cur.fetchall())
        for path in migration_files():
            name = f"{path.parent.name}/{path.name}"
            sql = path.read_text(encoding="utf-8")
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != digest:
                    raise PermanentError(f"migration {name} changed after it was applied; add a new file",
                                         system=SYSTEM, reason="migration_changed")
                continue
            log.info("applying warehouse migration %s", name)
            cur.execute(sql)
            cur.execute("INSERT INTO tributary_migrations (name, sha256) VALUES (%s, %s)", (name, digest))
            applied_now.append(name)
    conn.commit()
    return applied_now


def _ensure_schema(conn: Any) -> None:
    """Apply migrations once per process and database."""
    info = getattr(conn, "info", None)  # psycopg 3 keeps the DSN on .info, psycopg2 on .dsn
    key = getattr(conn, "dsn", None) or getattr(info, "dsn", None) or str(id(conn))
    if key in _applied_in_process:
        return
    with _lock:
        if key not in _applied_in_process:
            apply_migrations(conn)
            _applied_in_process.add(key)
