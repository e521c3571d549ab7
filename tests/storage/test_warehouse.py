"""Warehouse migrations: applied once, in order, and a changed applied file is refused."""

from __future__ import annotations

import psycopg2
import pytest

from tributary.core.errors import PermanentError
from tributary.storage import warehouse
from tributary.storage.embedded import WarehouseLocation, create_database, drop_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_db(warehouse: WarehouseLocation):
    location = WarehouseLocation(warehouse.host, warehouse.port, warehouse.login,
                                 f"{warehouse.database}_mig", warehouse.kind)
    create_database(location)
    conn = psycopg2.connect(location.dsn())
    yield conn
    conn.close()
    drop_database(location)


def test_migrations_apply_once(empty_db) -> None:
    first = warehouse.apply_migrations(empty_db)
    assert "platform/001_error_events.sql" in first
    assert warehouse.apply_migrations(empty_db) == []
    with empty_db.cursor() as cur:
        cur.execute("SELECT to_regclass('error_events'), to_regclass('integration_health')")
        assert all(cur.fetchone())


def test_a_changed_applied_migration_is_refused(empty_db, tmp_path, monkeypatch) -> None:
    (tmp_path / "sql" / "x").mkdir(parents=True)
    migration = tmp_path / "sql" / "x" / "001_t.sql"
    migration.write_text("CREATE TABLE IF NOT EXISTS t (k int);")
    monkeypatch.setenv("TRIBUTARY_INCLUDE_DIR", str(tmp_path))
    assert warehouse.apply_migrations(empty_db) == ["x/001_t.sql"]
    migration.write_text("CREATE TABLE IF NOT EXISTS t (k bigint);")
    with pytest.raises(PermanentError, match="changed after it was applied"):
        warehouse.apply_migrations(empty_db)
