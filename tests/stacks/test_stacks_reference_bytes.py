"""Byte equality with @stacks/transactions: Clarity values, addresses, signed contract-call and
contract-deploy transactions (RFC 6979 makes the signatures reproducible)."""

from __future__ import annotations

from typing import Any

import pytest

from tributary.stacks.clarity import from_json
from tributary.stacks.transactions import (
    PostConditionMode,
    PrivateKey,
    SignedTransaction,
    make_contract_call,
    make_contract_deploy,
    sender_address,
)

COMPRESSED_KEY = "753b7cc01a1a2e86221266a154af739463fce51219d97e4f856cd7200c3bd2a601"
UNCOMPRESSED_KEY = "edf9aee84d9b7abc145504dde6726c64f369d37ee34ded868fabd876c26570bc"
DEPLOYER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
COUNTER_SOURCE = "(define-data-var n uint u0)\n(define-public (inc) (ok (var-set n (+ (var-get n) u1))))\n"

VALUES: list[dict[str, Any]] = [
    {"type": "int", "value": "-170141183460469231731687303715884105728"},
    {"type": "uint", "value": "340282366920938463463374607431768211455"},
    {"type": "buffer", "value": "0x00ff10"},
    {"type": "bool", "value": True}, {"type": "bool", "value": False},
    {"type": "principal", "value": DEPLOYER},
    {"type": "principal", "value": f"{DEPLOYER}.token"},
    {"type": "ok", "value": {"type": "uint", "value": "1"}},
    {"type": "err", "value": {"type": "string-ascii", "value": "nope"}},
    {"type": "none"},
    {"type": "some", "value": {"type": "int", "value": "42"}},
    {"type": "list", "value": [{"type": "uint", "value": "1"}, {"type": "uint", "value": "2"}]},
    {"type": "tuple", "value": {"zeta": {"type": "bool", "value": True}, "alpha": {"type": "none"},
                                "mid-name": {"type": "uint", "value": "9"}}},
    {"type": "string-ascii", "value": "hello \"world\""},
    {"type": "string-utf8", "value": "déjà vu 🚀"},
]


@pytest.mark.devnet
def test_clarity_values_serialize_exactly_like_stacks_transactions(reference: Any) -> None:
    expected = reference([{"kind": "cv", "value": v} for v in VALUES])
    for value, ref in zip(VALUES, expected, strict=True):
        assert from_json(value).hex() == ref["hex"], value


@pytest.mark.devnet
@pytest.mark.parametrize("key", [COMPRESSED_KEY, UNCOMPRESSED_KEY], ids=["compressed", "uncompressed"])
@pytest.mark.parametrize("network", ["testnet", "mainnet"])
def test_addresses_match_stacks_transactions(reference: Any, key: str, network: str) -> None:
    (ref,) = reference([{"kind": "address", "key": key, "network": network}])
    assert PrivateKey.from_hex(key).address(network) == ref["address"]


CALLS = [
    ("testnet", COMPRESSED_KEY, 0, 180, "deny", [VALUES[1], VALUES[5]]),
    ("testnet", COMPRESSED_KEY, 7, 2000, "allow", VALUES),
    ("mainnet", UNCOMPRESSED_KEY, 123456789, 10**9, "deny", [VALUES[12]]),
    ("mainnet", COMPRESSED_KEY, 2**40, 0, "allow", []),
]


@pytest.mark.devnet
@pytest.mark.parametrize(("network", "key", "nonce", "fee", "mode", "args"), CALLS)
def test_signed_contract_calls_are_byte_identical(reference: Any, network: str, key: str, nonce: int, fee: int,
                                                  mode: str, args: list[dict[str, Any]]) -> None:
    (ref,) = reference([{"kind": "call", "key": key, "network": network, "nonce": nonce, "fee": fee,
                         "contract_address": DEPLOYER, "contract_name": "counter", "function": "increment",
                         "args": args, "post_condition_mode": mode}])
    tx = make_contract_call(PrivateKey.from_hex(key), network, contract_address=DEPLOYER, contract_name="counter",
                            function="increment", args=[from_json(a) for a in args], nonce=nonce, fee=fee,
                            post_condition_mode=PostConditionMode.ALLOW if mode == "allow" else PostConditionMode.DENY)
    assert tx.raw.hex() == ref["hex"]
    assert tx.txid == ref["txid"]
    assert tx.verify()
    assert sender_address(tx.raw)[:2] == ("ST" if network == "testnet" else "SP")


@pytest.mark.devnet
@pytest.mark.parametrize(("network", "key", "version"), [("testnet", COMPRESSED_KEY, 2), ("testnet", COMPRESSED_KEY, 3),
                                                          ("mainnet", UNCOMPRESSED_KEY, 4)])
def test_signed_contract_deploys_are_byte_identical(reference: Any, network: str, key: str, version: int) -> None:
    (ref,) = reference([{"kind": "deploy", "key": key, "network": network, "nonce": 3, "fee": 5000,
                         "contract_name": "counter", "source": COUNTER_SOURCE, "clarity_version": version}])
    tx = make_contract_deploy(PrivateKey.from_hex(key), network, contract_name="counter", source=COUNTER_SOURCE,
                              nonce=3, fee=5000, clarity_version=version)
    assert tx.raw.hex() == ref["hex"]
    assert tx.txid == ref["txid"]


@pytest.mark.unit
def test_a_tampered_signature_no_longer_verifies() -> None:
    tx = make_contract_call(PrivateKey.from_hex(COMPRESSED_KEY), "testnet", contract_address=DEPLOYER,
                            contract_name="counter", function="increment", args=[], nonce=0, fee=1)
    bad = SignedTransaction(tx.unsigned, tx.signature[:10] + bytes([tx.signature[10] ^ 1]) + tx.signature[11:])
    assert tx.verify() and not bad.verify()
    assert "753b7cc0" not in repr(PrivateKey.from_hex(COMPRESSED_KEY))
