"""Bounded GET of URLs that someone else chose: the one way to fetch what a presented credential names.

A credential's author picks the hosts a verifier fetches (its ``did:web`` document, its status list).
Followed naively, that is a server-side request forgery and a resource-exhaustion channel: the
author can point the verifier at ``169.254.169.254`` or an internal service, redirect it there,
trickle one byte a second, or serve a gzip bomb. :class:`Fetcher` refuses all of it:

* **HTTPS only**; plain HTTP only to a loopback address and only when the policy says so
  (``allow_http_loopback``, for local test doubles).
* **Addresses checked before connecting**: the name is resolved first and *every* address must be
  public (not private, loopback, link-local, multicast, reserved, unspecified, CGNAT; an IPv4-mapped
  or NAT64 IPv6 address is judged by its IPv4 address) or inside ``allow_networks``. The connection
  then goes to a checked address (TLS still verifies the certificate for the name), so a DNS answer
  that changes between the check and the connect (rebinding) is never used.
* **Redirects only on the same origin** (scheme, host, port), at most ``max_redirects``, each to
  the addresses already checked.
* **One total deadline** per fetch (name resolution, connect, TLS, redirects, headers and body), not
  a per-read timeout a slow server can renew forever: a watchdog shuts the socket at the deadline.
* **Size caps**: the body as sent (``max_bytes``, also checked against ``Content-Length`` before
  reading) and anything inflated (``max_decompressed_bytes``: a gzip/deflate ``Content-Encoding``
  here, a status list's bitstring in ``tributary.vc``), streamed, never one unbounded decompress.
* **A TTL cache** of successful answers, per fetcher (so per resolver, e.g. one verification task).

Proxies from the environment are not used: the address check must see the real destination.

Failures are classified: a refused scheme, address or redirect is a ``SecurityError``; a body over
a cap is a ``DataError`` (the author's server sent it); the deadline, a refused connection or a 5xx
is a ``TransientError``; a TLS verification failure and other statuses are ``PermanentError``.
404 and 410 are an answer (``None``), not an error. This module imports no system: callers pass
``system`` for error events.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urljoin, urlsplit

from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 2 * 1024 * 1024  # a DID document or a signed status list is kilobytes
DEFAULT_MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024  # a 2^27-entry status list; the spec's minimum is 16 KiB
DEFAULT_CACHE_TTL = 300.0  # the Bitstring Status List default ttl (5 minutes)
DEFAULT_MAX_REDIRECTS = 3
_CACHE_ENTRIES = 256
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TRUE = ("1", "true", "yes", "on")

# getaddrinfo cannot be given a timeout; it runs here so the deadline still holds (a stuck lookup
# keeps a worker, not the caller).
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tributary-fetch-dns")


def parse_networks(value: Any, *, system: str | None = None) -> tuple[IPNetwork, ...]:
    """``allow_networks`` from a Connection extra: a list, or one string separated by commas or spaces,
    of addresses or CIDR networks (``127.0.0.1/32``, ``10.20.0.0/16``, ``::1``)."""
    if value in (None, ""):
        return ()
    items: Iterable[Any] = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise PermanentError(f"allow_networks must be a list or a string, not {type(value).__name__}",
                             system=system, reason="config:allow_networks")
    networks = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise PermanentError(f"allow_networks: {item!r} is not an IP address or network", system=system,
                                 reason="config:allow_networks") from None
    return tuple(networks)


def parse_bool(value: Any) -> bool:
    """A boolean extra that may come as a JSON boolean or as a string from an environment variable."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def _effective(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, when it stands for one (mapped or NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    address = _effective(address)
    return (address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified
                                       or address.is_link_local or address.is_loopback))


def inflate(data: bytes, limit: int, *, system: str | None = None, what: str = "body",
            gzip_only: bool = False) -> bytes:
    """Decompress gzip (or, unless ``gzip_only``, zlib) ``data`` to at most ``limit`` bytes, in bounded
    steps; ``DataError('fetch:decompressed_too_large')`` beyond, ``DataError('fetch:bad_encoding')`` when
    it is not compressed data."""
    # wbits: +16 gzip header only, +32 either header
    decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | (16 if gzip_only else 32))
    out = bytearray()
    _feed(decoder, data, out, limit, system, what)
    if not decoder.eof:
        raise DataError(f"{what} is truncated compressed data", system=system, reason="fetch:bad_encoding")
    return bytes(out)


def _feed(decoder: Any, data: bytes, out: bytearray, limit: int, system: str | None, what: str) -> None:
    try:
        while data and not decoder.eof:
            # max_length keeps each step at most one byte past the limit, whatever the ratio
            out += decoder.decompress(data, limit - len(out) + 1)
            if len(out) > limit:
                raise DataError(f"{what} inflates past {limit} bytes", system=system,
                                reason="fetch:decompressed_too_large")
            data = decoder.unconsumed_tail
    except zlib.error as exc:
        raise DataError(f"{what} is not valid compressed data ({exc})", system=system,
                        reason="fetch:bad_encoding") from None


@dataclass(frozen=True)
class FetchPolicy:
    """What a :class:`Fetcher` may fetch, and how much. ``timeout`` is the total deadline of one fetch."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_http_loopback: bool = False
    ca_bundle: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    cache_ttl: float = DEFAULT_CACHE_TTL

    def allows(self, address: IPAddress) -> bool:
        return is_public(address) or any(_effective(address) in net or address in net for net in self.allow_networks)


@dataclass
class _Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host.lower(), self.port

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


@dataclass
class Fetcher:
    """Bounded GETs under a :class:`FetchPolicy` (see the module docstring). Thread-safe."""

    policy: FetchPolicy = field(default_factory=FetchPolicy)
    system: str | None = None
    getaddrinfo: Callable[..., list[Any]] | None = field(default=None, repr=False)  # None: socket.getaddrinfo
    _cache: OrderedDict[str, tuple[float, bytes]] = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # ------------------------------------------------------------------ public
    def get(self, url: str, *, accept: str = "application/json, application/jwt, */*;q=0.5") -> bytes | None:
        """The body of ``url`` (200), ``None`` for 404/410, or a classified error."""
        cached = self._cached(url)
        if cached is not None:
            return cached
        deadline = time.monotonic() + self.policy.timeout
        first = self._target(url)
        addresses = self._checked_addresses(first, deadline)
        target = first
        for _ in range(self.policy.max_redirects + 1):
            status, location, body = self._exchange(target, addresses, deadline, accept)
            if status in _REDIRECTS:
                target = self._redirect(url, first, target, location)
                continue
            if status == 200:
                self._store(url, body)
                return body
            if status in (404, 410):
                return None
            if status >= 500 or status == 429:
                raise TransientError(f"GET {url}: HTTP {status}", system=self.system, reason=f"http:{status}")
            raise PermanentError(f"GET {url}: HTTP {status}", system=self.system, reason=f"http:{status}")
        raise SecurityError(f"GET {url}: more than {self.policy.max_redirects} redirects", system=self.system,
                            reason="fetch:redirect")

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------ cache
    def _cached(self, url: str) -> bytes | None:
        if self.policy.cache_ttl <= 0:
            return None
        with self._lock:
            entry = self._cache.get(url)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._cache[url]
                return None
            return entry[1]

    def _store(self, url: str, body: bytes) -> None:
        if self.policy.cache_ttl <= 0:
            return
        with self._lock:
            self._cache[url] = (time.monotonic() + self.policy.cache_ttl, body)
            self._cache.move_to_end(url)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)

    # ------------------------------------------------------------------ checks before any connection
    def _target(self, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise SecurityError(f"not a fetchable URL: {url!r}", system=self.system, reason="fetch:url") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SecurityError(f"only https URLs are fetched, not {url!r}", system=self.system,
                                reason="fetch:scheme")
        if parts.username or parts.password:
            raise SecurityError(f"a fetched URL carries no credentials: {url!r}", system=self.system,
                                reason="fetch:url")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return _Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)

    def _checked_addresses(self, target: _Target, deadline: float) -> list[IPAddress]:
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else self._resolve(target, deadline)
        refused = [a for a in addresses if not self.policy.allows(a)]
        if refused:
            raise SecurityError(
                f"{target.host} resolves to {', '.join(map(str, refused))}: a private, loopback, link-local or "
                "reserved address that is not in the Connection's allow_networks", system=self.system,
                reason="fetch:address")
        if target.scheme == "http" and not (self.policy.allow_http_loopback
                                            and all(_effective(a).is_loopback for a in addresses)):
            raise SecurityError(f"plain http://{target.host_header} refused: https only (http only to loopback "
                                "with allow_http_loopback)", system=self.system, reason="fetch:scheme")
        return addresses

    def _resolve(self, target: _Target, deadline: float) -> list[IPAddress]:
        lookup = self.getaddrinfo or socket.getaddrinfo
        future = _RESOLVERS.submit(lookup, target.host, target.port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(deadline - time.monotonic(), 0.001))
        except concurrent.futures.TimeoutError:
            raise TransientError(f"resolving {target.host}: deadline of {self.policy.timeout} s passed",
                                 system=self.system, reason="fetch:deadline") from None
        except OSError as exc:
            raise TransientError(f"resolving {target.host}: {exc}", system=self.system, reason="network") from None
        addresses: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TransientError(f"{target.host} has no address", system=self.system, reason="network")
        return addresses

    def _redirect(self, url: str, first: _Target, current: _Target, location: str | None) -> _Target:
        if not location:
            raise PermanentError(f"GET {url}: redirect without a Location", system=self.system,
                                 reason="fetch:redirect")
        base = f"{current.scheme}://{current.host_header}{current.path}"
        target = self._target(urljoin(base, location))
        if target.origin != first.origin:
            raise SecurityError(f"GET {url}: redirect to another origin ({target.scheme}://{target.host_header}) "
                                "refused", system=self.system, reason="fetch:redirect")
        return target

    # ------------------------------------------------------------------ the exchange
    @cached_property
    def _tls(self) -> ssl.SSLContext:
        if self.policy.ca_bundle:
            return ssl.create_default_context(cafile=self.policy.ca_bundle)  # replaces the system store
        try:
            import certifi

            return ssl.create_default_context(cafile=certifi.where())  # what requests trusted before
        except ImportError:
            return ssl.create_default_context()

    def _connect(self, target: _Target, addresses: list[IPAddress], deadline: float) -> Any:
        from urllib3.connection import HTTPConnection, HTTPSConnection

        last: BaseException | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if target.scheme == "https":
                conn = HTTPSConnection(str(address), target.port, timeout=remaining, ssl_context=self._tls,
                                       server_hostname=target.host, assert_hostname=target.host)
            else:
                conn = HTTPConnection(str(address), target.port, timeout=remaining)
            try:
                conn.connect()
                return conn
            except ssl.SSLError as exc:
                conn.close()
                raise PermanentError(f"TLS verification failed for {target.host_header}: {exc}",
                                     system=self.system, reason="tls") from None
            except Exception as exc:  # OSError, or urllib3's NewConnectionError / SSLError (not OSErrors)
                conn.close()
                if type(exc).__name__ == "SSLError" or isinstance(exc.__cause__, ssl.SSLError):
                    raise PermanentError(f"TLS verification failed for {target.host_header}: {exc}",
                                         system=self.system, reason="tls") from None
                last = exc
        if time.monotonic() >= deadline:
            raise TransientError(f"connecting to {target.host_header}: deadline of {self.policy.timeout} s passed",
                                 system=self.system, reason="fetch:deadline")
        raise TransientError(f"connecting to {target.host_header}: {type(last).__name__}: {last}",
                             system=self.system, reason="network")

    def _exchange(self, target: _Target, addresses: list[IPAddress], deadline: float,
                  accept: str) -> tuple[int, str | None, bytes]:
        conn = self._connect(target, addresses, deadline)
        # The watchdog makes the deadline total: at expiry it shuts the socket, which ends any blocked read
        # (headers or body), however slowly the server trickles bytes.
        sock = conn.sock
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0), _shut, args=(sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("GET", target.path, headers={"Host": target.host_header, "Accept": accept,
                                                      "Accept-Encoding": "gzip, deflate", "User-Agent": "tributary"},
                         preload_content=False, decode_content=False)
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                return response.status, response.headers.get("Location"), b""
            if response.status != 200:
                return response.status, None, b""
            return 200, None, self._body(response, sock, target, deadline)
        except (DataError, SecurityError, PermanentError, TransientError):
            raise
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"TLS verification failed for {target.host_header}: {exc}", system=self.system,
                                 reason="tls") from None
        except Exception as exc:  # socket, http.client and urllib3 errors: what happened depends on the clock
            if time.monotonic() >= deadline:
                raise TransientError(f"GET {target.host_header}{target.path}: deadline of {self.policy.timeout} s "
                                     "passed", system=self.system, reason="fetch:deadline") from None
            raise TransientError(f"GET {target.host_header}{target.path}: {type(exc).__name__}: {exc}",
                                 system=self.system, reason="network") from None
        finally:
            watchdog.cancel()
            conn.close()

    def _body(self, response: Any, sock: Any, target: _Target, deadline: float) -> bytes:
        what = f"{target.host_header}{target.path}"
        limit = self.policy.max_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise DataError(f"{what} announces {int(declared)} bytes, more than the cap of {limit}",
                            system=self.system, reason="fetch:too_large")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise DataError(f"{what}: unsupported Content-Encoding {encoding!r}", system=self.system,
                            reason="fetch:bad_encoding")
        decoder = None if encoding == "identity" else zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
        raw = 0
        out = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(f"GET {what}: deadline of {self.policy.timeout} s passed", system=self.system,
                                     reason="fetch:deadline")
            if sock.fileno() != -1:  # urllib3 closes it once the announced length is read
                sock.settimeout(remaining)
            chunk = response.read(_CHUNK, decode_content=False)
            if not chunk:
                break
            raw += len(chunk)
            if raw > limit:
                raise DataError(f"{what} is larger than the cap of {limit} bytes", system=self.system,
                                reason="fetch:too_large")
            if decoder is None:
                out += chunk
            else:
                _feed(decoder, chunk, out, self.policy.max_decompressed_bytes, self.system, what)
        if time.monotonic() >= deadline:  # an EOF caused by the watchdog is not a complete body
            raise TransientError(f"GET {what}: deadline of {self.policy.timeout} s passed", system=self.system,
                                 reason="fetch:deadline")
        if declared is not None and declared.strip().isdigit() and raw < int(declared):
            raise TransientError(f"GET {what}: connection closed after {raw} of {declared} bytes",
                                 system=self.system, reason="network")
        if decoder is not None and not decoder.eof:
            raise DataError(f"{what}: truncated {encoding} body", system=self.system, reason="fetch:bad_encoding")
        return bytes(out)


def _shut(sock: Any) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the TLS object stays with the reading thread,
    # only the file descriptor is shut, so its blocked recv returns at once.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
