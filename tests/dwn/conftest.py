"""Fixtures of the DWN tests: two real ``@web5/dwn-server`` 0.6.1 peers (devnets/dwn, SQLite stores in
temporary data dirs) for the whole session, and a fresh tenant (did:key) per test exposed as two
``tributary_dwn`` Connections, one per peer.

The servers need ``npm ci`` in devnets/dwn; without it these tests fail (they do not skip).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dwn_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    from devnets.dwn.process import installed, start_peers

    if not installed():
        pytest.fail(f"@web5/dwn-server is not installed: run `npm ci` in {ROOT / 'devnets' / 'dwn'}")
    servers = start_peers(2, tmp_path_factory.mktemp("dwn"))
    yield servers
    for server in servers:
        server.stop()


@dataclass
class Tenant:
    key: Any
    source_conn: str
    target_conn: str

    @property
    def did(self) -> str:
        return self.key.did


def connection_env(conn_id: str, url: str, key: Any) -> tuple[str, str]:
    return (f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps({"conn_type": "tributary_dwn", "host": url, "password": key.seed_hex(),
                        "extra": {"tenant": key.did, "timeout": 20,
                                  "allowed_dags": ["dwn_data_replication", "did_issuance"]}}))


@pytest.fixture
def tenant(dwn_peers: list[Any], monkeypatch: pytest.MonkeyPatch) -> Tenant:
    """A fresh did:key tenant with a Connection to each peer (``source_conn`` -> peer 0, ``target_conn`` -> 1)."""
    from tributary.dwn.identity import DidKey

    key = DidKey.generate()
    suffix = secrets.token_hex(4)
    names = (f"dwn_src_{suffix}", f"dwn_dst_{suffix}")
    for name, server in zip(names, dwn_peers, strict=True):
        monkeypatch.setenv(*connection_env(name, server.url, key))
    return Tenant(key, *names)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata DB (in the tests' AIRFLOW_HOME, set by tests/conftest.py)."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def project_dags(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``dag.test()`` syncs the DAG's bundle to the metadata DB: make the project's dags/ folder that bundle."""
    folder = ROOT / "dags"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "tributary-project-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(folder), "refresh_interval": 0}}]))
    return folder
