"""Clarity values and c32 addresses: round trips, typed JSON, ABI type checks (pure, no node)."""

from __future__ import annotations

import pytest

from tributary.stacks.c32 import AddressError, decode_address, encode_address, split_contract_id
from tributary.stacks.clarity import (
    CV,
    ClarityError,
    check_function_args,
    check_type,
    deserialize,
    from_json,
    to_python,
    to_repr,
)

pytestmark = pytest.mark.unit

DEPLOYER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
DEPLOYER_HASH = bytes.fromhex("6d78de7b0625dfbfc16c3a8a5735f6dc3dc3f2ce")

ALL_TYPES = [
    CV.int(0), CV.int(-(2**127)), CV.int(2**127 - 1), CV.uint(0), CV.uint(2**128 - 1),
    CV.buffer(b""), CV.buffer(bytes(range(256))), CV.bool(True), CV.bool(False),
    CV.principal(DEPLOYER), CV.principal(f"{DEPLOYER}.counter"),
    CV.ok(CV.uint(5)), CV.err(CV.int(-1)), CV.none(), CV.some(CV.ascii("x")),
    CV.list([]), CV.list([CV.uint(1), CV.uint(2)]),
    CV.tuple({"b": CV.bool(True), "a-1": CV.none(), "z?": CV.list([CV.utf8("é")])}),
    CV.ascii(""), CV.ascii("hello world"), CV.utf8("Grüße, 世界 🚀"),
]


@pytest.mark.parametrize("value", ALL_TYPES, ids=lambda v: to_repr(v)[:40])
def test_every_clarity_type_round_trips_through_bytes_and_typed_json(value: CV) -> None:
    assert deserialize(value.serialize()) == value
    assert deserialize(value.hex()) == value
    assert from_json(value.to_json()) == value


def test_known_encodings_match_the_sip005_layout() -> None:
    assert CV.uint(5).hex() == "0x0100000000000000000000000000000005"
    assert CV.int(-3).hex() == "0x00fffffffffffffffffffffffffffffffd"
    assert CV.principal(DEPLOYER).hex() == "0x051a" + DEPLOYER_HASH.hex()
    assert CV.some(CV.bool(False)).hex() == "0x0a04"
    # tuple fields are written in sorted order whatever the input order
    assert CV.tuple({"b": CV.bool(True), "a": CV.bool(False)}).hex() == "0x0c00000002016104016203"


def test_typed_json_accepts_strings_and_numbers_and_aliases() -> None:
    assert from_json({"type": "uint", "value": "5"}) == from_json({"type": "uint128", "value": 5}) == CV.uint(5)
    assert from_json({"type": "true"}) == CV.bool(True)
    assert from_json({"type": "buffer", "value": "0xdead"}) == CV.buffer(b"\xde\xad")
    assert from_json({"type": "optional", "value": {"type": "int", "value": "-2"}}) == CV.some(CV.int(-2))


@pytest.mark.parametrize("bad", [
    {"type": "uint", "value": "-1"}, {"type": "uint", "value": "five"}, {"type": "int", "value": str(2**127)},
    {"type": "bool", "value": "yes"}, {"type": "buffer", "value": "xyz"}, {"type": "principal", "value": "SP123"},
    {"type": "string-ascii", "value": "héllo"}, {"type": "map", "value": 1}, {"value": 1}, "uint 5",
    {"type": "principal", "value": DEPLOYER[:-1] + "N"},  # checksum
])
def test_invalid_typed_json_is_refused(bad: object) -> None:
    with pytest.raises(ClarityError):
        from_json(bad)


@pytest.mark.parametrize("data", ["0x01000000", "0x0f", "0x0100000000000000000000000000000005ff", "0x0b00000002"])
def test_truncated_unknown_or_trailing_bytes_are_refused(data: str) -> None:
    with pytest.raises(ClarityError):
        deserialize(data)


def test_plain_python_and_repr_views() -> None:
    value = CV.ok(CV.tuple({"count": CV.uint(7), "who": CV.principal(DEPLOYER), "memo": CV.some(CV.buffer(b"\x01"))}))
    assert to_python(value) == {"ok": {"count": 7, "who": DEPLOYER, "memo": "0x01"}}
    assert to_repr(value) == f"(ok {{count: u7, memo: (some 0x01), who: '{DEPLOYER}}})"


def test_c32_addresses_encode_decode_and_check_their_checksum() -> None:
    assert encode_address(26, DEPLOYER_HASH) == DEPLOYER
    assert decode_address(DEPLOYER) == (26, DEPLOYER_HASH)
    assert encode_address(22, DEPLOYER_HASH).startswith("SP")
    assert encode_address(26, bytes(20)) == "ST000000000000000000002AMW42H"  # leading zero bytes -> '0's
    with pytest.raises(AddressError):
        decode_address("ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGN")
    assert split_contract_id(f"{DEPLOYER}.counter") == (DEPLOYER, "counter")
    with pytest.raises(AddressError):
        split_contract_id(f"{DEPLOYER}.1bad")


COUNTER_ABI = {"functions": [
    {"name": "increment", "access": "public", "args": [{"name": "by", "type": "uint128"}],
     "outputs": {"type": {"response": {"ok": "uint128", "error": "uint128"}}}},
    {"name": "get-count", "access": "read_only", "args": [], "outputs": {"type": "uint128"}},
    {"name": "transfer", "access": "public", "args": [
        {"name": "amount", "type": "uint128"}, {"name": "to", "type": "principal"},
        {"name": "memo", "type": {"optional": {"buffer": {"length": 34}}}},
        {"name": "tags", "type": {"list": {"type": {"string-ascii": {"length": 3}}, "length": 2}}},
        {"name": "meta", "type": {"tuple": [{"name": "k", "type": "int128"}]}}],
     "outputs": {"type": {"response": {"ok": "bool", "error": "uint128"}}}},
]}


def test_arguments_are_checked_against_the_contract_interface() -> None:
    check_function_args(COUNTER_ABI, "increment", [CV.uint(1)], access=("public",))
    good = [CV.uint(1), CV.principal(DEPLOYER), CV.none(), CV.list([CV.ascii("abc")]), CV.tuple({"k": CV.int(1)})]
    check_function_args(COUNTER_ABI, "transfer", good, access=("public",))
    cases = [
        ("increment", [CV.int(1)], "expected uint128"),
        ("increment", [], "takes 1 argument"),
        ("get-count", [], "is read_only"),
        ("nope", [], "no function 'nope'"),
        ("transfer", [*good[:2], CV.some(CV.buffer(bytes(35))), *good[3:]], "exceeds the maximum 34"),
        ("transfer", [*good[:3], CV.list([CV.ascii("abcd")]), good[4]], "exceeds the maximum 3"),
        ("transfer", [*good[:4], CV.tuple({"j": CV.int(1)})], "tuple fields"),
    ]
    for function, args, message in cases:
        with pytest.raises(ClarityError, match=message):
            check_function_args(COUNTER_ABI, function, args, access=("public",))
    with pytest.raises(ClarityError, match="expected bool"):
        check_type(CV.uint(1), "bool")
