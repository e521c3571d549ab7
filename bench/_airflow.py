"""Start a throw-away Tributary deployment for a benchmark, and stop it without leaving processes behind.

Shared by ``bench_trigger_latency.py`` and ``bench_startup.py``. The deployment is started exactly the
way a developer starts it (``python -m tributary.cli.run``), on free ports, with its own
AIRFLOW_HOME, warehouse database and reports folder, in its own session (process group).

Stopping: SIGTERM to that process group, as Ctrl-C / ``kill`` would; the run command then stops its
components (each in its own process group). Every process of the deployment carries a marker
variable in its environment, so anything still alive after the stop (an orphaned component, a task
process) is found, killed and reported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from tributary.cli.env import PROJECT_ROOT, free_port
from tributary.platform.hook import AirflowApiClient

BENCH_DIR = Path(__file__).resolve().parent
MARKER = "TRIBUTARY_BENCH_DEPLOYMENT"


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any Airflow settings: the deployment computes its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"}
    env.update(extra)
    return env


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port != 8080:
            ports.append(port)
    return ports


def install_sigterm_handler() -> None:
    """Turn SIGTERM (e.g. from ``timeout`` in run_all.sh) into SystemExit, so ``finally`` blocks stop Airflow."""
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def health(base_url: str) -> dict[str, Any] | None:
    try:
        response = requests.get(f"{base_url}/api/v2/monitor/health", timeout=2)
        return dict(response.json()) if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def is_healthy(status: dict[str, Any] | None) -> bool:
    """Metadata DB and scheduler healthy: the same condition the run command waits for."""
    return bool(status) and all((status or {}).get(part, {}).get("status") == "healthy"
                                for part in ("metadatabase", "scheduler"))


def _describe(proc: psutil.Process) -> str:
    try:
        words = [w for w in proc.cmdline() if not w.startswith("-")]
    except psutil.Error:
        return f"pid {proc.pid}"
    return f"{proc.pid} " + " ".join(Path(w).name if "/" in w else w for w in words[:3])


@dataclass
class Deployment:
    home: Path
    dags_folder: Path | None = None
    reports_dir: Path | None = None
    warehouse_db: str = field(default_factory=lambda: f"tributary_bench_{uuid.uuid4().hex[:8]}")
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.monotonic() just before Popen
    log_path: Path | None = None
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    # After wait_healthy(): seconds from process start until the health endpoint first answered.
    api_answered: float | None = None
    # After stop(): (seconds after the SIGTERM until it was gone, process) for each process, slowest first.
    last_stop: list[tuple[float, str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the run command; returns at once (see :meth:`wait_healthy` and :meth:`wait_up`)."""
        self.port, worker_log, triggerer_log, bitcoin, stacks, evm, pkarr, did_web, dwn_a, dwn_b = free_ports(10)
        self.home.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tributary.cli.run", "--home", str(self.home), "--port", str(self.port),
                   "--log-server-ports", str(worker_log), str(triggerer_log), "--bitcoin-port", str(bitcoin),
                   "--stacks-port", str(stacks), "--evm-port", str(evm), "--did-ports", str(pkarr), str(did_web),
                   "--dwn-ports", str(dwn_a), str(dwn_b)]
        if self.dags_folder is not None:
            command += ["--dags-folder", str(self.dags_folder)]
        env = clean_environ(TRIBUTARY_WAREHOUSE_DB=self.warehouse_db, **{MARKER: self.marker})
        if self.reports_dir is not None:
            env["TRIBUTARY_REPORTS_DIR"] = str(self.reports_dir)
        runs = len(list(self.home.glob("run-*.log")))
        self.log_path = self.home / f"run-{runs + 1}.log"
        with open(self.log_path, "wb") as log:
            self.started = time.monotonic()
            self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _check_alive(self, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the run command exited with {self.process.returncode} before {what}\n"
                               f"{self.log_tail()}")

    def wait_healthy(self, timeout: float = 120.0, poll: float = 0.1) -> float:
        """Seconds from process start until the health endpoint shows metadatabase and scheduler healthy."""
        deadline = self.started + timeout
        self.api_answered = None
        while time.monotonic() < deadline:
            self._check_alive("Airflow was healthy")
            status = health(self.base_url)
            if status is not None and self.api_answered is None:
                self.api_answered = time.monotonic() - self.started
            if is_healthy(status):
                return time.monotonic() - self.started
            time.sleep(poll)
        raise TimeoutError(f"Airflow at {self.base_url} not healthy after {timeout:.0f}s\n{self.log_tail()}")

    def wait_up(self, timeout: float = 120.0) -> float:
        """Seconds from process start until the run command printed "Tributary is up"."""
        assert self.log_path is not None
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            self._check_alive('it printed "Tributary is up"')
            if "Tributary is up" in self.log_path.read_text(errors="replace"):
                return time.monotonic() - self.started
            time.sleep(0.2)
        raise TimeoutError(f'no "Tributary is up" after {timeout:.0f}s\n{self.log_tail()}')

    def client(self, user: str = "ops") -> AirflowApiClient:
        return AirflowApiClient(self.base_url, user, user, timeout=10)

    def wait_registered(self, dag_ids: list[str], timeout: float = 60.0) -> float:
        """Wait until the dag-processor has serialized every DAG (``GET /api/v2/dags/<id>`` is 200)."""
        client = self.client()
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self._check_alive("the DAGs were registered")
            if all(client.request("GET", f"/api/v2/dags/{d}").status_code == 200 for d in dag_ids):
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"DAGs {dag_ids} not registered after {timeout:.0f}s\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """Every live process of this deployment (found by the marker in its environment)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER) == self.marker and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def stop(self, timeout: float = 40.0) -> float:
        """SIGTERM to the run command's process group; returns the seconds until every process was gone.

        Raises RuntimeError when something had to be killed (the figure would be meaningless).
        """
        if self.process is None:
            return 0.0
        names = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                names[proc.pid] = _describe(proc)
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        problems = []
        gone_after: dict[int, float] = {}
        # The components are in their own process groups; wait until every process has gone.
        deadline = started + timeout
        while time.monotonic() < deadline:
            alive = {p.pid for p in self.processes()}
            now = time.monotonic() - started
            for pid in names:
                if pid not in alive:
                    gone_after.setdefault(pid, now)
            if not alive and self.process.poll() is not None:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        if self.process.poll() is None:
            problems.append(f"the run command did not exit {timeout:.0f}s after SIGTERM")
        self.last_stop = sorted(((gone_after.get(pid, elapsed), name) for pid, name in names.items()),
                                reverse=True)
        left = self.processes()
        if left:
            problems.append("left behind (killed): " + ", ".join(_describe(p) for p in left))
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(left, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        if problems:
            raise RuntimeError("; ".join(problems) + f"\n{self.log_tail()}")
        return elapsed

    def prepare_seconds(self) -> float | None:
        """What the run command logged as its preparation time (warehouse, DB migration, settings)."""
        import re

        if self.log_path is None or not self.log_path.exists():
            return None
        match = re.search(r"prepared in ([0-9.]+)s", self.log_path.read_text(errors="replace"))
        return float(match.group(1)) if match else None

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return f"--- {self.log_path} (tail) ---\n" + self.log_path.read_text(errors="replace")[-chars:]

    def drop_warehouse_database(self) -> None:
        """Drop the benchmark's warehouse database when it lives on a shared server (an embedded
        cluster lives in the temporary AIRFLOW_HOME and goes with it)."""
        from tributary.storage.embedded import WarehouseLocation, drop_database, server_answers

        if os.environ.get("TRIBUTARY_WAREHOUSE", "auto") == "auto" and server_answers():
            location = WarehouseLocation("127.0.0.1", 5432, os.environ.get("TRIBUTARY_PGUSER", "postgres"),
                                         self.warehouse_db, "server")
            with contextlib.suppress(Exception):
                drop_database(location)


@contextlib.contextmanager
def temporary_home(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed at the end unless the benchmark failed (then its path is printed)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        print(f"(kept {path} for inspection: run logs in it, component logs under */logs/processes)",
              file=sys.stderr, flush=True)
        raise
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(deployment: Deployment, wait_timeout: float = 120.0) -> Iterator[Deployment]:
    """Start the deployment, wait for "Tributary is up", yield it; always stop it and drop its database."""
    try:
        deployment.start()
        deployment.wait_up(wait_timeout)
        yield deployment
    finally:
        try:
            deployment.stop()
        finally:
            deployment.drop_warehouse_database()
