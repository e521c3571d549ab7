"""The deployment registry ``evm_deployments``: one address per (contract name, chain, build)."""

from __future__ import annotations

import json
from typing import Any

_COLUMNS = ("name", "chain_id", "artifact_sha256", "address", "tx_hash", "deployer", "block_number",
            "constructor_args", "deployed_at")


def _row(row: Any) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row, strict=True))
    out["deployed_at"] = out["deployed_at"].isoformat() if out["deployed_at"] else None
    return out


def find(conn: Any, name: str, chain_id: int, artifact_sha256: str | None = None) -> dict[str, Any] | None:
    """The deployment of this build (``artifact_sha256``), or the newest of any build when None."""
    with conn.cursor() as cur:
        if artifact_sha256:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM evm_deployments"
                        " WHERE name = %s AND chain_id = %s AND artifact_sha256 = %s",
                        (name, chain_id, artifact_sha256))
        else:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM evm_deployments WHERE name = %s AND chain_id = %s"
                        " ORDER BY deployed_at DESC LIMIT 1", (name, chain_id))
        row = cur.fetchone()
    conn.commit()
    return _row(row) if row else None


def is_registered(conn: Any, name: str, chain_id: int, address: str) -> bool:
    """Whether ``address`` is a registered deployment (any build) of contract ``name`` on ``chain_id``."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM evm_deployments WHERE name = %s AND chain_id = %s AND lower(address) = lower(%s)",
                    (name, chain_id, address))
        found = cur.fetchone() is not None
    conn.commit()
    return found


def record(conn: Any, *, name: str, chain_id: int, artifact_sha256: str, address: str, tx_hash: str | None,
           deployer: str | None, block_number: int | None, constructor_args: list[Any]) -> dict[str, Any]:
    """Insert the deployment; a repeat keeps the first row (deploying twice is a no-op)."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO evm_deployments (name, chain_id, artifact_sha256, address, tx_hash, deployer,"
                    " block_number, constructor_args) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (name, chain_id, artifact_sha256) DO NOTHING",
                    (name, chain_id, artifact_sha256, address, tx_hash, deployer, block_number,
                     json.dumps(constructor_args)))
    conn.commit()
    return find(conn, name, chain_id, artifact_sha256)
