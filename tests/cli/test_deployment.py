"""A deployment's state stays together (issue 11 §8): the warehouse database records the deployment
it belongs to, the home records its own id, and the run command refuses a database that belongs to
another deployment (another home, or the same path re-created) unless told to reset it."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tributary.cli import deployment as dep
from tributary.cli import run
from tributary.storage.embedded import WarehouseLocation, create_database, drop_database


@pytest.fixture
def database(warehouse: WarehouseLocation) -> Iterator[WarehouseLocation]:
    """A database of its own on the test server, the one the homes of a test compete for."""
    location = WarehouseLocation(warehouse.host, warehouse.port, warehouse.login,
                                 f"tributary_owner_{uuid.uuid4().hex[:8]}", warehouse.kind)
    create_database(location)
    yield location
    drop_database(location)


def _row(location: WarehouseLocation) -> tuple | None:
    with psycopg2.connect(location.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT deployment_id, home FROM tributary_deployment")
        return cur.fetchone()


def _home_id(home: Path) -> str | None:
    path = home / "tributary" / dep.DEPLOYMENT_FILE
    return json.loads(path.read_text())["deployment_id"] if path.exists() else None


# --------------------------------------------------------------------------- the check itself
@pytest.mark.postgres
def test_a_fresh_home_on_a_fresh_database_records_one_id_in_both(database: WarehouseLocation, tmp_path: Path) -> None:
    home = tmp_path / "first"
    owner, applied = dep.claim(database, home, new_home=True)
    assert owner.outcome == "created" and "platform/020_deployment.sql" in applied
    assert _row(database) == (owner.deployment_id, str(home)) and _home_id(home) == owner.deployment_id
    assert stat.S_IMODE((home / "tributary" / dep.DEPLOYMENT_FILE).stat().st_mode) == 0o600
    again, applied = dep.claim(database, home, new_home=False)  # the next start of the same deployment
    assert (again.deployment_id, again.outcome, applied) == (owner.deployment_id, "matched", [])


@pytest.mark.postgres
def test_two_homes_on_one_database_the_second_is_refused_and_nothing_is_written(
        database: WarehouseLocation, tmp_path: Path) -> None:
    first, _ = dep.claim(database, tmp_path / "first", new_home=True)
    second = tmp_path / "second"
    with pytest.raises(dep.WarehouseOwnedElsewhere) as refused:
        dep.claim(database, second, new_home=True)
    message = str(refused.value)
    assert database.database in message and first.deployment_id in message and str(tmp_path / "first") in message
    assert "--reset-warehouse" in message and "TRIBUTARY_WAREHOUSE_DB" in message and "--warehouse-db" in message
    assert refused.value.error_class.value == "permanent" and refused.value.reason == "deployment_mismatch"
    assert _row(database)[0] == first.deployment_id and _home_id(second) is None


@pytest.mark.postgres
def test_the_same_home_deleted_and_started_again_is_refused(database: WarehouseLocation, tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "home"
    dep.claim(database, home, new_home=True)
    shutil.rmtree(home)  # "rm -rf .local": new devnets and a new key-encryption key, same database
    with pytest.raises(dep.WarehouseOwnedElsewhere, match="new or re-created home"):
        dep.claim(database, home, new_home=True)


@pytest.mark.postgres
def test_a_home_whose_id_differs_from_the_databases_is_refused(database: WarehouseLocation, tmp_path: Path) -> None:
    dep.claim(database, tmp_path / "first", new_home=True)
    other = tmp_path / "second"
    other_db = WarehouseLocation(database.host, database.port, database.login, f"{database.database}_b", database.kind)
    create_database(other_db)
    try:
        dep.claim(other_db, other, new_home=True)  # the second home has its own id now
        with pytest.raises(dep.WarehouseOwnedElsewhere, match="this home to deployment"):
            dep.claim(database, other, new_home=False)
    finally:
        drop_database(other_db)


@pytest.mark.postgres
def test_reset_drops_the_other_deployments_data_and_records_this_one(database: WarehouseLocation,
                                                                    tmp_path: Path) -> None:
    dep.claim(database, tmp_path / "first", new_home=True)
    with psycopg2.connect(database.dsn()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE first_deployments_chain (height int)")  # stands for its state
    second = tmp_path / "second"
    owner, applied = dep.claim(database, second, new_home=True, reset=True)
    assert owner.outcome == "reset" and "platform/001_error_events.sql" in applied  # a new, empty database
    assert _row(database) == (owner.deployment_id, str(second)) and _home_id(second) == owner.deployment_id
    with psycopg2.connect(database.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('first_deployments_chain')")
        assert cur.fetchone() == (None,)


@pytest.mark.postgres
def test_a_database_from_before_deployment_ids(database: WarehouseLocation, tmp_path: Path) -> None:
    """Migrated by an earlier version (tables, no deployment row): its own, older home adopts it; a new
    home is refused."""
    from tributary.storage.warehouse import apply_migrations

    conn = psycopg2.connect(database.dsn())
    try:
        apply_migrations(conn)
        with conn.cursor() as cur:
            cur.execute("DROP TABLE tributary_deployment")
            cur.execute("DELETE FROM tributary_migrations WHERE name = 'platform/020_deployment.sql'")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(dep.WarehouseOwnedElsewhere, match="earlier deployment"):
        dep.claim(database, tmp_path / "new", new_home=True)
    owner, applied = dep.claim(database, tmp_path / "old", new_home=False)
    assert owner.outcome == "adopted" and applied == ["platform/020_deployment.sql"]
    assert _row(database)[0] == owner.deployment_id == _home_id(tmp_path / "old")


@pytest.mark.postgres
def test_a_home_with_an_id_on_an_empty_database_records_it(database: WarehouseLocation, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, _ = dep.claim(database, home, new_home=True)
    drop_database(database)  # e.g. dropped by hand, or the home moved to a new database
    create_database(database)
    again, _ = dep.claim(database, home, new_home=False)
    assert (again.deployment_id, again.outcome) == (first.deployment_id, "recorded")
    assert _row(database)[0] == first.deployment_id


# --------------------------------------------------------------------------- database per home
@pytest.mark.unit
def test_the_default_home_keeps_tributary_and_any_other_home_gets_its_own_database(tmp_path: Path) -> None:
    assert dep.default_database(dep.DEFAULT_HOME) == "tributary"
    first, second = dep.default_database(tmp_path / "a"), dep.default_database(tmp_path / "b")
    assert first != second and first.startswith("tributary_") and len(first) == len("tributary_") + 10
    assert dep.default_database(tmp_path / "a" / ".." / "a") == first  # the resolved path
    assert dep.check_database_name(first) == first
    for bad in ('x"; DROP DATABASE tributary; --', "1abc", "a" * 64, ""):
        with pytest.raises(ValueError):
            dep.check_database_name(bad)


@pytest.mark.unit
def test_a_home_is_new_until_it_has_secrets_or_a_metadata_db(tmp_path: Path) -> None:
    assert dep.home_is_new(tmp_path)
    (tmp_path / "airflow.db").touch()
    assert not dep.home_is_new(tmp_path)


# --------------------------------------------------------------------------- the run command
@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The run command's subprocesses (airflow db migrate, settings load) are recorded, not run."""
    calls: list[list[str]] = []

    def fake_run(command: list[str], env: dict[str, str], **kwargs: object) -> None:
        calls.append([*command, f"TRIBUTARY_WAREHOUSE_DB={env['TRIBUTARY_WAREHOUSE_DB']}"])

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    monkeypatch.delenv("TRIBUTARY_WAREHOUSE", raising=False)
    return calls


def _run(home: Path, *extra: str) -> int:
    return run.main(["--home", str(home), "--prepare-only", "--port", "18080", "--bitcoin-port", "18999",
                     "--stacks-port", "20999", "--evm-port", "18998", "--did-ports", "18997", "18996",
                     "--dwn-ports", "18995", "18994", *extra])


@pytest.mark.postgres
def test_the_run_command_refuses_a_second_home_on_the_same_database_before_setting_anything_up(
        database: WarehouseLocation, tmp_path: Path, no_processes: list[list[str]],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRIBUTARY_WAREHOUSE_DB", database.database)
    assert _run(tmp_path / "first") == 0
    assert [c[:3] for c in no_processes][:1] == [["airflow", "db", "migrate"]]
    no_processes.clear()
    capsys.readouterr()
    assert _run(tmp_path / "second") == 2
    assert no_processes == []  # no metadata DB, no settings: refused first
    stderr = capsys.readouterr().err  # for a person, on the terminal whatever Airflow did to logging
    assert "--reset-warehouse" in stderr and database.database in stderr and str(tmp_path / "first") in stderr
    assert not (tmp_path / "second" / "tributary" / "passwords.json").exists()
    # Starting fresh on it is one flag away; another database is one option away.
    assert _run(tmp_path / "second", "--reset-warehouse") == 0
    assert _row(database)[1] == str(tmp_path / "second")
    assert _run(tmp_path / "first") == 2  # and now the first home is the stranger


@pytest.mark.postgres
def test_the_run_command_picks_a_database_per_home_by_default(
        warehouse: WarehouseLocation, tmp_path: Path, no_processes: list[list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIBUTARY_WAREHOUSE_DB", raising=False)
    homes = [tmp_path / "one", tmp_path / "two"]
    locations = [WarehouseLocation(warehouse.host, warehouse.port, warehouse.login, dep.default_database(h),
                                   warehouse.kind) for h in homes]
    try:
        assert [_run(home) for home in homes] == [0, 0]  # one after the other, same server: both start
        assert [_row(loc)[1] for loc in locations] == [str(h) for h in homes]
        migrate = [c for c in no_processes if c[:3] == ["airflow", "db", "migrate"]]
        assert [c[-1] for c in migrate] == [f"TRIBUTARY_WAREHOUSE_DB={loc.database}" for loc in locations]
    finally:
        for location in locations:
            drop_database(location)
