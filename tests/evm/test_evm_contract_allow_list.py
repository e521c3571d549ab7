"""evm_contract_execution signs calls only to registered deployments unless allow-listed (issue 11 §6):
an ``op`` user passing ``address`` must not make the Connection's key call another team's contract."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.evm.conftest import conn_json, make_sender
from tributary.core.errors import SecurityError

pytestmark = [pytest.mark.postgres, pytest.mark.devnet]


def _ledger_rows(db: Any, key: str) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM evm_transactions WHERE idempotency_key = %s", (key,))
        (count,) = cur.fetchone()
    db.commit()
    return count


def _call(sender: Any, address: str, key: str) -> Any:
    from tributary.evm import execution

    plan = execution.validate(execution.ExecutionRequest(contract="Registry", function="increment", args=[]))
    return execution.execute(plan, sender.hook, sender, address=address, idempotency_key=key)


def test_an_unregistered_address_is_refused_before_signing(registry: str, db: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_VAR_TRIBUTARY_ALLOWED_CONTRACTS", raising=False)
    # the session's Registry was deployed outside the deployments registry: a stranger's contract
    key = f"allow-list:{uuid.uuid4().hex}"
    with pytest.raises(SecurityError, match="not a registered deployment"):
        _call(make_sender(), registry, key)
    assert _ledger_rows(db, key) == 0  # nothing signed, nothing recorded


def test_an_allow_listed_address_is_called(registry: str, db: Any, anvil: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_EVM_ALLOWED",
                       conn_json(anvil.url, anvil.accounts[3].private_key, allowed_contracts=[registry.lower()]))
    key = f"allow-list:{uuid.uuid4().hex}"
    done = _call(make_sender("tributary_evm_allowed"), registry, key)
    assert (done.pending or done.result) and _ledger_rows(db, key) == 1

    # or through the Variable, keyed by Connection
    monkeypatch.setenv("AIRFLOW_VAR_TRIBUTARY_ALLOWED_CONTRACTS", json.dumps({"tributary_evm_3": [registry]}))
    key = f"allow-list:{uuid.uuid4().hex}"
    _call(make_sender("tributary_evm_3"), registry, key)
    assert _ledger_rows(db, key) == 1
