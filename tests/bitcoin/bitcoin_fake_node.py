"""A fake Bitcoin Core JSON-RPC server (http.server in a thread): the place for answers the devnet cannot give.

The Bitcoin peer of the tests is the regtest devnet (``devnets/bitcoin``, fixtures ``regtest`` and
``regtest_node`` in ``conftest.py``): a test of what a node normally answers, errors included (bad
credentials, unknown block, height out of range, a rejected or already known transaction, the wrong
chain), runs against it. This fake node is only for what the devnet cannot be made to answer on
demand:

* malformed answers: not JSON, not JSON-RPC, a wrong id, neither result nor error, a batch with items
  missing (``raw``);
* other versions of Core: pre-v28 envelopes (HTTP 500/404 with a JSON body), other reject wordings;
* answers in a shape or timing we script: batch items out of order (``reverse_batches``), warm-up
  errors then success, an answer after the client's timeout (``delay``), a block other than the one
  asked for.

A new test that only needs a normal answer belongs with the devnet (``test_bitcoin_hook_devnet.py``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FakeNode:
    """Answers like Core >= 28 to JSON-RPC 2.0: HTTP 200 with result or error; 401 without valid basic auth.

    ``methods`` maps a method name to ``f(params, wallet) -> result`` (raise RpcFault for an error).
    ``raw`` (status, body) short-circuits the next answers with exactly those bytes.
    """

    def __init__(self) -> None:
        self.user, self.password = "alice", "correct horse"
        self.methods: dict[str, Callable[[list[Any], str | None], Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.raw: tuple[int, bytes] | None = None
        self.reverse_batches = False
        self.delay = 0.0
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                node.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if node.delay:
                    time.sleep(node.delay)
                expected = "Basic " + base64.b64encode(f"{node.user}:{node.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._send(401, b"")
                if node.raw is not None:
                    return self._send(*node.raw)
                wallet = self.path.split("/wallet/", 1)[1] if "/wallet/" in self.path else None
                document = json.loads(body, parse_float=Decimal)
                if isinstance(document, list):
                    answers = [node.answer(item, wallet) for item in document]
                    if node.reverse_batches:
                        answers.reverse()
                    return self._send(200, node.encode(answers))
                return self._send(200, node.encode(node.answer(document, wallet)))

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def encode(document: Any) -> bytes:
        return json.dumps(document, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)).encode()

    def answer(self, request: dict[str, Any], wallet: str | None) -> dict[str, Any]:
        method = self.methods.get(request["method"])
        try:
            if method is None:
                raise RpcFault(-32601, "Method not found")
            return {"jsonrpc": "2.0", "id": request["id"], "result": method(request.get("params", []), wallet)}
        except RpcFault as fault:
            return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": fault.code, "message": fault.message}}

    def posted(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fails(code: int, message: str) -> Callable[[list[Any], str | None], Any]:
    """A method that always answers the error ``code``."""

    def method(params: list[Any], wallet: str | None) -> Any:
        raise RpcFault(code, message)

    return method
