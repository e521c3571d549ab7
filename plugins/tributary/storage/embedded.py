"""Where the warehouse lives when nobody configured one.

``auto`` (the default) uses a PostgreSQL server answering on 127.0.0.1:5432 (our machines and CI
run one, trust auth) and otherwise starts a private PostgreSQL 16 cluster with ``pgserver`` (a pip
package that ships the server binaries) under the deployment's state folder. ``embedded`` forces the
private cluster. Either way the warehouse is a real PostgreSQL: same SQL, same COPY, same upserts.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarehouseLocation:
    host: str  # a hostname or, for the private cluster, the socket directory
    port: int
    login: str
    database: str
    kind: str  # "server" or "embedded"

    def dsn(self, database: str | None = None) -> str:
        return (f"host={self.host} port={self.port} user={self.login} "
                f"dbname={database or self.database}")

    def connection_env(self, conn_id: str = "tributary_warehouse") -> dict[str, str]:
        """The Airflow Connection as an ``AIRFLOW_CONN_*`` JSON value."""
        import json

        value = {"conn_type": "postgres", "host": self.host, "port": self.port, "login": self.login,
                 "schema": self.database}
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


def server_answers(host: str = "127.0.0.1", port: int = 5432, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def create_database(location: WarehouseLocation) -> None:
    import psycopg2

    admin = psycopg2.connect(location.dsn("postgres"))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (location.database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{location.database}"')
    finally:
        admin.close()


def drop_database(location: WarehouseLocation) -> None:
    import psycopg2

    admin = psycopg2.connect(location.dsn("postgres"))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{location.database}" WITH (FORCE)')
    finally:
        admin.close()


_embedded_servers: dict[str, Any] = {}


def start_embedded(data_dir: Path) -> WarehouseLocation:
    """Start (or reuse) the private cluster in ``data_dir``; it stops when this process exits."""
    import pgserver

    key = str(data_dir)
    if key not in _embedded_servers:
        data_dir.mkdir(parents=True, exist_ok=True)
        _embedded_servers[key] = pgserver.get_server(data_dir, cleanup_mode="stop")
    server = _embedded_servers[key]
    from urllib.parse import parse_qs, urlsplit

    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    return WarehouseLocation(host=socket_dir, port=5432, login="postgres", database="postgres",
                             kind="embedded")


def stop_embedded() -> None:
    """Stop the private clusters this process started (they would also stop at interpreter exit)."""
    import atexit

    while _embedded_servers:
        _, server = _embedded_servers.popitem()
        server.cleanup()
        # pgserver also registered its cleanup with atexit; that second call only logs, but it
        # would log after pytest (or the run command) closed its streams.
        atexit.unregister(server._cleanup)


def provision(state_dir: Path, database: str = "tributary", mode: str | None = None) -> WarehouseLocation:
    """Find or start the warehouse and make sure ``database`` exists in it."""
    mode = mode or os.environ.get("TRIBUTARY_WAREHOUSE", "auto")
    if mode == "auto" and server_answers():
        location = WarehouseLocation("127.0.0.1", 5432, os.environ.get("TRIBUTARY_PGUSER", "postgres"),
                                     database, "server")
    elif mode in ("auto", "embedded"):
        base = start_embedded(state_dir / "pgdata")
        location = WarehouseLocation(base.host, base.port, base.login, database, "embedded")
    else:
        raise ValueError(f"TRIBUTARY_WAREHOUSE must be auto or embedded, not {mode!r}")
    create_database(location)
    log.info("warehouse: %s database %r at %s", location.kind, database, location.host)
    return location
