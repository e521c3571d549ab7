"""Fixtures of the Stacks tests: the devnet (clarinet-sdk simnet behind devnets/stacks/server.mjs),
fresh signing keys exposed as ``tributary_stacks`` Connections, and an Airflow metadata DB for ``dag.test()``.

The devnet needs ``npm ci`` in devnets/stacks; without it these tests fail (they do not skip), so a
missing install step cannot pass unnoticed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVNET_DIR = ROOT / "devnets" / "stacks"
# Clarinet's public devnet deployer key (compressed): a well-known test key, never a real one.
DEPLOYER_KEY = "753b7cc01a1a2e86221266a154af739463fce51219d97e4f856cd7200c3bd2a601"
DEPLOYER_ADDRESS = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"


def new_key() -> str:
    """A random compressed private key (stacks.js form: 32 bytes + 01)."""
    return secrets.token_hex(32) + "01"


def stacks_reference(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Encodings of ``cases`` made by @stacks/transactions (devnets/stacks/reference.mjs)."""
    out = subprocess.run(["node", "reference.mjs"], cwd=DEVNET_DIR, input=json.dumps(cases), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def reference() -> Any:
    """``reference(cases)``: encodings made by @stacks/transactions (see :func:`stacks_reference`)."""
    from devnets.stacks.process import installed

    if not installed():
        pytest.fail(f"the Stacks devnet is not installed: run `npm ci` in {DEVNET_DIR}")
    return stacks_reference


@pytest.fixture(scope="session")
def stacks_devnet() -> Iterator[Any]:
    from devnets.stacks.process import installed, start_devnet

    if not installed():
        pytest.fail(f"the Stacks devnet is not installed: run `npm ci` in {DEVNET_DIR}")
    node = start_devnet()
    yield node
    node.stop()


@pytest.fixture
def stacks_conn(stacks_devnet: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A ``tributary_stacks`` Connection with a fresh key (its own nonces and contract namespace)."""
    from tributary.stacks.transactions import PrivateKey

    key = new_key()
    conn_id = f"stacks_test_{secrets.token_hex(4)}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "tributary_stacks", "host": stacks_devnet.url, "password": key,
         "extra": {"network": "testnet", "timeout": 10, "fee": 3000,
                   "allowed_dags": ["stacks_contract_execution"]}}))
    return {"conn_id": conn_id, "key": key, "address": PrivateKey.from_hex(key).address("testnet"),
            "url": stacks_devnet.url}


@pytest.fixture
def stacks_ledger(warehouse: Any) -> Iterator[Any]:
    """A psycopg2 connection to the test warehouse with the migrations (stacks_transactions) applied."""
    import psycopg2

    from tributary.storage.warehouse import apply_migrations

    conn = psycopg2.connect(warehouse.dsn())
    apply_migrations(conn)
    yield conn
    conn.rollback()
    conn.close()

