"""Start the devnet as a subprocess for tests: ``with start_devnet(tmp_path) as node: node.url``."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "bitcoin devnet ready on "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DevnetHandle:
    datadir: Path
    port: int
    process: subprocess.Popen
    rpcuser: str | None = None
    rpcpassword: str | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cookie_path(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    @property
    def auth(self) -> tuple[str, str]:
        """(user, password): the configured pair, else the cookie's."""
        if self.rpcuser is not None and self.rpcpassword is not None:
            return self.rpcuser, self.rpcpassword
        user, _, password = self.cookie_path.read_text().strip().partition(":")
        return user, password

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> DevnetHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_devnet(
    datadir: Path | str,
    port: int | None = None,
    rpcuser: str | None = None,
    rpcpassword: str | None = None,
    timeout: float = 30,
) -> DevnetHandle:
    """Start ``python -m devnets.bitcoin`` and wait for its ready line."""
    datadir = Path(datadir)
    port = port or free_port()
    cmd = [sys.executable, "-m", "devnets.bitcoin", "--datadir", str(datadir), "--rpcport", str(port)]
    if rpcuser is not None:
        cmd += ["--rpcuser", rpcuser, "--rpcpassword", rpcpassword or ""]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    handle = DevnetHandle(datadir, port, process, rpcuser, rpcpassword)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            handle.output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            line = ""
        if line and line.startswith(READY_PREFIX):
            return handle
        if line is None or remaining <= 0:
            handle.stop()
            raise RuntimeError("bitcoin devnet did not start:\n" + "".join(handle.output))
