"""A deployment's state stays together: one deployment id in its home and in its warehouse database.

A local deployment keeps state in two places that only make sense together: its home (AIRFLOW_HOME:
the devnets' chains, the key-encryption key of the DID key store) and its warehouse database (the
stored chain, the DID keys sealed with that KEK, the contract ledgers). A second deployment on the
same PostgreSQL server that reused the first one's database would see another devnet's chain as a
101-block reorg, keys it cannot decrypt and ledger rows that collide with its own. So the first start
writes one id to both places (``<home>/tributary/deployment.json``, and the one-row
``tributary_deployment`` table), and every start compares them before anything else is set up.

Database per home: unless ``TRIBUTARY_WAREHOUSE_DB`` (or ``--warehouse-db``) names one, the
checkout's default home (``.local/airflow``) uses ``tributary`` and any other home
``tributary_<hash of its path>``, so two homes on one server never meet by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tributary.cli.env import PROJECT_ROOT, write_private_file
from tributary.core.errors import PermanentError
from tributary.storage import SYSTEM
from tributary.storage.embedded import WarehouseLocation, create_database, drop_database

log = logging.getLogger("tributary.run")
DEPLOYMENT_FILE = "deployment.json"  # under <home>/tributary
DEFAULT_DATABASE = "tributary"
DEFAULT_HOME = PROJECT_ROOT / ".local" / "airflow"
# A PostgreSQL identifier we can quote safely in CREATE/DROP DATABASE (63 bytes at most).
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class WarehouseOwnedElsewhere(PermanentError):
    """The warehouse database holds another deployment's state: nothing may start on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, system=SYSTEM, reason="deployment_mismatch")


@dataclass(frozen=True)
class Claim:
    deployment_id: str
    database: str
    outcome: str  # created | matched | recorded (home's id written to an empty database) | adopted | reset


def default_database(home: Path) -> str:
    """The warehouse database of ``home`` when none is configured: ``tributary`` for the checkout's
    default home, else ``tributary_`` and 10 hex digits of the SHA-256 of the home's absolute path."""
    home = home.resolve()
    if home == DEFAULT_HOME.resolve():
        return DEFAULT_DATABASE
    return f"{DEFAULT_DATABASE}_{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"


def check_database_name(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"warehouse database name {name!r}: use letters, digits and _ (at most 63, not "
                         "starting with a digit)")
    return name


def home_is_new(home: Path) -> bool:
    """Whether ``home`` was never started: no metadata DB and no generated secrets yet. Call it before
    ``LocalDeployment.environ()``, which creates the secrets."""
    return not ((home / "airflow.db").exists() or (home / "tributary" / "secrets.json").exists())


def read_home_record(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / DEPLOYMENT_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("deployment_id"), str):
        raise WarehouseOwnedElsewhere(f"{path} is not a deployment record (no deployment_id); restore it or "
                                      "delete it together with the rest of the home")
    return record


def read_warehouse_record(conn: Any) -> tuple[bool, dict[str, Any] | None]:
    """(used, record): whether any deployment migrated this database before, and its deployment row."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('tributary_migrations') IS NOT NULL,"
                    " to_regclass('tributary_deployment') IS NOT NULL")
        used, has_table = cur.fetchone()
        record = None
        if has_table:
            cur.execute("SELECT deployment_id, home, created_at FROM tributary_deployment")
            row = cur.fetchone()
            if row is not None:
                record = {"deployment_id": row[0], "home": row[1], "created_at": row[2].isoformat()}
    conn.rollback()  # read only; leave no transaction open
    return bool(used), record


def mismatch(home_id: str | None, warehouse: dict[str, Any] | None, used: bool, new_home: bool) -> str | None:
    """Why this home must not use this warehouse database, or None when it may."""
    if warehouse is not None:
        if home_id is None:
            return (f"it belongs to deployment {warehouse['deployment_id']} (first started from "
                    f"{warehouse['home']} at {warehouse['created_at']}), and this home has no deployment "
                    "id yet: it is a new or re-created home")
        if home_id != warehouse["deployment_id"]:
            return (f"it belongs to deployment {warehouse['deployment_id']} (first started from "
                    f"{warehouse['home']} at {warehouse['created_at']}), this home to deployment {home_id}")
        return None
    if used and home_id is None and new_home:
        # Migrated by a deployment from before deployment ids were recorded, and this home is new.
        return ("it holds the tables of an earlier deployment (from before deployment ids were recorded), "
                "and this home is new")
    return None


def refusal(location: WarehouseLocation, home: Path, reason: str) -> str:
    return (
        f"The warehouse database {location.database!r} ({location.kind} at {location.host}:{location.port}) is not "
        f"this deployment's: {reason}.\n"
        f"Its rows (the stored bitcoin chain, DID keys sealed with another key-encryption key, contract ledgers) "
        f"do not match this home's devnets and keys ({home}), so nothing was started. Either:\n"
        f"  - start fresh on it: add --reset-warehouse (drops and re-creates database {location.database!r}; "
        f"its data is lost);\n"
        f"  - or choose another database: TRIBUTARY_WAREHOUSE_DB=<name> or --warehouse-db <name>;\n"
        f"  - or start the deployment it belongs to (its --home).")


def claim(location: WarehouseLocation, home: Path, *, new_home: bool, reset: bool = False) -> tuple[Claim, list[str]]:
    """Check that ``location``'s database belongs to the deployment of ``home`` (raise
    :class:`WarehouseOwnedElsewhere` if not, before writing anything), apply the migrations, and
    record the deployment id where it is missing. ``reset`` drops and re-creates a database that
    belongs elsewhere instead of refusing. Returns the claim and the migrations applied."""
    import psycopg2

    from tributary.storage.warehouse import apply_migrations

    state_dir = home / "tributary"
    home_record = read_home_record(state_dir)
    home_id = home_record["deployment_id"] if home_record else None
    conn = psycopg2.connect(location.dsn())
    try:
        used, warehouse = read_warehouse_record(conn)
    finally:
        conn.close()
    reason = mismatch(home_id, warehouse, used, new_home)
    outcome = "matched" if warehouse else ("adopted" if used and home_id is None else
                                           "recorded" if home_id else "created")
    if reason is not None:
        if not reset:
            raise WarehouseOwnedElsewhere(refusal(location, home, reason))
        log.warning("--reset-warehouse: dropping database %r (%s)", location.database, reason)
        drop_database(location)
        create_database(location)
        warehouse, outcome = None, "reset"
    deployment_id = home_id or (warehouse or {}).get("deployment_id") or str(uuid.uuid4())
    conn = psycopg2.connect(location.dsn())
    try:
        applied = apply_migrations(conn)
        with conn.cursor() as cur:
            # One row: a second start racing this one on a fresh database inserts nothing and is
            # compared with the winner's id below.
            cur.execute("INSERT INTO tributary_deployment (deployment_id, home) VALUES (%s, %s)"
                        " ON CONFLICT (singleton) DO NOTHING", (deployment_id, str(home)))
            cur.execute("SELECT deployment_id FROM tributary_deployment")
            (recorded,) = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    if recorded != deployment_id:
        raise WarehouseOwnedElsewhere(refusal(location, home, f"deployment {recorded} claimed it at the same time"))
    if home_record is None:
        # After the warehouse row: a home never names a database that does not name it back.
        write_private_file(state_dir / DEPLOYMENT_FILE, json.dumps({
            "deployment_id": deployment_id, "warehouse_database": location.database,
            "created_at": datetime.now(UTC).isoformat()}, indent=1))
    return Claim(deployment_id, location.database, outcome), applied
