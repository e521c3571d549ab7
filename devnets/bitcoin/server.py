"""HTTP JSON-RPC front end with Bitcoin Core's envelope rules (src/httprpc.cpp, src/rpc/request.cpp).

- HTTP basic auth (rpcuser/rpcpassword or the ``__cookie__`` cookie); wrong credentials -> 401.
- JSON-RPC 1.0 style replies ``{"result", "error", "id"}``: an error makes the HTTP status 500,
  404 for -32601 (method not found) and 400 for -32600 (invalid request).
- Requests with ``"jsonrpc": "2.0"`` get 2.0 replies (Core 28+): HTTP 200, only one of
  ``result``/``error``, and no body (204) for notifications without an id.
- A batch (JSON array) always answers HTTP 200 with an array of replies.
- ``/wallet/<name>`` selects the wallet of wallet methods.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import urllib.parse
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .encoding import dumps
from .errors import IN_WARMUP, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RPCError
from .rpc import Node


class RPCServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, node: Node | None, user: str, password: str, host: str = "127.0.0.1"):
        super().__init__((host, port), RPCHandler)
        self.node = node
        self.expected_auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.lock = threading.RLock()  # the node is single-threaded, like Core's cs_main


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


class RPCHandler(BaseHTTPRequestHandler):
    server: RPCServer
    protocol_version = "HTTP/1.1"
    server_version = "bitcoin-json-rpc/v28.0.0"
    # Headers and body go out in two writes; with Nagle on, a kept-alive client waited ~40 ms
    # (delayed ACK) for the second one on every call.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet, like Core without -debug=http
        pass

    def _send(self, status: int, body: str | None, extra_headers: dict[str, str] | None = None) -> None:
        data = body.encode() + b"\n" if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(405, None)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        return hmac.compare_digest(header[6:].strip(), self.server.expected_auth)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length)
        if not self._authorized():
            self._send(401, None, {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
            return
        path = urllib.parse.unquote(self.path)
        wallet_name = path[len("/wallet/") :] if path.startswith("/wallet/") else None
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            self._send(500, dumps({"result": None, "error": _error(PARSE_ERROR, "Parse error"), "id": None}))
            return
        if isinstance(request, list):
            replies = [self._handle_one(item, wallet_name)[1] for item in request]
            self._send(200, dumps([r for r in replies if r is not None]))
            return
        if not isinstance(request, dict):
            self._send(
                500, dumps({"result": None, "error": _error(PARSE_ERROR, "Top-level object parse error"), "id": None})
            )
            return
        status, reply = self._handle_one(request, wallet_name)
        if reply is None:
            self._send(204, None)
        else:
            self._send(status, dumps(reply))

    def _handle_one(self, request: Any, wallet_name: str | None) -> tuple[int, dict[str, Any] | None]:
        if not isinstance(request, dict):
            return 400, {"result": None, "error": _error(INVALID_REQUEST, "Invalid Request object"), "id": None}
        req_id = request.get("id")
        v2 = request.get("jsonrpc") == "2.0"
        if "jsonrpc" in request and request["jsonrpc"] not in ("1.0", "2.0"):
            return 400, {
                "result": None,
                "error": _error(INVALID_REQUEST, "JSON-RPC version not supported"),
                "id": req_id,
            }
        try:
            if "method" not in request:
                raise RPCError(INVALID_REQUEST, "Missing method")
            node = self.server.node
            if node is None:  # still loading the chain, as Core answers before init completes
                raise RPCError(IN_WARMUP, "Loading block index…")
            with self.server.lock:
                result = node.call(request["method"], request.get("params"), wallet_name)
        except RPCError as exc:
            error = _error(exc.code, exc.message)
        except Exception as exc:  # a devnet bug: report it like Core reports an internal error
            error = _error(INTERNAL_ERROR, f"Internal error: {type(exc).__name__}: {exc}")
        else:
            if v2:
                return (200, None) if "id" not in request else (200, {"jsonrpc": "2.0", "result": result, "id": req_id})
            return 200, {"result": result, "error": None, "id": req_id}
        if v2:
            return (200, None) if "id" not in request else (200, {"jsonrpc": "2.0", "error": error, "id": req_id})
        status = {METHOD_NOT_FOUND: 404, INVALID_REQUEST: 400}.get(error["code"], 500)
        return status, {"result": None, "error": error, "id": req_id}
