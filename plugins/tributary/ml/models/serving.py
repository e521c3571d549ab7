"""The serving endpoint: MLflow's scoring server as a managed subprocess, and its smoke test.

``start`` runs ``python -m mlflow models serve -m models:/<name>/<version> --env-manager local`` (no
environment is built, nothing is downloaded: the venv that trained the model serves it) in its own
process group, bound to 127.0.0.1, and waits until ``/ping`` answers. It answers MLflow's JSON
scoring protocol at ``/invocations`` (``dataframe_split``, ``dataframe_records``, ``instances``,
``inputs``) and ``/ping`` / ``/health``. The served version is the one ``champion`` pointed at when
the task resolved it, so the smoke test and the records name exactly what is running.

A state file per model (``<state>/serving/<model>.json``: pid, process start time, port, version)
makes every step idempotent across task processes and retries: ``start`` reuses a live endpoint of
the same version and port and replaces one of another version; ``stop`` stops what the file names
(checking the process start time, so a recycled pid is never signalled) and is a no-op otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError, TransientError
from tributary.ml import SYSTEM

log = logging.getLogger(__name__)


def state_root() -> Path:
    base = os.environ.get("TRIBUTARY_STATE_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "tributary"
    path = Path(base) / "serving"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Endpoint:
    model_name: str
    version: str
    host: str
    port: int
    pid: int
    start_ticks: int
    log_path: str
    tmp_dir: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "url": self.url, "model_uri": self.model_uri}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Endpoint:
        return cls(**{k: value[k] for k in cls.__dataclass_fields__})


def _state_path(model_name: str) -> Path:
    return state_root() / f"{model_name}.json"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (``/proc/<pid>/stat`` field 22); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: int, start_ticks: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own child that exited: reap it
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    return _start_ticks(pid) == start_ticks


def _group_alive(pgid: int) -> bool:
    """Does any process of the endpoint's group (the CLI and its uvicorn child) still run?"""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is our child, so it does not linger as a zombie
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def ping(url: str, timeout: float = 2.0) -> bool:
    import requests

    try:
        return requests.get(f"{url}/ping", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def current(model_name: str) -> Endpoint | None:
    """The live endpoint recorded for ``model_name`` (a stale record is removed)."""
    path = _state_path(model_name)
    if not path.exists():
        return None
    endpoint = Endpoint.from_dict(json.loads(path.read_text()))
    if _alive(endpoint.pid, endpoint.start_ticks):
        return endpoint
    _cleanup(endpoint)
    return None


def _cleanup(endpoint: Endpoint) -> None:
    _state_path(endpoint.model_name).unlink(missing_ok=True)
    shutil.rmtree(endpoint.tmp_dir, ignore_errors=True)


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(model_name: str, timeout: float = 20.0) -> bool:
    """Stop the recorded endpoint (SIGTERM to its process group, SIGKILL after ``timeout``)."""
    endpoint = current(model_name)
    if endpoint is None:
        return False
    # The whole group must be gone, not just the leader: uvicorn holds the port until it has shut down.
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(endpoint.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(endpoint.pid):
            time.sleep(0.1)
        if not _group_alive(endpoint.pid):
            break
    _cleanup(endpoint)
    log.info("stopped the %s v%s endpoint at %s", model_name, endpoint.version, endpoint.url)
    return True


def start(
    model_name: str,
    version: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    startup_timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> tuple[Endpoint, bool]:
    """Serve ``models:/<model_name>/<version>``; returns (endpoint, reused). ``env`` adds e.g. the tracking URI."""
    running = current(model_name)
    if running is not None:
        if running.version == str(version) and running.port == port and ping(running.url):
            log.info("reusing the %s v%s endpoint at %s (pid %d)", model_name, version, running.url, running.pid)
            return running, True
        stop(model_name)
    if _port_answers(host, port):
        raise PermanentError(f"port {port} on {host} is already in use by another process; choose another "
                             "port param", system=SYSTEM, reason="config:port_in_use")

    root = state_root()
    tmp_dir = root / f"{model_name}-tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{model_name}.log"
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{child_env.get('PATH', '')}",  # uvicorn of this venv
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",  # our own registry's models
        "MLFLOW_DISABLE_TELEMETRY": child_env.get("MLFLOW_DISABLE_TELEMETRY", "true"),
        "TMPDIR": str(tmp_dir),  # the downloaded model copy goes away with stop()
    })
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}/{version}",
               "--env-manager", "local", "-h", host, "-p", str(port), "-w", "1"]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, env=child_env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=root)
    ticks = _start_ticks(process.pid) or 0
    endpoint = Endpoint(model_name, str(version), host, port, process.pid, ticks, str(log_path), str(tmp_dir))
    _state_path(model_name).write_text(json.dumps(endpoint.to_dict()))
    log.info("starting %s (pid %d, log %s)", " ".join(command), process.pid, log_path)

    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            tail = _log_tail(str(log_path))
            _cleanup(endpoint)
            reason = "config:port_in_use" if "address already in use" in tail.lower() else "serving:exited"
            raise PermanentError(f"the scoring server for {endpoint.model_uri} exited with {code}:\n{tail}",
                                 system=SYSTEM, reason=reason)
        if ping(endpoint.url, timeout=1.0):
            log.info("%s answers at %s", endpoint.model_uri, endpoint.url)
            return endpoint, False
        time.sleep(0.25)
    stop(model_name)
    raise TransientError(f"the scoring server for {endpoint.model_uri} did not answer /ping within "
                         f"{startup_timeout:.0f}s", system=SYSTEM, reason="serving:startup_timeout")


# ---------------------------------------------------------------------- smoke test
@dataclass
class SmokeResult:
    passed: bool
    rows: int
    requests: int
    latency_ms: dict[str, float]
    labels_seen: list[str]
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_payload(frame: Any) -> dict[str, Any]:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def smoke_test(
    url: str,
    frame: Any,
    *,
    expected_labels: Iterable[Any],
    latency_budget_ms: float,
    single_requests: int = 10,
    timeout: float = 30.0,
) -> SmokeResult:
    """Real requests against ``url``: health, one batch of ``frame``, then single rows for latency.

    Passes when every answer is 200 with one prediction per row, every predicted label is one the
    model was trained on, and the 95th-percentile latency is within ``latency_budget_ms``.
    """
    import requests

    failures: list[str] = []
    latencies: list[float] = []
    seen: set[str] = set()
    expected = {str(label) for label in expected_labels}
    count = 0

    def call(method: str, path: str, payload: dict[str, Any] | None = None) -> requests.Response | None:
        nonlocal count
        count += 1
        started = time.perf_counter()
        try:
            response = session.request(method, f"{url}{path}", json=payload, timeout=timeout)
        except requests.RequestException as exc:
            failures.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            failures.append(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return response

    def predictions(response: requests.Response | None, rows: int, what: str) -> None:
        if response is None:
            return
        try:
            values = response.json().get("predictions")
        except ValueError:
            failures.append(f"{what}: the answer is not JSON")
            return
        if not isinstance(values, list) or len(values) != rows:
            failures.append(f"{what}: expected {rows} predictions, got "
                            f"{len(values) if isinstance(values, list) else type(values).__name__}")
            return
        labels = {str(v) for v in values}
        seen.update(labels)
        if expected and not labels <= expected:
            failures.append(f"{what}: unexpected label(s) {sorted(labels - expected)}; expected {sorted(expected)}")

    with requests.Session() as session:
        for path in ("/ping", "/health"):
            call("GET", path)
        predictions(call("POST", "/invocations", _split_payload(frame)), len(frame), "batch")
        for i in range(min(single_requests, len(frame))):
            predictions(call("POST", "/invocations", _split_payload(frame.iloc[i:i + 1])), 1, f"row {i}")

    latency = {"p50": 0.0, "p95": 0.0, "max": 0.0}
    if latencies:
        ordered = sorted(latencies)
        latency = {"p50": statistics.median(ordered), "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)],
                   "max": ordered[-1]}
        if latency["p95"] > latency_budget_ms:
            failures.append(f"p95 latency {latency['p95']:.1f} ms > budget {latency_budget_ms} ms")
    return SmokeResult(passed=not failures, rows=len(frame), requests=count, latency_ms=latency,
                       labels_seen=sorted(seen), failures=failures)
