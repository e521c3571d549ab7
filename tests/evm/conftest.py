"""Fixtures of the EVM tests: one real anvil node per session and the Connection pointing at it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from devnets.evm.anvil import AnvilHandle, anvil_binary, start_anvil


def _anvil_available() -> bool:
    try:
        anvil_binary()
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilHandle]:
    if not _anvil_available():
        pytest.skip("anvil is not installed: run `npm ci` at the project root")
    node = start_anvil()
    yield node
    node.stop()


def conn_json(url: str, private_key: str | None, **extra: Any) -> str:
    conn: dict[str, Any] = {"conn_type": "tributary_evm", "host": url,
                            "extra": {"chain_id": 31337, "poll_interval": 0.05, "fee_cache_seconds": 0.5, **extra}}
    if private_key:
        conn["password"] = private_key
    return json.dumps(conn)


@pytest.fixture(scope="session")
def evm_env(anvil: AnvilHandle, warehouse: Any) -> Iterator[dict[str, str]]:
    """Session-wide Connections: ``tributary_evm`` (account 0), ``tributary_evm_1`` (account 1), and
    ``tributary_evm_reader`` (no key). The warehouse fixture sets ``tributary_warehouse``."""
    env = {
        "AIRFLOW_CONN_TRIBUTARY_EVM": conn_json(anvil.url, anvil.accounts[0].private_key),
        "AIRFLOW_CONN_TRIBUTARY_EVM_1": conn_json(anvil.url, anvil.accounts[1].private_key),
        "AIRFLOW_CONN_TRIBUTARY_EVM_2": conn_json(anvil.url, anvil.accounts[2].private_key),
        "AIRFLOW_CONN_TRIBUTARY_EVM_3": conn_json(anvil.url, anvil.accounts[3].private_key),
        "AIRFLOW_CONN_TRIBUTARY_EVM_READER": conn_json(anvil.url, None),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def db(evm_env: dict[str, str]) -> Iterator[Any]:
    """A psycopg 3 connection (through the Postgres provider) with the schema applied."""
    from tributary.storage.warehouse import WarehouseHook

    conn = WarehouseHook().get_conn()
    yield conn
    conn.rollback()
    conn.close()


def make_sender(conn_id: str = "tributary_evm") -> Any:
    from tributary.evm.hook import EvmHook
    from tributary.evm.transactions import TransactionSender
    from tributary.storage.warehouse import WarehouseHook

    return TransactionSender(EvmHook(conn_id), WarehouseHook().get_conn)


@pytest.fixture(scope="session")
def registry(evm_env: dict[str, str]) -> str:
    """A Registry deployed once for the session (account 0, outside the deployments registry)."""
    from tributary.evm.contracts import load_artifact
    from tributary.evm.transactions import TxRequest

    sender = make_sender()
    artifact = load_artifact("Registry")
    row = sender.submit(TxRequest(idempotency_key="fixture:registry", kind="deploy", data=artifact.bytecode,
                                  contract_name="Registry"))
    row = sender.wait(row)
    return row["contract_address"]
