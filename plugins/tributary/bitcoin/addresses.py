"""Bitcoin addresses <-> output scripts (scriptPubKey), per network: the one encoder and decoder.

Base58check (P2PKH, P2SH), bech32 (BIP173, witness v0) and bech32m (BIP350, witness v1+, e.g.
taproot), with each network's version bytes and human-readable part. Networks are named as Bitcoin
Core names its chains (``getblockchaininfo`` ``chain``): main, test, testnet4, signet, regtest.

What comes from python-bitcoinlib and what is written here, and why:

* base58check is the library's ``CBase58Data`` (checksum, version byte) both ways;
* bech32 (v0) addresses are encoded with the library's ``bech32_encode``, and every bech32 string is
  checked with its ``bech32_polymod`` / ``bech32_hrp_expand`` / ``convertbits``;
* hand-written: the BIP350 bech32m checksum (python-bitcoinlib 0.12 knows only bech32), and the
  decoding of a bech32/bech32m string, because the library's ``bech32_decode`` accepts bech32 only
  and answers ``(None, None)`` without a reason, and a payout must be refused with its reason;
* not used: ``CBitcoinAddress`` / ``CBech32Data``, which read the process-global ``bitcoin.params``
  (``SelectParams`` is not thread-safe, and one process serves several networks) and know no bech32m.

The library is imported inside the functions: DAG files import modules that import this one, and
must not load ``bitcoin`` when they are parsed.
"""

from __future__ import annotations

from collections.abc import Callable

# Keys are Bitcoin Core's chain names.
NETWORK_ALIASES = {"mainnet": "main", "bitcoin": "main", "testnet": "test", "testnet3": "test"}
BASE58_PREFIXES = {"main": (0, 5), "test": (111, 196), "testnet4": (111, 196), "signet": (111, 196),
                   "regtest": (111, 196)}  # (P2PKH, P2SH) version bytes
BECH32_HRP = {"main": "bc", "test": "tb", "testnet4": "tb", "signet": "tb", "regtest": "bcrt"}
_NETWORK_OF_HRP = {hrp: network for network, hrp in BECH32_HRP.items()}
_BECH32M_CONST = 0x2BC830A3  # BIP350; bech32's is 1


def normalize_network(network: str) -> str:
    """Core's chain name for ``network`` (aliases such as ``mainnet`` accepted); ValueError if unknown."""
    name = NETWORK_ALIASES.get(network.strip().lower(), network.strip().lower())
    if name not in BASE58_PREFIXES:
        raise ValueError(f"unknown bitcoin network {network!r} (expected one of {sorted(BASE58_PREFIXES)})")
    return name


# --------------------------------------------------------------------------- script templates
def small_int(opcode: int) -> int | None:
    """The number an OP_0 / OP_1..OP_16 opcode pushes; None for any other opcode."""
    if opcode == 0:
        return 0
    if 0x51 <= opcode <= 0x60:  # OP_1 .. OP_16
        return opcode - 0x50
    return None


def witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) when ``script`` is a segwit output script (BIP141), else None."""
    if not 4 <= len(script) <= 42 or script[1] + 2 != len(script):
        return None
    version = small_int(script[0])
    return None if version is None else (version, script[2:])


def address_kind(script: bytes) -> str | None:
    """The kind of an output script that has an address, in Core's names (p2pkh, p2sh, p2wpkh, p2wsh,
    p2tr, anchor, witness_unknown); None for every other script (p2pk, multisig, nulldata, ...)."""
    size = len(script)
    if size == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "p2pkh"
    if size == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return "p2sh"
    program = witness_program(script)
    if program is None:
        return None
    version, data = program
    if version == 0:
        return {20: "p2wpkh", 32: "p2wsh"}.get(len(data))  # other v0 lengths are unspendable: no address
    if version == 1 and len(data) == 32:
        return "p2tr"
    if version == 1 and data == b"\x4e\x73":
        return "anchor"
    return "witness_unknown"


# --------------------------------------------------------------------------- script -> address
def _bech32m_encode(hrp: str, data: list[int]) -> str:
    from bitcoin.segwit_addr import CHARSET, bech32_hrp_expand, bech32_polymod

    polymod = bech32_polymod(bech32_hrp_expand(hrp) + data + [0] * 6) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def address_encoder(network: str) -> Callable[[bytes, str | None], str | None]:
    """:func:`script_address` for one network, with the network resolved and the library loaded once:
    block parsing encodes thousands of outputs per block, and doing both per output cost a quarter
    of a block's parse time."""
    from bitcoin.base58 import CBase58Data
    from bitcoin.segwit_addr import bech32_encode, convertbits

    network = normalize_network(network)
    pubkey_prefix, script_prefix = BASE58_PREFIXES[network]
    hrp = BECH32_HRP[network]

    def encode(script: bytes, kind: str | None = None) -> str | None:
        kind = kind or address_kind(script)
        try:
            if kind == "p2pkh":
                return str(CBase58Data.from_bytes(script[3:23], pubkey_prefix))
            if kind == "p2sh":
                return str(CBase58Data.from_bytes(script[2:22], script_prefix))
            if kind in ("p2wpkh", "p2wsh"):
                # The library's bech32_encode, not its encode(): encode() decodes every address it makes
                # again to check it, which was most of a block's parse time; the kind already says what
                # decode() would check (version 0, a 20- or 32-byte program).
                return bech32_encode(hrp, [0, *convertbits(script[2:], 8, 5)])
            if kind in ("p2tr", "anchor", "witness_unknown"):
                program = witness_program(script)
                if program is None:
                    return None
                version, data = program
                return _bech32m_encode(hrp, [version, *(convertbits(data, 8, 5) or [])])
        except (ValueError, TypeError):  # an encoder refusing the data: no address, not a failure
            return None
        return None  # p2pk, multisig, nulldata, nonstandard: Core shows no address

    return encode


def script_address(script: bytes, network: str = "main", kind: str | None = None) -> str | None:
    """The address Bitcoin Core shows for an output script on ``network``; None when it has none.

    ``kind`` is the script's type when the caller already classified it, so it is not done twice.
    """
    return address_encoder(network)(script, kind)


# --------------------------------------------------------------------------- address -> script
def _bech32_decode(address: str) -> tuple[str, list[int], str]:
    """(hrp, data without checksum, "bech32" | "bech32m"); ValueError with the reason."""
    from bitcoin.segwit_addr import CHARSET, bech32_hrp_expand, bech32_polymod

    if address.lower() != address and address.upper() != address:
        raise ValueError("mixed-case bech32")
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address) or len(address) > 90:
        raise ValueError("not bech32")
    hrp, data = address[:pos], [CHARSET.find(c) for c in address[pos + 1:]]
    if -1 in data:
        raise ValueError("invalid bech32 character")
    const = bech32_polymod(bech32_hrp_expand(hrp) + data)
    encoding = "bech32" if const == 1 else "bech32m" if const == _BECH32M_CONST else None
    if encoding is None:
        raise ValueError("bad bech32 checksum")
    return hrp, data[:-6], encoding


def _witness_script(address: str, network: str) -> bytes:
    from bitcoin.segwit_addr import convertbits

    hrp, data, encoding = _bech32_decode(address)
    expected = BECH32_HRP[network]
    if hrp != expected:
        raise ValueError(f"bech32 address of network {_NETWORK_OF_HRP.get(hrp, hrp)!r} (hrp {hrp!r}), "
                         f"not {network} (hrp {expected!r})")
    if not data:
        raise ValueError("empty witness program")
    version, program = data[0], convertbits(data[1:], 5, 8, False)
    if program is None or version > 16 or not 2 <= len(program) <= 40:
        raise ValueError("invalid witness program")
    if version == 0 and len(program) not in (20, 32):
        raise ValueError("invalid v0 witness program length")
    if (version == 0) != (encoding == "bech32"):
        raise ValueError(f"witness v{version} must use {'bech32' if version == 0 else 'bech32m'}")
    return bytes([version + 0x50 if version else 0, len(program)]) + bytes(program)


def _base58_script(address: str, network: str) -> bytes:
    from bitcoin.base58 import Base58Error, CBase58Data

    try:
        data = CBase58Data(address)
    except (Base58Error, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid base58check or bech32 address ({type(exc).__name__})") from None
    if len(data) != 20:
        raise ValueError("base58 payload is not 20 bytes")
    p2pkh, p2sh = BASE58_PREFIXES[network]
    if data.nVersion == p2pkh:
        return b"\x76\xa9\x14" + bytes(data) + b"\x88\xac"
    if data.nVersion == p2sh:
        return b"\xa9\x14" + bytes(data) + b"\x87"
    owners = [n for n, prefixes in BASE58_PREFIXES.items() if data.nVersion in prefixes]
    raise ValueError(f"base58 version {data.nVersion} belongs to {owners or 'no known network'}, not {network}")


def address_script(address: str, network: str) -> bytes:
    """The scriptPubKey ``address`` pays to on ``network``; ValueError with the reason when it is not
    a valid address of that network (checksum, case, version byte or HRP, witness program rules)."""
    if not isinstance(address, str) or not address or address != address.strip():
        raise ValueError("address is empty or not a string")
    network = normalize_network(network)
    lowered = address.lower()
    hrp_guess = lowered[:lowered.rfind("1")] if "1" in lowered else ""
    # Read as bech32 when it starts like one of ours (a base58 address may contain a "1" too).
    if hrp_guess in _NETWORK_OF_HRP or lowered.startswith(BECH32_HRP[network] + "1"):
        return _witness_script(address, network)
    return _base58_script(address, network)
