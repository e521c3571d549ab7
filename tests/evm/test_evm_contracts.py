"""Committed contract artifacts match their sources; ABI checks reject bad arguments with a reason."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tributary.evm import contracts
from tributary.evm.errors import InvalidArguments

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "include" / "contracts").glob("*.sol"))


@pytest.mark.unit
def test_every_source_has_an_artifact_built_from_its_current_text() -> None:
    assert {p.stem for p in SOURCES} == {p.stem for p in (ROOT / "include/contracts/build").glob("*.json")}
    for source in SOURCES:
        artifact = json.loads((ROOT / "include/contracts/build" / f"{source.stem}.json").read_text())
        assert artifact["sourceSha256"] == hashlib.sha256(source.read_bytes()).hexdigest(), (
            f"{source.name} changed: run `node scripts/build_contracts.mjs`")
        assert artifact["bytecode"].startswith("0x60") and artifact["abi"]
        assert artifact["compiler"]["version"].startswith("0.8.")


@pytest.mark.devnet
@pytest.mark.skipif(not (ROOT / "node_modules" / "solc").exists() or not shutil.which("node"),
                    reason="solc-js not installed (npm ci)")
def test_a_fresh_offline_build_reproduces_the_committed_artifacts() -> None:
    out = subprocess.run(["node", "scripts/build_contracts.mjs", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.unit
def test_arguments_are_normalised_from_json() -> None:
    token = contracts.load_artifact("TributaryToken")
    entry = token.function("transfer", ["0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "1000000000000000000000"])
    data = contracts.encode_call(entry, ["0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "1000000000000000000000"],
                                 "transfer")
    assert data.startswith("0xa9059cbb")  # transfer(address,uint256)
    assert len(data) == 2 + 8 + 128


@pytest.mark.unit
@pytest.mark.parametrize(("function", "args", "fragment"), [
    ("transfer", ["0x1234", 1], "not an address"),
    ("transfer", ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", -1], "out of range for uint256"),
    ("transfer", ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "ten"], "expected uint256"),
    ("transfer", ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"], "takes 2 arguments, got 1"),
    ("mintBatch", ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", 1], "expected an array"),
    ("burn", [], "has no function 'burn'"),
])
def test_invalid_arguments_are_rejected_with_the_reason(function: str, args: list, fragment: str) -> None:
    token = contracts.load_artifact("TributaryToken")
    with pytest.raises(InvalidArguments, match=fragment) as info:
        entry = token.function(function, args)
        contracts.encode_call(entry, args, function)
    assert info.value.reason == "evm:abi:invalid_args"


@pytest.mark.unit
def test_bytes32_needs_exactly_32_bytes() -> None:
    registry = contracts.load_artifact("Registry")
    entry = registry.function("record", ["0x01", "x"])
    with pytest.raises(InvalidArguments, match="exactly 32 bytes"):
        contracts.encode_call(entry, ["0x01", "x"], "record")


@pytest.mark.unit
def test_unknown_contract_names_list_the_available_ones() -> None:
    with pytest.raises(InvalidArguments, match="Registry"):
        contracts.load_artifact("Nope")
