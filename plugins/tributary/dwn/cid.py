"""Content identifiers as dwn-sdk-js computes them.

* message / descriptor CIDs: CIDv1, codec dag-cbor (0x71), sha2-256, base32 (``bafyrei...``):
  ``Cid.computeCid`` in dwn-sdk-js;
* data CIDs: the root of the UnixFS DAG that ``ipfs-unixfs-importer`` (v15, ``cidVersion: 1``) builds:
  fixed 262,144-byte chunks as raw leaves (codec 0x55, ``bafkrei...``); one chunk is its own CID, more
  become a dag-pb (0x70) UnixFS ``file`` node with ``blocksizes`` and links in a balanced layout of at
  most 174 children per node (``Cid.computeDagPbCidFromBytes``).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import dag_cbor

DAG_CBOR = 0x71
DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
CHUNK_SIZE = 262_144
MAX_CHILDREN = 174


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def cid_bytes(codec: int, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).digest()
    return varint(1) + varint(codec) + bytes([SHA2_256, len(digest)]) + digest


def cid_string(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def compute_cid(value: Any) -> str:
    """CIDv1 dag-cbor sha2-256 of a JSON-like value (a descriptor, a message)."""
    return cid_string(cid_bytes(DAG_CBOR, dag_cbor.encode(value)))


def _field_bytes(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def _unixfs_file(blocksizes: list[int]) -> bytes:
    # UnixFS Data: Type = File (2), filesize, repeated blocksizes (no data, default mode omitted)
    out = _field_varint(1, 2) + _field_varint(3, sum(blocksizes))
    for size in blocksizes:
        out += _field_varint(4, size)
    return out


def _dag_pb_node(links: list[tuple[bytes, int]], data: bytes) -> bytes:
    # PBNode, canonical dag-pb order: Links (field 2) then Data (field 1); PBLink: Hash, Name "", Tsize
    out = b""
    for cid, tsize in links:
        link = _field_bytes(1, cid) + _field_bytes(2, b"") + _field_varint(3, tsize)
        out += _field_bytes(2, link)
    return out + _field_bytes(1, data)


def compute_data_cid(data: bytes) -> str:
    """The ``dataCid`` of a RecordsWrite carrying ``data``."""
    chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]
    # (cid, tsize: bytes of the subtree's blocks, file bytes below it)
    nodes = [(cid_bytes(RAW, chunk), len(chunk), len(chunk)) for chunk in chunks]
    if len(nodes) == 1:
        return cid_string(nodes[0][0])
    while len(nodes) > 1:
        parents = []
        for start in range(0, len(nodes), MAX_CHILDREN):
            group = nodes[start:start + MAX_CHILDREN]
            block = _dag_pb_node([(cid, tsize) for cid, tsize, _ in group], _unixfs_file([s for _, _, s in group]))
            parents.append((cid_bytes(DAG_PB, block), len(block) + sum(t for _, t, _ in group),
                            sum(s for _, _, s in group)))
        nodes = parents
    return cid_string(nodes[0][0])
