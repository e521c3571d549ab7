"""Compiled contract artifacts (``include/contracts/build/<Name>.json``) and ABI checks.

Arguments arrive as JSON (REST conf, UI params): integers may be JSON numbers or decimal / 0x
strings (JSON cannot carry uint256 safely), bytes are 0x hex, addresses are hex (any case). They are
checked against the ABI and encoded with eth-abi *before* anything is signed; a mismatch raises
:class:`~tributary.evm.errors.InvalidArguments` saying which argument and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tributary.evm.errors import InvalidArguments

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_INT = re.compile(r"^(u?)int(\d*)$")
_BYTES_N = re.compile(r"^bytes(\d+)$")
_ARRAY = re.compile(r"^(.*)\[(\d*)\]$")


def contracts_dir() -> Path:
    from tributary.storage.warehouse import include_dir

    return include_dir() / "contracts"


def source_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source_sha256: str
    compiler_version: str
    source_name: str

    @property
    def artifact_sha256(self) -> str:
        """Identity of the build: the source hash plus the exact bytecode (compiler settings included)."""
        return hashlib.sha256(f"{self.source_sha256}:{self.bytecode}".encode()).hexdigest()

    def function(self, name: str, args: list[Any]) -> dict[str, Any]:
        """The ABI entry of function ``name`` taking ``len(args)`` inputs (overloads by arity)."""
        candidates = [e for e in self.abi if e.get("type") == "function" and e.get("name") == name]
        if not candidates:
            known = sorted({e["name"] for e in self.abi if e.get("type") == "function"})
            raise InvalidArguments(f"{self.name} has no function {name!r}; functions: {', '.join(known)}")
        matching = [e for e in candidates if len(e.get("inputs", [])) == len(args)]
        if len(matching) != 1:
            arities = sorted(len(e.get("inputs", [])) for e in candidates)
            raise InvalidArguments(f"{self.name}.{name} takes {' or '.join(map(str, arities))} arguments,"
                                   f" got {len(args)}")
        return matching[0]

    def constructor(self) -> dict[str, Any]:
        for entry in self.abi:
            if entry.get("type") == "constructor":
                return entry
        return {"type": "constructor", "inputs": [], "stateMutability": "nonpayable"}

    def events(self) -> dict[str, dict[str, Any]]:
        """topic0 (0x hex) -> event ABI."""
        from eth_utils import keccak

        out = {}
        for entry in self.abi:
            if entry.get("type") == "event" and not entry.get("anonymous"):
                signature = f"{entry['name']}({','.join(abi_type(i) for i in entry['inputs'])})"
                out["0x" + keccak(text=signature).hex()] = entry
        return out


def load_artifact(name: str, directory: Path | None = None) -> Artifact:
    if not _NAME.match(name or ""):
        raise InvalidArguments(f"not a contract name: {name!r}")
    return _load(name, str(directory or contracts_dir()))


@cache
def _load(name: str, directory: str) -> Artifact:
    path = Path(directory) / "build" / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in (Path(directory) / "build").glob("*.json"))
        raise InvalidArguments(f"no compiled contract {name!r}; available: {', '.join(available) or 'none'}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return Artifact(name=data["contractName"], abi=data["abi"], bytecode=data["bytecode"],
                    source_sha256=data["sourceSha256"], compiler_version=data["compiler"]["version"],
                    source_name=data["sourceName"])


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type string of an ABI parameter (tuples expanded)."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + kind[len("tuple"):]
    return kind


def is_read_only(entry: dict[str, Any]) -> bool:
    return entry.get("stateMutability") in ("view", "pure")


# --------------------------------------------------------------------------- argument normalisation
def _int(value: Any, kind: str, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidArguments(f"{where}: expected {kind}, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", value.strip()):
        text = value.strip()
        number = int(text, 16) if text.lstrip("-").startswith("0x") else int(text)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise InvalidArguments(f"{where}: expected {kind} (integer or decimal/0x string), got {value!r:.60}")
    unsigned, bits_text = _INT.match(kind).groups()
    bits = int(bits_text or 256)
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= number <= high:
        raise InvalidArguments(f"{where}: {number} is out of range for {kind}")
    return number


def _bytes(value: Any, kind: str, where: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"0x([0-9a-fA-F]{2})*", value):
        raise InvalidArguments(f"{where}: expected {kind} as 0x-prefixed hex, got {value!r:.60}")
    raw = bytes.fromhex(value[2:])
    size = _BYTES_N.match(kind)
    if size and len(raw) != int(size.group(1)):
        raise InvalidArguments(f"{where}: {kind} needs exactly {size.group(1)} bytes, got {len(raw)}")
    return raw


def normalize_arg(param: dict[str, Any], value: Any, where: str) -> Any:
    kind = param["type"]
    array = _ARRAY.match(kind)
    if array:
        if not isinstance(value, list):
            raise InvalidArguments(f"{where}: expected an array ({kind}), got {type(value).__name__}")
        if array.group(2) and len(value) != int(array.group(2)):
            raise InvalidArguments(f"{where}: {kind} needs {array.group(2)} items, got {len(value)}")
        inner = {**param, "type": array.group(1)}
        return [normalize_arg(inner, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "tuple":
        components = param["components"]
        if isinstance(value, dict):
            missing = [c["name"] for c in components if c["name"] not in value]
            if missing:
                raise InvalidArguments(f"{where}: missing fields {missing}")
            value = [value[c["name"]] for c in components]
        if not isinstance(value, list) or len(value) != len(components):
            raise InvalidArguments(f"{where}: expected a tuple of {len(components)} items")
        return tuple(normalize_arg(c, v, f"{where}.{c.get('name') or i}")
                     for i, (c, v) in enumerate(zip(components, value, strict=True)))
    if _INT.match(kind):
        return _int(value, kind, where)
    if kind == "address":
        from eth_utils import is_address, to_checksum_address

        if not isinstance(value, str) or not is_address(value):
            raise InvalidArguments(f"{where}: not an address: {value!r:.60}")
        return to_checksum_address(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidArguments(f"{where}: expected true/false, got {value!r:.60}")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidArguments(f"{where}: expected a string, got {type(value).__name__}")
        return value
    if kind == "bytes" or _BYTES_N.match(kind):
        return _bytes(value, kind, where)
    raise InvalidArguments(f"{where}: unsupported ABI type {kind}")


def normalize_args(entry: dict[str, Any], args: list[Any], label: str) -> list[Any]:
    inputs = entry.get("inputs", [])
    if len(inputs) != len(args):
        raise InvalidArguments(f"{label} takes {len(inputs)} arguments, got {len(args)}")
    return [normalize_arg(p, a, f"{label} argument {i} ({p.get('name') or p['type']}: {p['type']})")
            for i, (p, a) in enumerate(zip(inputs, args, strict=True))]


def encode_call(entry: dict[str, Any], args: list[Any], label: str) -> str:
    """0x calldata (selector + encoded arguments); raises InvalidArguments before anything is signed."""
    from eth_abi import encode
    from eth_utils import keccak

    values = normalize_args(entry, args, label)
    types = [abi_type(p) for p in entry.get("inputs", [])]
    try:
        encoded = encode(types, values)
    except Exception as exc:
        raise InvalidArguments(f"{label}: arguments do not encode as ({','.join(types)}): {exc}") from None
    if entry.get("type") == "constructor":
        return "0x" + encoded.hex()
    selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
    return "0x" + (selector + encoded).hex()


def to_jsonable(value: Any) -> Any:
    """Decoded ABI values as JSON: bytes -> 0x hex, tuples -> lists, ints beyond 2**53 -> strings."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > 2**53:
        return str(value)
    return value


def _checksummed(kind: str, value: Any) -> Any:
    """eth-abi decodes addresses in lowercase; show them checksummed (EIP-55), also inside arrays."""
    from eth_utils import to_checksum_address

    if kind == "address" and isinstance(value, str):
        return to_checksum_address(value)
    array = _ARRAY.match(kind)
    if array and isinstance(value, list | tuple):
        return [_checksummed(array.group(1), v) for v in value]
    return value


def decode_output(entry: dict[str, Any], data: str) -> Any:
    """Decode ``eth_call`` output: one output -> the value, several -> a list (JSON-able)."""
    from eth_abi import decode

    outputs = entry.get("outputs", [])
    values = decode([abi_type(p) for p in outputs], bytes.fromhex(data[2:] if data.startswith("0x") else data))
    result = to_jsonable([_checksummed(abi_type(p), v) for p, v in zip(outputs, values, strict=True)])
    return result[0] if len(outputs) == 1 else result


def decode_log(event: dict[str, Any], topics: list[str], data: str) -> dict[str, Any]:
    """Named arguments of a log (indexed ones from the topics; dynamic indexed ones stay hashes)."""
    from eth_abi import decode

    inputs = event["inputs"]
    indexed = [p for p in inputs if p.get("indexed")]
    plain = [p for p in inputs if not p.get("indexed")]
    values = decode([abi_type(p) for p in plain], bytes.fromhex(data[2:])) if plain else ()
    out: dict[str, Any] = {}
    for param, topic in zip(indexed, topics[1:], strict=False):
        kind = abi_type(param)
        if kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
            out[param["name"]] = topic
        else:
            (value,) = decode([kind], bytes.fromhex(topic[2:]))
            out[param["name"]] = _checksummed(kind, value)
    for param, value in zip(plain, values, strict=True):
        out[param["name"]] = _checksummed(abi_type(param), value)
    return {k: to_jsonable(v) for k, v in out.items()}
