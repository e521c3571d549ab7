"""A Pkarr relay test double: ``PUT /<z-base-32 key>`` stores a signed payload, ``GET`` returns it.

Body: ``sig(64) || seq(8, big-endian) || v`` with ``sig`` = Ed25519 over bencoded
``3:seqi<seq>e1:v<len>:<v>`` by the key the path names. Like the real relays it rejects a bad
signature (400), a ``v`` over 1000 bytes (413) and a ``seq`` not above the stored one (409).
It does not talk to the Mainline DHT: records live in memory (and in ``--data-dir`` when given).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def _zbase32_key(text: str) -> bytes | None:
    if len(text) != 52 or any(c not in ZBASE32 for c in text):
        return None
    bits = "".join(f"{ZBASE32.index(c):05b}" for c in text)[:256]
    return int(bits, 2).to_bytes(32, "big")


class PkarrRelay:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir: str | Path | None = None) -> None:
        self.records: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.data_dir = Path(data_dir) if data_dir else None
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            for path in self.data_dir.glob("*.bin"):
                self.records[path.stem] = path.read_bytes()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                key = self.path.strip("/")
                with relay.lock:
                    body = relay.records.get(key)
                if body is None:
                    self._send(404, b"not found")
                else:
                    self._send(200, body, "application/pkarr.org/relays#payload")

            def do_PUT(self) -> None:
                key = self.path.strip("/")
                public = _zbase32_key(key)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if public is None:
                    return self._send(400, b"invalid public key")
                if len(body) < 72:
                    return self._send(400, b"payload too short")
                sig, seq, value = body[:64], int.from_bytes(body[64:72], "big"), body[72:]
                if len(value) > 1000:
                    return self._send(413, b"v larger than 1000 bytes")
                signable = f"3:seqi{seq}e1:v{len(value)}:".encode() + value
                try:
                    Ed25519PublicKey.from_public_bytes(public).verify(sig, signable)
                except (InvalidSignature, ValueError):
                    return self._send(400, b"invalid signature")
                with relay.lock:
                    current = relay.records.get(key)
                    if current is not None and int.from_bytes(current[64:72], "big") >= seq:
                        return self._send(409, b"seq not higher than the stored one")
                    relay.records[key] = body
                    if relay.data_dir:
                        (relay.data_dir / f"{key}.bin").write_bytes(body)
                self._send(204)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread: threading.Thread | None = None

    def start(self) -> PkarrRelay:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
