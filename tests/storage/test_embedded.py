"""The embedded warehouse: a private PostgreSQL cluster when no server answers."""

from __future__ import annotations

import psycopg2
import pytest

from tributary.storage.embedded import provision
from tributary.storage.warehouse import apply_migrations

pytestmark = pytest.mark.postgres


def test_embedded_mode_starts_a_private_postgres_with_the_schema(tmp_path) -> None:
    location = provision(tmp_path, database="tributary_embedded", mode="embedded")
    assert location.kind == "embedded"
    conn = psycopg2.connect(location.dsn())
    try:
        assert "platform/001_error_events.sql" in apply_migrations(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), to_regclass('error_events') IS NOT NULL")
            assert cur.fetchone() == ("tributary_embedded", True)
    finally:
        conn.close()
