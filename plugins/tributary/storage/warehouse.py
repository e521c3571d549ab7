"""The PostgreSQL warehouse: connections through the Postgres provider and schema migrations.

Migrations are the ``*.sql`` files under ``include/sql/<area>/``, applied in name order and recorded
in ``tributary_migrations`` with their checksum; a changed file that was already applied is an
error (write a new file instead). Every file is also written to be idempotent on its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError

log = logging.getLogger(__name__)

WAREHOUSE_CONN_ID = "tributary_warehouse"
_applied_in_process: set[str] = set()
_lock = threading.Lock()


def include_dir() -> Path:
    return Path(os.environ.get("TRIBUTARY_INCLUDE_DIR") or Path(__file__).resolve().parents[3] / "include")


def migration_files() -> list[Path]:
    return sorted((include_dir() / "sql").glob("*/*.sql"), key=lambda p: (p.name, p.parent.name))


def connect(conn_id: str = WAREHOUSE_CONN_ID) -> Any:
    """A DB-API connection built from the Airflow Connection ``conn_id`` by the Postgres provider
    (psycopg 3 when it is installed, as here; psycopg2 otherwise: callers use the common DB-API)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_conn()


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
                                         system="warehouse", reason="migration_changed")
                continue
            log.info("applying warehouse migration %s", name)
            cur.execute(sql)
            cur.execute("INSERT INTO tributary_migrations (name, sha256) VALUES (%s, %s)", (name, digest))
            applied_now.append(name)
    conn.commit()
    return applied_now


def ensure_schema(conn: Any) -> None:
    """Apply migrations once per process and database."""
    info = getattr(conn, "info", None)  # psycopg 3 keeps the DSN on .info, psycopg2 on .dsn
    key = getattr(conn, "dsn", None) or getattr(info, "dsn", None) or str(id(conn))
    if key in _applied_in_process:
        return
    with _lock:
        if key not in _applied_in_process:
            apply_migrations(conn)
            _applied_in_process.add(key)
