"""A fresh deployment's EVM devnet is ready for ``evm_contract_execution``'s defaults (issue 11 §9):
the run command deploys ``Registry`` from the Connection's account at the first start and registers
it in the deployment registry, where the DAG looks its address up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tributary.cli.devnets import EVM_DEVNET_KEY, EvmDevnet
from tributary.storage.embedded import WarehouseLocation, create_database, drop_database

pytestmark = [pytest.mark.devnet, pytest.mark.postgres]


@pytest.fixture
def registry_db(warehouse: WarehouseLocation) -> Iterator[WarehouseLocation]:
    """A database of its own: the session's shared one may hold other anvils' deployments."""
    from tributary.storage.warehouse import apply_migrations

    location = WarehouseLocation(warehouse.host, warehouse.port, warehouse.login,
                                 f"tributary_evmdefaults_{uuid.uuid4().hex[:8]}", warehouse.kind)
    create_database(location)
    conn = psycopg2.connect(location.dsn())
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    yield location
    drop_database(location)


def _registered(location: WarehouseLocation) -> list[tuple]:
    with psycopg2.connect(location.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, chain_id, address, deployer FROM evm_deployments ORDER BY name")
        return cur.fetchall()


def test_the_evm_devnet_starts_with_registry_deployed_registered_and_owned_by_the_connection(
        registry_db: WarehouseLocation, tmp_path: Path) -> None:
    from eth_account import Account

    from devnets.evm.anvil import start_anvil

    node = start_anvil()
    try:
        devnet = EvmDevnet(tmp_path, int(node.url.rsplit(":", 1)[1]))
        summary = devnet.bootstrap(warehouse_dsn=registry_db.dsn())
        sender = Account.from_key(EVM_DEVNET_KEY).address
        [(name, chain_id, address, deployer)] = _registered(registry_db)
        assert (name, chain_id, deployer) == ("Registry", 31337, sender) and address in summary
        owner = node.rpc("eth_call", [{"to": address, "data": "0x8da5cb5b"}, "latest"])  # owner()
        assert int(owner, 16) == int(sender, 16)  # the DAG's sender owns it: owner-only functions work
        assert devnet.deploy_examples(registry_db.dsn()) == []  # the next start deploys nothing twice
    finally:
        node.stop()
    # A new chain under the same registry (anvil's state file deleted): deployed again, not left dangling.
    node = start_anvil()
    try:
        devnet = EvmDevnet(tmp_path, int(node.url.rsplit(":", 1)[1]))
        assert [d.split(" at ")[0] for d in devnet.deploy_examples(registry_db.dsn())] == ["Registry"]
        [(_, _, again, _)] = _registered(registry_db)
        assert node.rpc("eth_getCode", [again, "latest"]) not in ("0x", "0x0")
    finally:
        node.stop()
