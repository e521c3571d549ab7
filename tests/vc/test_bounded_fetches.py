"""Verification fetches are bounded (issue 11 section 3): a local hostile HTTPS server serves did:web
documents and status lists that redirect elsewhere, never finish, explode when inflated or are huge.

Every test runs under a socket guard: a connect to anything outside 127.0.0.0/8 is recorded and fails
the test, so a refused destination is proven refused *before* any connection, and nothing leaves
loopback. Servers run in this process (threads): the tests are ``unit``.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devnets.did.web import make_tls
from tributary.core.errors import DataError, SecurityError, TransientError
from tributary.did import didweb, keys
from tributary.did.document import PortableDid
from tributary.did.encoding import b64url_encode
from tributary.did.resolver import ResolverConfig, create_did, resolve
from tributary.vc import status_list
from tributary.vc.vcjwt import create_credential, issue_vc, verify_vc
from tributary.vc.verdict import check_credential

pytestmark = pytest.mark.unit

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
DEADLINE = 2.0  # the total deadline these tests give a fetch
MARGIN = 4.0  # generous: two cores shared by several agents

Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """An HTTPS server on 127.0.0.1 (the did devnet's CA) answering each path with a route."""

    def __init__(self, tls: dict[str, Path]) -> None:
        import ssl

        routes: dict[str, Route] = {}
        self.routes = routes
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(OSError):  # the client gave up (as it should): broken pipe, reset
                    route(self)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def did(self, path: str) -> str:
        return didweb.did_for(f"127.0.0.1:{self.port}", path)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(body: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
         length: bool = True) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return route


def redirect(location: str) -> Route:
    return send(b"", status=302, headers={"Location": location})


def trickle(body: bytes, *, per_second: float = 1.0) -> Route:
    """One byte a second, each a few bytes of a valid answer: never slow enough for a per-read timeout."""
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        for i in range(len(body)):
            handler.wfile.write(body[i:i + 1])
            handler.wfile.flush()
            time.sleep(1 / per_second)
    return route


def gzip_bomb(size: int) -> bytes:
    """A valid gzip member of ``size`` zero bytes (about 1000:1), built without compressing them all:
    after a full flush the compressor has no history, so one compressed MiB can be repeated."""
    block_in = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(block_in) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = size >> 20
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block_in, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + block * count + compressor.flush()
            + struct.pack("<II", crc, (count << 20) & 0xFFFFFFFF))


def test_the_gzip_bomb_is_valid_gzip() -> None:
    assert gzip.decompress(gzip_bomb(3 << 20)) == bytes(3 << 20)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Record (and refuse) every connect outside 127.0.0.0/8; the test fails if there was one."""
    outside: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        try:
            host = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except ValueError:
            return False
        if host not in LOOPBACK:
            outside.append(address)
            return False
        return True

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(self, address):
            raise ConnectionRefusedError(f"socket guard: connect to {address} outside 127.0.0.0/8")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(self, address):
            raise ConnectionRefusedError(f"socket guard: connect to {address} outside 127.0.0.0/8")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield outside
    assert outside == [], f"connections outside loopback were attempted: {outside}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tls(tmp_path_factory.mktemp("hostile-tls"))


@pytest.fixture
def servers(tls: dict[str, Path], loopback_only: list[Any]) -> Iterator[tuple[Server, Server]]:
    a, b = Server(tls), Server(tls)
    yield a, b
    a.stop()
    b.stop()


def config(tls: dict[str, Path], **overrides: Any) -> ResolverConfig:
    """The devnet's settings: its CA, loopback allow-listed (as its Connection does)."""
    settings: dict[str, Any] = {"ca_bundle": str(tls["ca"]), "timeout": DEADLINE, "allow_networks": ("127.0.0.1/32",)}
    return ResolverConfig(**{**settings, **overrides})


def publish_doc(server: Server, path: str, at: str | None = None) -> PortableDid:
    """A did:web for ``path`` on ``server``, its document served at ``at`` (default: where it belongs)."""
    portable = didweb.create(f"127.0.0.1:{server.port}", path)
    server.routes[at or f"/{path}/did.json"] = send(json.dumps(portable.document).encode(),
                                                    headers={"Content-Type": "application/json"})
    return portable


def web_token(server: Server, path: str) -> tuple[PortableDid, str]:
    issuer = publish_doc(server, path)
    return issuer, issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:holder"}))


# ----------------------------------------------------------------------------- the well-behaved case
def test_a_did_web_document_on_an_allow_listed_loopback_host_resolves_and_is_cached(
        servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    a, _ = servers
    _, token = web_token(a, "fine")
    cfg = config(tls)
    assert check_credential(token, config=cfg)["valid"] is True
    assert check_credential(token, config=cfg)["valid"] is True
    assert a.requests == ["/fine/did.json"]  # the second verification used the cache
    assert check_credential(token, config=config(tls, cache_ttl=0))["valid"] is True
    assert a.requests == ["/fine/did.json"] * 2


def test_a_same_origin_redirect_is_followed(servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    a, _ = servers
    portable = publish_doc(a, "moved", at="/elsewhere/did.json")
    a.routes["/moved/did.json"] = redirect("/elsewhere/did.json")
    assert resolve(portable.uri, config(tls))["didDocument"] == portable.document


# ----------------------------------------------------------------------------- refused destinations
def test_loopback_is_refused_unless_allow_listed(servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    a, _ = servers
    _, token = web_token(a, "not-listed")
    with pytest.raises(SecurityError) as failure:
        verify_vc(token, config=config(tls, allow_networks=()))
    assert failure.value.reason == "fetch:address"
    verdict = check_credential(token, config=config(tls, allow_networks=()))
    assert verdict["valid"] is False and verdict["reasons"] == ["security:fetch:address"]
    assert a.requests == []  # refused before connecting


def test_a_redirect_to_another_loopback_port_is_refused(servers: tuple[Server, Server],
                                                        tls: dict[str, Path]) -> None:
    a, b = servers
    portable = didweb.create(f"127.0.0.1:{a.port}", "hop")
    b.routes["/hop/did.json"] = send(json.dumps(portable.document).encode())  # a valid document, on b
    a.routes["/hop/did.json"] = redirect(b.url("/hop/did.json"))
    token = issue_vc(portable, create_credential(portable.uri, {"id": "did:example:holder"}))
    verdict = check_credential(token, config=config(tls))
    assert verdict["valid"] is False and verdict["reasons"] == ["security:fetch:redirect"]
    assert a.requests == ["/hop/did.json"] and b.requests == []


def test_a_redirect_to_a_link_local_address_is_refused_before_any_connection(
        servers: tuple[Server, Server], tls: dict[str, Path], loopback_only: list[Any]) -> None:
    a, _ = servers
    _, token = web_token(a, "metadata")
    a.routes["/metadata/did.json"] = redirect("https://169.254.169.254/latest/meta-data/did.json")
    verdict = check_credential(token, config=config(tls, allow_networks=("127.0.0.1/32", "169.254.0.0/16")))
    assert verdict["valid"] is False and verdict["reasons"] == ["security:fetch:redirect"]
    assert loopback_only == []


def test_a_name_that_resolves_to_a_private_or_link_local_address_is_refused_before_connecting(
        servers: tuple[Server, Server], tls: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        loopback_only: list[Any]) -> None:
    real = socket.getaddrinfo
    answers = {"metadata.test": ["169.254.169.254"], "mixed.test": ["93.184.216.34", "10.0.0.7"],
               "v6.test": ["fe80::1", "::ffff:127.0.0.1"]}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in answers:
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (ip, port)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for host in answers:
        issuer = create_did("web", host=host, path="x")
        token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:holder"}))
        verdict = check_credential(token, config=config(tls))
        assert verdict["reasons"] == ["security:fetch:address"], host
    assert loopback_only == []


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_checked_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_only: list[Any]) -> None:
    """DNS rebinding: the first answer (allow-listed loopback) is checked and used; later answers for
    the same name (link-local) are never asked for, and nothing connects to them."""
    rebind_tls = make_tls(tmp_path / "rebind", hosts=("rebind.test", "127.0.0.1"))
    server = Server(rebind_tls)
    try:
        portable = didweb.create(f"rebind.test:{server.port}", "moved")
        server.routes["/moved/did.json"] = redirect(f"https://rebind.test:{server.port}/final/did.json")
        server.routes["/final/did.json"] = send(json.dumps(portable.document).encode())
        real = socket.getaddrinfo
        lookups: list[str] = []

        def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != "rebind.test":
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            ip = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        result = resolve(portable.uri, config(rebind_tls))
        assert result["didDocument"] == portable.document
        assert lookups == ["rebind.test"] and server.requests == ["/moved/did.json", "/final/did.json"]
    finally:
        server.stop()
    assert loopback_only == []


def test_a_plain_http_status_list_is_refused_unless_loopback_http_is_allowed(
        servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    issuer = create_did("key")
    entry = status_list.status_entry("http://127.0.0.1:9/list.jwt", 3)
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:holder"}, status=entry))
    verdict = check_credential(token, config=config(tls))
    assert verdict["valid"] is False and verdict["reasons"] == ["security:fetch:scheme"]
    with pytest.raises(TransientError):  # allowed now: port 9 (discard) refuses the connection
        check_credential(token, config=config(tls, allow_http_loopback=True))


# ----------------------------------------------------------------------------- bounded answers
def test_a_one_byte_per_second_answer_hits_the_total_deadline(servers: tuple[Server, Server],
                                                              tls: dict[str, Path]) -> None:
    a, _ = servers
    _, token = web_token(a, "slow")
    a.routes["/slow/did.json"] = trickle(b'{"id": "did:web:127.0.0.1", "padding": "' + b"x" * 60 + b'"}')
    started = time.monotonic()
    with pytest.raises(TransientError) as failure:  # a slow server says nothing about the credential: retried
        check_credential(token, config=config(tls))
    elapsed = time.monotonic() - started
    assert failure.value.reason == "fetch:deadline"
    assert elapsed < DEADLINE + MARGIN, f"took {elapsed:.1f} s for a {DEADLINE} s deadline"
    print(f"1 byte/s answer stopped after {elapsed:.2f} s (deadline {DEADLINE} s)")


def test_headers_sent_one_byte_per_second_hit_the_total_deadline(servers: tuple[Server, Server],
                                                                 tls: dict[str, Path]) -> None:
    a, _ = servers
    _, token = web_token(a, "slow-headers")

    def route(handler: BaseHTTPRequestHandler) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 60:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(1)

    a.routes["/slow-headers/did.json"] = route
    started = time.monotonic()
    with pytest.raises(TransientError) as failure:
        verify_vc(token, config=config(tls))
    assert failure.value.reason == "fetch:deadline"
    assert time.monotonic() - started < DEADLINE + MARGIN


def test_a_ten_megabyte_document_is_refused(servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    a, _ = servers
    issuer, token = web_token(a, "big")
    huge = json.dumps({**issuer.document, "padding": "x" * 10_000_000}).encode()
    a.routes["/big/did.json"] = send(huge)
    verdict = check_credential(token, config=config(tls))
    assert verdict["valid"] is False and verdict["reasons"] == ["data:fetch:too_large"]
    # without Content-Length (the body ends when the connection closes): the cap holds while streaming
    a.routes["/big/did.json"] = send(huge, length=False)
    with pytest.raises(DataError) as failure:
        verify_vc(token, config=config(tls))
    assert failure.value.reason == "fetch:too_large"


def test_a_gzip_bomb_content_encoding_stops_at_the_decompressed_cap(servers: tuple[Server, Server],
                                                                    tls: dict[str, Path]) -> None:
    a, _ = servers
    _, token = web_token(a, "bomb")
    bomb = gzip_bomb(256 * 1024 * 1024)
    assert len(bomb) < 1024 * 1024  # under the response cap: only the decompressed cap can stop it
    a.routes["/bomb/did.json"] = send(bomb, headers={"Content-Encoding": "gzip"})
    started = time.monotonic()
    verdict = check_credential(token, config=config(tls))
    assert verdict["valid"] is False and verdict["reasons"] == ["data:fetch:decompressed_too_large"]
    print(f"gzip bomb ({len(bomb)} bytes -> 256 MiB) refused in {time.monotonic() - started:.2f} s")


def test_a_gzip_bomb_inside_a_signed_status_list_stops_at_the_decompressed_cap(
        servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    a, _ = servers
    issuer = create_did("key")
    list_url = a.url("/status/bomb.jwt")
    listing = status_list.list_credential(issuer.uri, list_url, bytes(16))
    listing["credentialSubject"]["encodedList"] = "u" + b64url_encode(gzip_bomb(64 * 1024 * 1024))
    a.routes["/status/bomb.jwt"] = send(issue_vc(issuer, listing).encode())
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:holder"},
                                               status=status_list.status_entry(list_url, 5)))
    verdict = check_credential(token, config=config(tls))
    assert verdict["valid"] is False and verdict["reasons"] == ["data:status_list_too_large"]


def test_a_status_list_that_is_fine_still_verifies_and_reports_revocation(
        servers: tuple[Server, Server], tls: dict[str, Path]) -> None:
    from tributary.vc import bitstring

    a, _ = servers
    issuer = create_did("key")
    list_url = a.url("/status/ok.jwt")
    bits = bitstring.new_bits()
    bitstring.set_bit(bits, 7)
    body = issue_vc(issuer, status_list.list_credential(issuer.uri, list_url, bytes(bits))).encode()
    a.routes["/status/ok.jwt"] = send(gzip.compress(body), headers={"Content-Encoding": "gzip"})
    for index, reasons in ((6, []), (7, ["security:revoked"])):
        token = issue_vc(issuer, create_credential(issuer.uri, {"id": "did:example:holder"},
                                                   status=status_list.status_entry(list_url, index)))
        assert check_credential(token, config=config(tls))["reasons"] == reasons


def test_an_untrusted_certificate_is_a_tls_error(servers: tuple[Server, Server], tls: dict[str, Path],
                                                 tmp_path: Path) -> None:
    a, _ = servers
    _, token = web_token(a, "tls")
    other_ca = make_tls(tmp_path / "other")["ca"]
    verdict = check_credential(token, config=config(tls, ca_bundle=str(other_ca)))
    assert verdict["valid"] is False and verdict["reasons"] == ["permanent:tls"]


def test_keys_signed_with_an_unknown_key_still_fail_after_a_bounded_fetch(servers: tuple[Server, Server],
                                                                          tls: dict[str, Path]) -> None:
    a, _ = servers
    issuer, _ = web_token(a, "forged")
    forged = PortableDid(issuer.uri, issuer.document, [keys.generate("Ed25519")])
    forged.private_keys[0]["kid"] = keys.thumbprint(issuer.private_keys[0])
    token = issue_vc(forged, create_credential(issuer.uri, {"id": "did:example:holder"}))
    assert check_credential(token, config=config(tls))["reasons"] == ["security:bad_signature"]
