"""Secrets never reach events or alerts in clear text."""

from __future__ import annotations

import pytest

from tributary.core.masking import mask_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "secret"), [
    ("could not connect to postgresql://svc:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
    ("401 with Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2lnbmF0dXJl rejected", "eyJhbGciOiJIUzI1NiJ9"),
    ('config {"password": "hunter2", "user": "x"}', "hunter2"),
    ("api_key=AKIA1234567 private_key=5Kb8kLf9", "AKIA1234567"),
    ("api_key=AKIA1234567 private_key=5Kb8kLf9", "5Kb8kLf9"),
])
def test_secrets_are_masked(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert "***" in masked


def test_chain_identifiers_stay_readable() -> None:
    txid = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    assert mask_text(f"txn-mempool-conflict {txid}") == f"txn-mempool-conflict {txid}"
