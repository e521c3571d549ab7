"""Fixtures shared by tests/did and tests/vc: the did devnet (Pkarr relay + HTTPS did:web server),
a resolver configured for it, a ``tributary_did`` Connection, and the Airflow DB for ``dag.test()``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def did_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from devnets.did.pkarr import PkarrRelay
    from devnets.did.web import DidWebServer

    state = tmp_path_factory.mktemp("did-devnet")
    relay = PkarrRelay(data_dir=state / "pkarr").start()
    web = DidWebServer(state / "www", state / "tls").start()
    yield {"relay": relay, "web": web}
    relay.stop()
    web.stop()


@pytest.fixture
def did_config(did_devnet: dict[str, Any]) -> Any:
    from tributary.did.resolver import ResolverConfig

    # the devnet serves on loopback: allow-listed, as its Connection does (tributary.core.fetch)
    return ResolverConfig(pkarr_url=did_devnet["relay"].url, ca_bundle=did_devnet["web"].ca_bundle, timeout=5,
                          allow_networks=("127.0.0.1/32",))


@pytest.fixture
def did_conn(did_devnet: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A ``tributary_did`` Connection (env) pointing at the devnet, with a fresh key-encryption key."""
    kek = secrets.token_urlsafe(24)
    conn_id = f"did_test_{secrets.token_hex(4)}"
    web = did_devnet["web"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "tributary_did", "host": did_devnet["relay"].url, "password": kek,
         "extra": {"ca_bundle": web.ca_bundle, "web_root": str(web.document_root), "status_base_url": web.url,
                   "timeout": 5, "allow_networks": "127.0.0.1/32",
                   "allowed_dags": ["did_issuance", "identity_verification"]}}))
    return {"conn_id": conn_id, "kek": kek}


@pytest.fixture
def pg3(warehouse: Any) -> Iterator[Any]:
    """A psycopg 3 connection (as ``WarehouseHook.get_conn`` gives tasks), migrations applied."""
    import psycopg

    from tributary.storage.warehouse import apply_migrations

    conn = psycopg.connect(warehouse.dsn())
    apply_migrations(conn)
    yield conn
    conn.rollback()
    conn.close()
