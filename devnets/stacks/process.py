"""Start the Stacks devnet (``node devnets/stacks/server.mjs``) for tests and the run command.

``with start_devnet() as node: node.url`` starts it on a free port and waits for its ready line;
``stop()`` ends that one process. ``npm ci`` in ``devnets/stacks`` must have run (see README.md).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devnets._process import ManagedProcess, free_port, start_with_ready_line

__all__ = ["HERE", "READY_PREFIX", "StacksDevnet", "free_port", "installed", "start_devnet"]

HERE = Path(__file__).resolve().parent
READY_PREFIX = "stacks devnet ready on "


def installed() -> bool:
    """``node`` is on PATH and ``npm ci`` has installed the SDKs."""
    return shutil.which("node") is not None and (HERE / "node_modules" / "@hirosystems" / "clarinet-sdk").is_dir()


@dataclass
class StacksDevnet(ManagedProcess):
    port: int
    process: subprocess.Popen
    network: str = "testnet"
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_devnet(port: int | None = None, *, network: str = "testnet", epoch: str = "3.3",
                 timeout: float = 60) -> StacksDevnet:
    """Start the server and wait (up to ``timeout`` s) for ``stacks devnet ready on ...``."""
    if not installed():
        raise RuntimeError(f"the Stacks devnet is not installed: run `npm ci` in {HERE}")
    port = port if port is not None else free_port()
    cmd = ["node", str(HERE / "server.mjs"), "--port", str(port), "--network", network, "--epoch", epoch]
    output: list[str] = []
    process = start_with_ready_line(cmd, READY_PREFIX, output, name="stacks devnet", timeout=timeout, cwd=HERE)
    return StacksDevnet(port, process, network, output)


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
