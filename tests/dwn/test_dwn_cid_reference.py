"""tributary.dwn.cid against dwn-sdk-js itself (devnets/dwn/reference.mjs runs ``Cid.computeCid`` and
``Cid.computeDagPbCidFromBytes`` of the installed SDK), including a DAG deeper than one level."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tributary.dwn.cid import CHUNK_SIZE, MAX_CHILDREN, compute_cid, compute_data_cid

pytestmark = pytest.mark.devnet

DEVNET = Path(__file__).resolve().parents[2] / "devnets" / "dwn"
LENGTHS = [1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE,
           MAX_CHILDREN * CHUNK_SIZE, MAX_CHILDREN * CHUNK_SIZE + 1]  # the last one needs two levels
OBJECTS = [{"interface": "Records", "method": "Query", "filter": {"protocol": "https://x.example/p"},
            "messageTimestamp": "2026-11-27T05:00:00.000000Z"},
           {"a": 1, "bb": [True, "x", None], "ccc": {"z": -5, "y": 2**40}}]


def _pattern(length: int) -> bytes:
    return bytes(i % 251 for i in range(251)) * (length // 251) + bytes(range(length % 251))


def test_cids_equal_those_of_dwn_sdk_js() -> None:
    cases = [{"length": n} for n in LENGTHS] + [{"object": o} for o in OBJECTS]
    out = subprocess.run(["node", "reference.mjs"], cwd=DEVNET, input=json.dumps(cases), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reference = json.loads(out.stdout)
    ours = [{"dataCid": compute_data_cid(_pattern(n))} for n in LENGTHS] + [{"cid": compute_cid(o)} for o in OBJECTS]
    assert ours == reference
