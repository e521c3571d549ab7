"""Clarity values: the SIP-005 consensus wire format, typed JSON, and checks against a contract ABI.

Written by hand: PyPI has no maintained library for Stacks 2.x/Nakamoto Clarity values (the
``blockstack*`` packages are the 2017-2020 Stacks 1.0 client and do not implement SIP-005). The bytes
are checked against ``@stacks/transactions`` in ``tests/stacks/test_clarity.py``.

A value is a :class:`CV` ``(type, value)`` whose ``type`` is one of :data:`TYPES`:

=============== ================================= =========================================
type            Python ``value``                  typed JSON ``value``
=============== ================================= =========================================
int, uint       ``int``                           decimal string (or JSON integer on input)
buffer          ``bytes``                         hex string (``0x`` optional on input)
bool            ``bool``                          ``true`` / ``false``
principal       ``"ST..."`` or ``"ST....name"``   the same string
ok, err, some   a :class:`CV`                     a typed JSON value
none            ``None``                          absent / null
list            ``tuple`` of :class:`CV`          a JSON array of typed values
tuple           ``dict`` name -> :class:`CV`      a JSON object of typed values
string-ascii    ``str`` (ASCII)                   the string
string-utf8     ``str``                           the string
=============== ================================= =========================================
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tributary.stacks.c32 import AddressError, check_contract_name, decode_address, encode_address

# Type prefixes of the wire format (SIP-005, "Clarity value representation").
INT, UINT, BUFFER, TRUE, FALSE, PRINCIPAL_STANDARD, PRINCIPAL_CONTRACT = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
RESPONSE_OK, RESPONSE_ERR, OPTIONAL_NONE, OPTIONAL_SOME = 0x07, 0x08, 0x09, 0x0A
LIST, TUPLE, STRING_ASCII, STRING_UTF8 = 0x0B, 0x0C, 0x0D, 0x0E

TYPES = ("int", "uint", "buffer", "bool", "principal", "ok", "err", "none", "some", "list", "tuple",
         "string-ascii", "string-utf8")
_INT_MIN, _INT_MAX, _UINT_MAX = -(2**127), 2**127 - 1, 2**128 - 1
MAX_VALUE_SIZE = 1024 * 1024  # Clarity's MAX_VALUE_SIZE
_MAX_DEPTH = 32  # Clarity's MAX_TYPE_DEPTH
_CLARITY_NAME = re.compile(r"^[a-zA-Z]([a-zA-Z0-9]|[-_!?+<>=/*])*$|^[-+=/*]$|^[<>]=?$")


def check_name(name: str) -> str:
    """A ClarityName (function, tuple field): at most 128 characters of the node's grammar."""
    if not (isinstance(name, str) and len(name) <= 128 and _CLARITY_NAME.match(name)):
        raise ClarityError(f"invalid Clarity name {name!r:.140}")
    return name


class ClarityError(ValueError):
    """A value that is not valid Clarity, bytes that are not a serialized value, or a type mismatch."""


@dataclass(frozen=True)
class CV:
    type: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ClarityError(f"unknown Clarity type {self.type!r}; expected one of {', '.join(TYPES)}")

    # ---------------------------------------------------------------- constructors
    @staticmethod
    def int(value: int) -> CV:
        return CV("int", _check_int(value, _INT_MIN, _INT_MAX, "int"))

    @staticmethod
    def uint(value: int) -> CV:
        return CV("uint", _check_int(value, 0, _UINT_MAX, "uint"))

    @staticmethod
    def bool(value: bool) -> CV:
        return CV("bool", bool(value))

    @staticmethod
    def buffer(value: bytes) -> CV:
        return CV("buffer", bytes(value))

    @staticmethod
    def principal(value: str) -> CV:
        _check_principal(value)
        return CV("principal", value)

    @staticmethod
    def ascii(value: str) -> CV:
        if not value.isascii():
            raise ClarityError(f"string-ascii holds ASCII only: {value!r:.60}")
        return CV("string-ascii", value)

    @staticmethod
    def utf8(value: str) -> CV:
        return CV("string-utf8", value)

    @staticmethod
    def none() -> CV:
        return CV("none", None)

    @staticmethod
    def some(value: CV) -> CV:
        return CV("some", value)

    @staticmethod
    def ok(value: CV) -> CV:
        return CV("ok", value)

    @staticmethod
    def err(value: CV) -> CV:
        return CV("err", value)

    @staticmethod
    def list(values: Any) -> CV:
        return CV("list", tuple(values))

    @staticmethod
    def tuple(fields: Mapping[str, CV]) -> CV:
        return CV("tuple", dict(fields))

    # ---------------------------------------------------------------- conversions
    def serialize(self) -> bytes:
        return serialize(self)

    def hex(self) -> str:
        return "0x" + serialize(self).hex()

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    def to_python(self) -> Any:
        return to_python(self)

    def __repr__(self) -> str:
        return f"CV({to_repr(self)})"


def _check_int(value: Any, low: int, high: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClarityError(f"{name} needs an integer, got {value!r:.60}")
    if not low <= value <= high:
        raise ClarityError(f"{value} is out of range for {name}")
    return value


def _check_principal(value: Any) -> None:
    if not isinstance(value, str):
        raise ClarityError(f"a principal is a string, got {value!r:.60}")
    address, _, name = value.partition(".")
    try:
        decode_address(address)
        if name or value.endswith("."):
            check_contract_name(name)
    except AddressError as exc:
        raise ClarityError(str(exc)) from exc


# ------------------------------------------------------------------------ wire format
def serialize(cv: CV) -> bytes:
    out = bytearray()
    _write(cv, out)
    return bytes(out)


def _write(cv: CV, out: bytearray) -> None:
    t, v = cv.type, cv.value
    if t == "int":
        out.append(INT)
        out += _check_int(v, _INT_MIN, _INT_MAX, "int").to_bytes(16, "big", signed=True)
    elif t == "uint":
        out.append(UINT)
        out += _check_int(v, 0, _UINT_MAX, "uint").to_bytes(16, "big")
    elif t == "buffer":
        out.append(BUFFER)
        out += struct.pack(">I", len(v)) + bytes(v)
    elif t == "bool":
        out.append(TRUE if v else FALSE)
    elif t == "principal":
        _check_principal(v)
        address, _, name = v.partition(".")
        version, hash_bytes = decode_address(address)
        if name:
            encoded = name.encode("ascii")
            out.append(PRINCIPAL_CONTRACT)
            out += bytes([version]) + hash_bytes + bytes([len(encoded)]) + encoded
        else:
            out.append(PRINCIPAL_STANDARD)
            out += bytes([version]) + hash_bytes
    elif t in ("ok", "err", "some"):
        if not isinstance(v, CV):
            raise ClarityError(f"{t} wraps a Clarity value, got {v!r:.60}")
        out.append({"ok": RESPONSE_OK, "err": RESPONSE_ERR, "some": OPTIONAL_SOME}[t])
        _write(v, out)
    elif t == "none":
        out.append(OPTIONAL_NONE)
    elif t == "list":
        out.append(LIST)
        out += struct.pack(">I", len(v))
        for item in v:
            _write(item, out)
    elif t == "tuple":
        out.append(TUPLE)
        out += struct.pack(">I", len(v))
        # Consensus order: field names sorted (a BTreeMap of ClarityName in the node).
        for name in sorted(v, key=lambda n: n.encode("ascii")):
            encoded = check_name(name).encode("ascii")
            out += bytes([len(encoded)]) + encoded
            _write(v[name], out)
    elif t == "string-ascii":
        data = v.encode("ascii")
        out.append(STRING_ASCII)
        out += struct.pack(">I", len(data)) + data
    elif t == "string-utf8":
        data = v.encode("utf-8")
        out.append(STRING_UTF8)
        out += struct.pack(">I", len(data)) + data


def deserialize(data: bytes | str) -> CV:
    """One value from bytes or hex (``0x`` optional); trailing bytes are an error."""
    if isinstance(data, str):
        text = data[2:] if data.startswith(("0x", "0X")) else data
        try:
            data = bytes.fromhex(text)
        except ValueError as exc:
            raise ClarityError(f"not hex: {data!r:.60}") from exc
    reader = _Reader(bytes(data))
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise ClarityError(f"{len(reader.data) - reader.pos} trailing bytes after a Clarity value")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ClarityError("truncated Clarity value")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def name(self, *, contract: bool = False) -> str:
        raw = self.take(self.take(1)[0])
        try:
            text = raw.decode("ascii")
            return check_contract_name(text) if contract else check_name(text)
        except (UnicodeDecodeError, AddressError) as exc:
            raise ClarityError(f"invalid name {raw!r}") from exc

    def value(self, depth: int) -> CV:
        if depth > _MAX_DEPTH:
            raise ClarityError("Clarity value nested too deeply")
        prefix = self.take(1)[0]
        if prefix == INT:
            return CV("int", int.from_bytes(self.take(16), "big", signed=True))
        if prefix == UINT:
            return CV("uint", int.from_bytes(self.take(16), "big"))
        if prefix == BUFFER:
            return CV("buffer", self.take(self.u32()))
        if prefix in (TRUE, FALSE):
            return CV("bool", prefix == TRUE)
        if prefix in (PRINCIPAL_STANDARD, PRINCIPAL_CONTRACT):
            version = self.take(1)[0]
            address = encode_address(version, self.take(20))
            return CV("principal", f"{address}.{self.name(contract=True)}" if prefix == PRINCIPAL_CONTRACT else address)
        if prefix in (RESPONSE_OK, RESPONSE_ERR, OPTIONAL_SOME):
            kind = {RESPONSE_OK: "ok", RESPONSE_ERR: "err", OPTIONAL_SOME: "some"}[prefix]
            return CV(kind, self.value(depth + 1))
        if prefix == OPTIONAL_NONE:
            return CV("none", None)
        if prefix == LIST:
            count = self.u32()
            if count > len(self.data):
                raise ClarityError("list length exceeds the data")
            return CV("list", tuple(self.value(depth + 1) for _ in range(count)))
        if prefix == TUPLE:
            count = self.u32()
            if count > len(self.data):
                raise ClarityError("tuple length exceeds the data")
            fields: dict[str, CV] = {}
            for _ in range(count):
                name = self.name()
                fields[name] = self.value(depth + 1)
            return CV("tuple", fields)
        if prefix in (STRING_ASCII, STRING_UTF8):
            raw = self.take(self.u32())
            try:
                text = raw.decode("ascii" if prefix == STRING_ASCII else "utf-8")
            except UnicodeDecodeError as exc:
                raise ClarityError("invalid string bytes") from exc
            return CV("string-ascii" if prefix == STRING_ASCII else "string-utf8", text)
        raise ClarityError(f"unknown Clarity type prefix 0x{prefix:02x}")


# ------------------------------------------------------------------------ typed JSON
def from_json(document: Any) -> CV:
    """``{"type": "uint", "value": "5"}`` (and nested forms, see module docstring) to a :class:`CV`."""
    if isinstance(document, CV):
        return document
    if not isinstance(document, Mapping) or "type" not in document:
        raise ClarityError(f'a Clarity argument is {{"type": ..., "value": ...}}, got {document!r:.80}')
    t = str(document["type"]).strip().lower()
    v = document.get("value")
    aliases = {"int128": "int", "uint128": "uint", "true": "bool", "false": "bool", "optional": "some",
               "ascii": "string-ascii", "utf8": "string-utf8", "buff": "buffer", "string": "string-ascii"}
    if t in ("true", "false") and v is None:
        v = t == "true"
    t = aliases.get(t, t)
    if t in ("int", "uint"):
        if isinstance(v, str):
            try:
                v = int(v.strip(), 10)
            except ValueError as exc:
                raise ClarityError(f"{t} value {v!r:.40} is not a decimal integer") from exc
        return CV.int(v) if t == "int" else CV.uint(v)
    if t == "bool":
        if not isinstance(v, bool):
            raise ClarityError(f"bool value must be true or false, got {v!r:.40}")
        return CV.bool(v)
    if t == "buffer":
        if not isinstance(v, str):
            raise ClarityError("buffer value is a hex string")
        text = v[2:] if v.startswith(("0x", "0X")) else v
        try:
            return CV.buffer(bytes.fromhex(text))
        except ValueError as exc:
            raise ClarityError(f"buffer value {v!r:.40} is not hex") from exc
    if t == "principal":
        return CV.principal(v)
    if t in ("ok", "err", "some"):
        return CV(t, from_json(v))
    if t == "none":
        return CV.none()
    if t == "list":
        if not isinstance(v, list):
            raise ClarityError("list value is a JSON array")
        return CV.list(from_json(item) for item in v)
    if t == "tuple":
        if not isinstance(v, Mapping):
            raise ClarityError("tuple value is a JSON object")
        return CV.tuple({str(k): from_json(item) for k, item in v.items()})
    if t in ("string-ascii", "string-utf8"):
        if not isinstance(v, str):
            raise ClarityError(f"{t} value is a string")
        return CV.ascii(v) if t == "string-ascii" else CV.utf8(v)
    raise ClarityError(f"unknown Clarity type {t!r}")


def to_json(cv: CV) -> dict[str, Any]:
    """Typed JSON; integers as decimal strings (128-bit values do not fit JSON numbers everywhere)."""
    t, v = cv.type, cv.value
    if t in ("int", "uint"):
        return {"type": t, "value": str(v)}
    if t == "buffer":
        return {"type": t, "value": "0x" + v.hex()}
    if t in ("ok", "err", "some"):
        return {"type": t, "value": to_json(v)}
    if t == "none":
        return {"type": t}
    if t == "list":
        return {"type": t, "value": [to_json(item) for item in v]}
    if t == "tuple":
        return {"type": t, "value": {k: to_json(item) for k, item in sorted(v.items())}}
    return {"type": t, "value": v}


def to_python(cv: CV) -> Any:
    """Plain Python: ints, bytes as 0x-hex, ``{"ok": ...}`` / ``{"err": ...}`` for responses."""
    t, v = cv.type, cv.value
    if t == "buffer":
        return "0x" + v.hex()
    if t in ("ok", "err"):
        return {t: to_python(v)}
    if t == "some":
        return to_python(v)
    if t == "list":
        return [to_python(item) for item in v]
    if t == "tuple":
        return {k: to_python(item) for k, item in v.items()}
    return v


def to_repr(cv: CV) -> str:
    """Clarity source notation, as the node prints results: ``(ok u5)``, ``{a: 1}``."""
    t, v = cv.type, cv.value
    if t == "int":
        return str(v)
    if t == "uint":
        return f"u{v}"
    if t == "buffer":
        return "0x" + v.hex()
    if t == "bool":
        return "true" if v else "false"
    if t == "principal":
        return "'" + v
    if t in ("ok", "err", "some"):
        return f"({t} {to_repr(v)})"
    if t == "none":
        return "none"
    if t == "list":
        return "(list " + " ".join(to_repr(item) for item in v) + ")" if v else "(list)"
    if t == "tuple":
        return "{" + ", ".join(f"{k}: {to_repr(item)}" for k, item in sorted(v.items())) + "}"
    if t == "string-ascii":
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return 'u"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------ contract ABI types
def check_type(cv: CV, abi_type: Any, where: str = "value") -> None:
    """Raise :class:`ClarityError` unless ``cv`` fits the type of a contract interface (``/v2/contracts/interface``)."""
    def fail(expected: str) -> ClarityError:
        return ClarityError(f"{where}: expected {expected}, got {to_repr(cv)[:80]} ({cv.type})")

    if isinstance(abi_type, str):
        simple = {"int128": "int", "uint128": "uint", "bool": "bool", "principal": "principal",
                  "trait_reference": "principal", "none": "none"}
        if abi_type not in simple:
            raise ClarityError(f"{where}: unsupported interface type {abi_type!r}")
        if cv.type != simple[abi_type] or (abi_type == "trait_reference" and "." not in cv.value):
            raise fail(abi_type)
        return
    if not isinstance(abi_type, Mapping) or len(abi_type) != 1:
        raise ClarityError(f"{where}: unsupported interface type {abi_type!r:.80}")
    (kind, spec), = abi_type.items()
    if kind in ("buffer", "string-ascii", "string-utf8"):
        if cv.type != kind:
            raise fail(kind)
        size = len(cv.value)
        if size > int(spec["length"]):
            raise ClarityError(f"{where}: {kind} of length {size} exceeds the maximum {spec['length']}")
    elif kind == "optional":
        if cv.type == "none":
            return
        if cv.type != "some":
            raise fail("optional (none or some)")
        check_type(cv.value, spec, f"{where}.some")
    elif kind == "response":
        if cv.type not in ("ok", "err"):
            raise fail("response (ok or err)")
        check_type(cv.value, spec["ok" if cv.type == "ok" else "error"], f"{where}.{cv.type}")
    elif kind == "list":
        if cv.type != "list":
            raise fail("list")
        if len(cv.value) > int(spec["length"]):
            raise ClarityError(f"{where}: list of {len(cv.value)} items exceeds the maximum {spec['length']}")
        for i, item in enumerate(cv.value):
            check_type(item, spec["type"], f"{where}[{i}]")
    elif kind == "tuple":
        if cv.type != "tuple":
            raise fail("tuple")
        names = {field["name"] for field in spec}
        if set(cv.value) != names:
            raise ClarityError(f"{where}: tuple fields {sorted(cv.value)} differ from {sorted(names)}")
        for field in spec:
            check_type(cv.value[field["name"]], field["type"], f"{where}.{field['name']}")
    else:
        raise ClarityError(f"{where}: unsupported interface type {kind!r}")


def check_function_args(interface: Mapping[str, Any], function: str, args: list[CV], *,
                        access: tuple[str, ...]) -> dict[str, Any]:
    """The ABI entry of ``function`` after checking it exists with an allowed ``access`` and ``args`` fit it."""
    for entry in interface.get("functions", []):
        if entry.get("name") == function:
            break
    else:
        names = sorted(f["name"] for f in interface.get("functions", []) if f.get("access") in access)
        raise ClarityError(f"no function {function!r} in the contract; callable here: {', '.join(names) or 'none'}")
    if entry.get("access") not in access:
        raise ClarityError(f"function {function!r} is {entry.get('access')}; this action needs {' or '.join(access)}")
    expected = entry.get("args", [])
    if len(args) != len(expected):
        raise ClarityError(f"{function} takes {len(expected)} argument(s) "
                           f"({', '.join(a['name'] for a in expected)}), got {len(args)}")
    for arg, spec in zip(args, expected, strict=True):
        check_type(arg, spec["type"], f"{function}({spec['name']})")
    return dict(entry)
