"""Start the Stacks devnet (``node devnets/stacks/server.mjs``) for tests and the run command.

``with start_devnet() as node: node.url`` starts it on a free port and waits for its ready line;
``stop()`` ends that one process. ``npm ci`` in ``devnets/stacks`` must have run (see README.md).
"""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY_PREFIX = "stacks devnet ready on "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def installed() -> bool:
    """``node`` is on PATH and ``npm ci`` has installed the SDKs."""
    return shutil.which("node") is not None and (HERE / "node_modules" / "@hirosystems" / "clarinet-sdk").is_dir()


@dataclass
class StacksDevnet:
    port: int
    process: subprocess.Popen
    network: str = "testnet"
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> StacksDevnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_devnet(port: int | None = None, *, network: str = "testnet", epoch: str = "3.3",
                 timeout: float = 60) -> StacksDevnet:
    """Start the server and wait (up to ``timeout`` s) for ``stacks devnet ready on ...``."""
    if not installed():
        raise RuntimeError(f"the Stacks devnet is not installed: run `npm ci` in {HERE}")
    port = port if port is not None else free_port()
    cmd = ["node", str(HERE / "server.mjs"), "--port", str(port), "--network", network, "--epoch", epoch]
    process = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    handle = StacksDevnet(port, process, network)
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
            raise RuntimeError("stacks devnet did not start:\n" + "".join(handle.output))


def main() -> None:
    """``python -m devnets.stacks.process [port]``: run in the foreground until interrupted."""
    import sys

    node = start_devnet(int(sys.argv[1]) if len(sys.argv) > 1 else 20443)
    print(f"stacks devnet at {node.url} (pid {node.process.pid}); Ctrl-C stops it", flush=True)
    try:
        node.process.wait()
    except KeyboardInterrupt:
        node.stop()


if __name__ == "__main__":
    main()
