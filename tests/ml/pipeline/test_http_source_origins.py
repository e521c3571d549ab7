"""The HTTP source sends the Connection's credentials only to the configured origin: a next-page link
or a redirect to another origin is a security error before anything is sent there."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tributary.core.errors import ErrorClass, SecurityError, classify
from tributary.ml.pipeline.sources import open_source, origin

pytestmark = pytest.mark.unit

COLUMNS = [{"name": "id", "type": "int"}]


class Server:
    """A JSON API on its own port: ``routes`` maps a path to (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], Any]] = {}
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                       "x_api_key": self.headers.get("X-Api-Key")})
                status, headers, body = outer.routes.get(self.path.split("?")[0], (404, {}, {"error": "none"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll: shutdown() waits for the serving loop to notice (0.5 s per server by default).
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    home, other = Server(), Server()
    other.routes["/steal"] = (200, {}, {"data": [{"id": 99}]})
    yield home, other
    home.close()
    other.close()


def _connection(monkeypatch: pytest.MonkeyPatch, server: Server, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PAGED_API", json.dumps({
        "conn_type": "http", "host": server.url.removeprefix("http://"), "schema": "http",
        "login": "svc", "password": "s3cret-pw", "extra": {"headers": {"X-Api-Key": "k-123"}, **extra}}))


def _read(monkeypatch: pytest.MonkeyPatch, **config: Any) -> list[dict[str, Any]]:
    source = open_source({"kind": "http", "conn_id": "paged_api", "endpoint": "/first", "records_path": "data",
                          "pagination": {"type": "next_url", "next_url_path": "next"}, **config}, COLUMNS, 100)
    return [row for batch in source.batches() for row in batch.to_pylist()]


def test_a_next_link_to_another_origin_is_refused_without_sending_credentials(
        servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch) -> None:
    home, other = servers
    home.routes["/first"] = (200, {}, {"data": [{"id": 1}], "next": other.url + "/steal"})
    _connection(monkeypatch, home)
    with pytest.raises(SecurityError, match="not the configured origin") as caught:
        _read(monkeypatch)
    assert classify(caught.value).error_class is ErrorClass.SECURITY
    assert home.requests and home.requests[0]["authorization"].startswith("Basic ")
    assert other.requests == []  # nothing, credentials least of all, reached the other server


def test_a_redirect_to_another_origin_is_refused_before_it_is_followed(
        servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch) -> None:
    home, other = servers
    home.routes["/first"] = (302, {"Location": other.url + "/steal"}, {})
    _connection(monkeypatch, home)
    with pytest.raises(SecurityError, match="a redirect points to"):
        _read(monkeypatch)
    assert other.requests == []


def test_same_origin_links_and_redirects_are_followed(servers: tuple[Server, Server],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = servers
    home.routes["/first"] = (200, {}, {"data": [{"id": 1}], "next": "/moved"})
    home.routes["/moved"] = (301, {"Location": home.url + "/second"}, {})
    home.routes["/second"] = (200, {}, {"data": [{"id": 2}], "next": None})
    _connection(monkeypatch, home)
    assert [r["id"] for r in _read(monkeypatch)] == ["1", "2"]
    assert all(r["authorization"] and r["x_api_key"] == "k-123" for r in home.requests)


def test_an_origin_allow_listed_on_the_connection_is_followed(servers: tuple[Server, Server],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home, other = servers
    home.routes["/first"] = (200, {}, {"data": [{"id": 1}], "next": other.url + "/steal"})
    _connection(monkeypatch, home, allowed_origins=[other.url])
    assert [r["id"] for r in _read(monkeypatch)] == ["1", "99"]
    assert len(other.requests) == 1


@pytest.mark.parametrize(("url", "expected"), [
    ("https://API.example.com/x?y=1", "https://api.example.com:443"),
    ("http://example.com:8080/", "http://example.com:8080"),
    ("http://example.com", "http://example.com:80"),
])
def test_origin_makes_the_default_port_explicit(url: str, expected: str) -> None:
    assert origin(url) == expected
