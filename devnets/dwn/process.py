"""Start real ``@web5/dwn-server`` 0.6.1 instances (npm, SQLite stores) for tests and the run command.

``start_dwn_server(data_dir)`` starts one on a free port (or ``port``) with its SQLite files in
``data_dir`` and waits for its ready line (``HttpServer listening on port N``) and ``GET /health``;
``start_peers(2, root)`` starts several, each with its own data dir. ``stop()`` / ``kill()`` end that
one process; starting again on the same ``data_dir`` keeps the stored messages. ``npm ci`` in
``devnets/dwn`` must have run (scripts/bootstrap.sh does it; see README.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devnets._process import ManagedProcess, free_port, start_with_ready_line

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "node_modules" / "@web5" / "dwn-server"
MAIN = PACKAGE / "dist" / "esm" / "src" / "main.js"
READY_PREFIX = "HttpServer listening on port "


def installed() -> bool:
    """``node`` is on PATH and ``npm ci`` has installed the server (with better-sqlite3 built)."""
    return (shutil.which("node") is not None and MAIN.is_file()
            and (HERE / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node").is_file())


def server_env(port: int, data_dir: Path) -> dict[str, str]:
    """The server's configuration (environment variables of its README), all stores in ``data_dir``."""
    db = f"sqlite://{data_dir.resolve()}/dwn.db"  # sqlite:// + absolute path = three slashes
    return {
        **os.environ,
        "DS_PORT": str(port),
        # each store set on its own: with DWN_STORAGE set, the server would also keep a registration
        # store and answer 401 "Not a registered tenant" to every DID that has not registered
        "DWN_STORAGE_MESSAGES": db,
        "DWN_STORAGE_DATA": db,
        "DWN_STORAGE_EVENTS": db,
        "DWN_STORAGE_RESUMABLE_TASKS": db,
        "DWN_TTL_CACHE_URL": f"sqlite://{data_dir.resolve()}/ttl.db",
        "DS_WEBSOCKET_SERVER": "off",
        "DWN_BASE_URL": f"http://127.0.0.1:{port}",
        "DWN_SERVER_PACKAGE_JSON": str(PACKAGE / "package.json"),
        "DWN_SERVER_LOG_LEVEL": os.environ.get("DWN_SERVER_LOG_LEVEL", "INFO"),
    }


@dataclass
class DwnServer(ManagedProcess):
    port: int
    data_dir: Path
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL: a crash, no clean shutdown (used to test resuming replication)."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def restart(self, timeout: float = 60) -> DwnServer:
        """Start a new process on the same port and data dir (stops this one first)."""
        self.stop()
        return start_dwn_server(self.data_dir, port=self.port, timeout=timeout)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_dwn_server(data_dir: str | Path, *, port: int | None = None, timeout: float = 60) -> DwnServer:
    """Start one server and wait (up to ``timeout`` s) for its ready line and a healthy ``/health``."""
    if not installed():
        raise RuntimeError(f"@web5/dwn-server is not installed: run `npm ci` in {HERE}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    output: list[str] = []
    process = start_with_ready_line(["node", str(MAIN)], lambda line: READY_PREFIX in line, output,
                                    name="dwn-server", timeout=timeout, cwd=data_dir, env=server_env(port, data_dir))
    handle = DwnServer(port, data_dir, process, output)
    deadline = time.monotonic() + timeout
    while not _healthy(handle.url):
        if time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError("dwn-server never answered /health:\n" + "".join(output[-50:]))
        time.sleep(0.05)
    return handle


def start_peers(count: int, root: str | Path, *, ports: list[int] | None = None) -> list[DwnServer]:
    """``count`` servers, data dirs ``root/dwn-0``, ``root/dwn-1``, ...; all stopped if one fails."""
    servers: list[DwnServer] = []
    try:
        for index in range(count):
            port = ports[index] if ports else None
            servers.append(start_dwn_server(Path(root) / f"dwn-{index}", port=port))
    except Exception:
        for server in servers:
            server.stop()
        raise
    return servers


def main() -> None:
    """``python -m devnets.dwn.process [--count 2] [--port 3001] [--data-dir var/dwn]``: foreground."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--port", type=int, default=3001, help="first port; the next ones follow")
    parser.add_argument("--ports", type=int, nargs="+", default=None, help="one port per server (overrides --port)")
    parser.add_argument("--data-dir", default="var/dwn")
    args = parser.parse_args()
    ports = args.ports or [args.port + i for i in range(args.count)]
    if len(ports) != args.count:
        parser.error(f"--ports names {len(ports)} ports for --count {args.count}")

    def stop_on_sigterm(signum: int, _frame: object) -> None:  # stop the servers, as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    servers = start_peers(args.count, args.data_dir, ports=ports)
    for server in servers:
        print(f"dwn-server ready on {server.url} (data {server.data_dir}, pid {server.process.pid})", flush=True)
    try:
        while all(server.running for server in servers):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
