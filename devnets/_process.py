"""What every devnet's process helper shares: a free port, starting a server and waiting for its
ready line, and stopping it (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ManagedProcess:
    """Mixin for handles with a ``process``: ``stop()`` and use as a context manager."""

    process: subprocess.Popen
    stop_timeout: float = 10

    def stop(self, timeout: float | None = None) -> int:
        return stop_process(self.process, self.stop_timeout if timeout is None else timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


MAX_OUTPUT_LINES = 2000  # what a handle keeps of a server's output (for error messages)


def start_with_ready_line(cmd: Sequence[str], ready: str | Callable[[str], bool], output: list[str], *, name: str,
                          timeout: float = 30, cwd: Path | str | None = None,
                          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` (stdout+stderr collected into ``output``) and return once a line starts with
    ``ready`` (a prefix) or satisfies it (a predicate); stop it and raise ``RuntimeError`` with its
    output if it exits or times out first."""
    is_ready = ready if callable(ready) else (lambda line: line.startswith(ready))
    process = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if len(output) < MAX_OUTPUT_LINES:
                output.append(line)
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
        if line and is_ready(line):
            return process
        if line is None or remaining <= 0:
            stop_process(process)
            raise RuntimeError(f"{name} did not start:\n" + "".join(output[-50:]))
