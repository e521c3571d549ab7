"""The bounded fetcher's pure parts: which addresses count as public, allow-lists, bounded inflation,
checks made before any connection (issue 11 section 3; the hostile-server tests are in
tests/vc/test_bounded_fetches.py)."""

from __future__ import annotations

import gzip
import ipaddress
import socket
import zlib
from typing import Any

import pytest

from tributary.core.errors import DataError, PermanentError, SecurityError
from tributary.core.fetch import Fetcher, FetchPolicy, inflate, is_public, parse_bool, parse_networks

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("address,public", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("255.255.255.255", False), ("240.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("64:ff9b::a9fe:a9fe", False),
    ("::ffff:93.184.216.34", True), ("ff02::1", False), ("::", False),
])
def test_only_public_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_allow_networks_come_as_a_list_or_a_string_and_admit_their_addresses() -> None:
    assert parse_networks("127.0.0.1/32, 10.0.0.0/8 ::1") == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert parse_networks(["192.168.1.7"]) == (ipaddress.ip_network("192.168.1.7/32"),)
    assert parse_networks(None) == parse_networks("") == ()
    with pytest.raises(PermanentError) as failure:
        parse_networks("localhost")
    assert failure.value.reason == "config:allow_networks"
    policy = FetchPolicy(allow_networks=parse_networks("127.0.0.1/32"))
    assert policy.allows(ipaddress.ip_address("127.0.0.1")) and policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.2"))
    assert parse_bool("true") and parse_bool(True) and not parse_bool("false") and not parse_bool("")


def test_inflate_stops_at_its_limit_whatever_the_ratio() -> None:
    data = bytes(50 * 1024 * 1024)
    bomb = gzip.compress(data, compresslevel=9)
    assert len(bomb) < 100 * 1024
    with pytest.raises(DataError) as failure:
        inflate(bomb, 1024 * 1024)
    assert failure.value.reason == "fetch:decompressed_too_large"
    assert inflate(gzip.compress(b"hello"), 5) == b"hello"
    assert inflate(zlib.compress(b"hello"), 5) == b"hello"
    for bad in (b"not compressed", gzip.compress(b"hello")[:-12]):
        with pytest.raises(DataError) as failure:
            inflate(bad, 100)
        assert failure.value.reason == "fetch:bad_encoding"
    with pytest.raises(DataError):
        inflate(zlib.compress(b"hello"), 100, gzip_only=True)


@pytest.mark.parametrize("url,reason", [
    ("http://93.184.216.34/did.json", "fetch:scheme"), ("ftp://example.com/x", "fetch:scheme"),
    ("file:///etc/passwd", "fetch:scheme"), ("https://user:pw@example.com/x", "fetch:url"),
    ("https://127.0.0.1/x", "fetch:address"), ("https://[::1]:8443/x", "fetch:address"),
    ("https://169.254.169.254/latest/meta-data", "fetch:address"), ("https://10.0.0.1/x", "fetch:address"),
    ("https://example.com:99999/x", "fetch:url"),
])
def test_refused_urls_never_reach_a_socket(url: str, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "create_connection", no_socket)
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    with pytest.raises(SecurityError) as failure:
        Fetcher(FetchPolicy(), system="test").get(url)
    assert failure.value.reason == reason


def test_a_name_is_refused_when_any_of_its_addresses_is_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.0.10", port))]

    fetcher = Fetcher(FetchPolicy(), system="test", getaddrinfo=getaddrinfo)
    with pytest.raises(SecurityError) as failure:
        fetcher.get("https://rebinding.example/did.json")
    assert failure.value.reason == "fetch:address" and "192.168.0.10" in str(failure.value)
    # plain http even to an allow-listed loopback address needs allow_http_loopback
    with pytest.raises(SecurityError) as failure:
        Fetcher(FetchPolicy(allow_networks=parse_networks("127.0.0.0/8"))).get("http://127.0.0.1:9/x")
    assert failure.value.reason == "fetch:scheme"
