"""Start and stop a real ``anvil`` node on 127.0.0.1 (a free port, chain id 31337, accounts derived
from the well-known test mnemonic) and wait until it answers JSON-RPC.

The binary comes from the npm package ``@foundry-rs/anvil`` (``npm ci`` at the project root): its
platform package ships the native executable, used directly (no node wrapper in between, so a
signal reaches anvil itself). ``TRIBUTARY_ANVIL_BIN`` or an ``anvil`` on PATH also work.

    with running_anvil() as node:
        node.url, node.accounts[0].address, node.rpc("eth_blockNumber")
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devnets._process import ManagedProcess, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHAIN_ID = 31337
# The public test mnemonic used by Hardhat / Foundry: every key below is known to the world.
# Never send anything of value to these addresses.
MNEMONIC = "test test test test test test test test test test test junk"


@dataclass(frozen=True)
class DevAccount:
    address: str
    private_key: str


# The first accounts anvil derives from MNEMONIC (m/44'/60'/0'/0/i), funded with 10,000 ETH each.
ANVIL_ACCOUNTS: tuple[DevAccount, ...] = (
    DevAccount("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
               "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
    DevAccount("0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
               "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
    DevAccount("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
               "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"),
    DevAccount("0x90F79bf6EB2c4f870365E785982E1f101E93b906",
               "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"),
)

_PLATFORM_PACKAGES = {("Linux", "x86_64"): "anvil-linux-amd64", ("Linux", "aarch64"): "anvil-linux-arm64",
                      ("Darwin", "arm64"): "anvil-darwin-arm64", ("Darwin", "x86_64"): "anvil-darwin-amd64"}


def anvil_binary() -> str:
    """Path of the anvil executable: $TRIBUTARY_ANVIL_BIN, node_modules, then PATH."""
    explicit = os.environ.get("TRIBUTARY_ANVIL_BIN")
    if explicit:
        return explicit
    package = _PLATFORM_PACKAGES.get((platform.system(), platform.machine()))
    candidates = []
    if package:
        candidates.append(PROJECT_ROOT / "node_modules" / "@foundry-rs" / package / "bin" / "anvil")
    candidates.append(PROJECT_ROOT / "node_modules" / ".bin" / "anvil")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError("anvil not found: run `npm ci` at the project root (package @foundry-rs/anvil)"
                            " or set TRIBUTARY_ANVIL_BIN")


@dataclass
class AnvilHandle(ManagedProcess):
    port: int
    process: subprocess.Popen
    chain_id: int = CHAIN_ID
    accounts: tuple[DevAccount, ...] = ANVIL_ACCOUNTS
    log_path: Path | None = None
    _ids: list[int] = field(default_factory=lambda: [0])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 10) -> Any:
        """One JSON-RPC call (for tests and tools: cheat codes like ``anvil_reorg``, ``evm_mine``)."""
        self._ids[0] += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._ids[0], "method": method, "params": params or []})
        request = urllib.request.Request(self.url, body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def alive(self) -> bool:
        return self.process.poll() is None


def start_anvil(
    port: int | None = None,
    *,
    chain_id: int = CHAIN_ID,
    accounts: int = 10,
    block_time: float | None = None,
    extra_args: list[str] | None = None,
    log_path: Path | None = None,
    timeout: float = 30,
) -> AnvilHandle:
    """Start anvil on 127.0.0.1 and return once ``eth_chainId`` answers.

    ``block_time`` None: automine (one block per transaction, as soon as it arrives).
    """
    port = port or free_port()
    cmd = [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id),
           "--mnemonic", MNEMONIC, "--accounts", str(accounts), "--silent"]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    cmd += extra_args or []
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    finally:
        if log_path:
            out.close()
    handle = AnvilHandle(port=port, process=process, chain_id=chain_id, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"anvil exited with {process.returncode} before it was ready: {' '.join(cmd)}")
        try:
            if int(handle.rpc("eth_chainId", timeout=1), 16) == chain_id:
                return handle
        except OSError:
            pass
        if time.monotonic() > deadline:
            handle.stop()
            raise TimeoutError(f"anvil did not answer on {handle.url} within {timeout}s")
        time.sleep(0.02)


@contextmanager
def running_anvil(**kwargs: Any) -> Iterator[AnvilHandle]:
    handle = start_anvil(**kwargs)
    try:
        yield handle
    finally:
        handle.stop()
