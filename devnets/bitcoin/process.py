"""Start the devnet as a subprocess for tests: ``with start_devnet(tmp_path) as node: node.url``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devnets._process import ManagedProcess, free_port, start_with_ready_line

__all__ = ["PROJECT_ROOT", "READY_PREFIX", "DevnetHandle", "free_port", "start_devnet"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "bitcoin devnet ready on "


@dataclass
class DevnetHandle(ManagedProcess):
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

    stop_timeout = 15


def start_devnet(
    datadir: Path | str,
    port: int | None = None,
    rpcuser: str | None = None,
    rpcpassword: str | None = None,
    timeout: float = 30,
    mine_every: float = 0.0,
) -> DevnetHandle:
    """Start ``python -m devnets.bitcoin`` and wait for its ready line."""
    datadir = Path(datadir)
    port = port or free_port()
    cmd = [sys.executable, "-m", "devnets.bitcoin", "--datadir", str(datadir), "--rpcport", str(port)]
    if rpcuser is not None:
        cmd += ["--rpcuser", rpcuser, "--rpcpassword", rpcpassword or ""]
    if mine_every:
        cmd += ["--mine-every", str(mine_every)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    output: list[str] = []
    process = start_with_ready_line(cmd, READY_PREFIX, output, name="bitcoin devnet", timeout=timeout,
                                    cwd=PROJECT_ROOT, env=env)
    return DevnetHandle(datadir, port, process, rpcuser, rpcpassword, output)
