"""Run Tributary locally: warehouse, metadata DB, settings, users, then the Airflow processes.

    python -m tributary.cli.run [--port 8080] [--home PATH] [--warehouse-db NAME] [--reset-warehouse]
                                [--prepare-only]

Starts the devnets (``tributary.cli.devnets``: local test doubles of servers that cannot run here),
then api-server, scheduler, dag-processor and triggerer (LocalExecutor, SQLite metadata DB by
default), each in its own process group, and stops all of them on Ctrl-C / SIGTERM or when any one
exits. The same topology runs under Celery in docker-compose.yaml. It refuses to start on a warehouse
database that holds another deployment's state (``tributary.cli.deployment``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tributary.cli.deployment import WarehouseOwnedElsewhere, check_database_name, default_database, home_is_new
from tributary.cli.devnets import BITCOIN_BLOCK_INTERVAL, LocalDevnets
from tributary.cli.env import PROJECT_ROOT, USERS, LocalDeployment, user_password

log = logging.getLogger("tributary.run")
COMPONENTS: dict[str, list[str]] = {
    "api-server": ["airflow", "api-server"],
    "scheduler": ["airflow", "scheduler"],
    "dag-processor": ["airflow", "dag-processor"],
    "triggerer": ["airflow", "triggerer"],
}


def prepare(deployment: LocalDeployment, settings_file: Path, env: dict[str, str], *, database: str | None = None,
            new_home: bool = False, reset_warehouse: bool = False) -> dict[str, str]:
    """Warehouse (checked to be this deployment's first), metadata DB, settings and users; returns the
    environment for the processes. Raises :class:`WarehouseOwnedElsewhere` before anything is written
    when the warehouse database belongs to another deployment."""
    from tributary.cli.deployment import claim
    from tributary.storage.embedded import provision

    started = time.monotonic()
    database = check_database_name(database or os.environ.get("TRIBUTARY_WAREHOUSE_DB")
                                   or default_database(deployment.home))
    location = provision(deployment.state_dir, database=database)
    owner, applied = claim(location, deployment.home, new_home=new_home, reset=reset_warehouse)
    log.info("deployment %s, warehouse database %r (%s); migrations applied: %s", owner.deployment_id,
             owner.database, owner.outcome, ", ".join(applied) or "none pending")
    env.update({"TRIBUTARY_WAREHOUSE_HOST": location.host, "TRIBUTARY_WAREHOUSE_PORT": str(location.port),
                "TRIBUTARY_WAREHOUSE_USER": location.login, "TRIBUTARY_WAREHOUSE_DB": location.database})
    deployment.write_passwords_file()
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "tributary.cli.settings", "load", str(settings_file)],
                   env=env, check=True)
    log.info("prepared in %.1fs (warehouse: %s)", time.monotonic() - started, location.kind)
    return env


class Supervisor:
    """Owns the child process groups; one signal handler stops them all."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self, commands: dict[str, list[str]]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, command in commands.items():
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            # cwd: the project root, where ``python -m devnets.<system>`` finds the devnets package.
            self.children[name] = subprocess.Popen(command, env=self.env, stdout=out, cwd=PROJECT_ROOT,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
            log.info("started %s (pid %d, log %s)", name, self.children[name].pid, out.name)

    def stop(self, timeout: float = 20.0) -> None:
        if self.stopping:
            return
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing its process group", name)
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            # Task runners are in the children's groups; make sure none outlives us.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)

    def watch(self) -> int:
        """Block until a component exits (returns 1); a signal interrupts it with StopRequested."""
        while True:
            for name, child in self.children.items():
                code = child.poll()
                if code is not None:
                    log.error("%s exited with %s; stopping the others (see %s)", name, code,
                              self.log_dir / f"{name}.log")
                    return 1
            time.sleep(0.5)


def wait_healthy(base_url: str, supervisor: Supervisor | None = None, timeout: float = 180.0) -> float:
    import requests

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if supervisor is not None:
            for name, child in supervisor.children.items():
                if child.poll() is not None:
                    raise RuntimeError(f"{name} exited with {child.returncode} before Airflow was healthy "
                                       f"(see {supervisor.log_dir / (name + '.log')})")
        try:
            health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=2).json()
            if health.get("metadatabase", {}).get("status") == "healthy" and \
                    health.get("scheduler", {}).get("status") == "healthy":
                return time.monotonic() - started
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Airflow at {base_url} not healthy after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tributary-run", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("TRIBUTARY_PORT", "8080")))
    parser.add_argument("--home", type=Path, default=None, help="AIRFLOW_HOME (default .local/airflow)")
    parser.add_argument("--dags-folder", type=Path, default=None)
    parser.add_argument("--log-server-ports", type=int, nargs=2, default=None, metavar=("WORKER", "TRIGGERER"),
                        help="ports of the task and triggerer log servers (default 8793 8794)")
    parser.add_argument("--settings", type=Path, default=PROJECT_ROOT / "airflow_settings.yaml")
    parser.add_argument("--mlflow-ui", type=int, nargs="?", const=5000, default=None, metavar="PORT",
                        help="also serve the MLflow UI on the embedded store (default port 5000)")
    parser.add_argument("--bitcoin-port", type=int, default=None,
                        help="RPC port of the bitcoin regtest devnet (default 18443, or a free one if taken); "
                             "not started when TRIBUTARY_BITCOIN_HOST names a real node")
    parser.add_argument("--bitcoin-block-interval", type=float, metavar="SECONDS",
                        default=float(os.environ.get("TRIBUTARY_BITCOIN_BLOCK_INTERVAL", BITCOIN_BLOCK_INTERVAL)),
                        help="the bitcoin devnet mines a block every SECONDS (default 30; 0: only when asked)")
    parser.add_argument("--evm-port", type=int, default=None,
                        help="RPC port of the anvil devnet (default 8545, or a free one if taken); "
                             "not started when TRIBUTARY_EVM_URL names a real node")
    parser.add_argument("--did-ports", type=int, nargs=2, default=None, metavar=("PKARR", "WEB"),
                        help="ports of the DID devnet's Pkarr relay and did:web HTTPS server (default 8787 8443)")
    parser.add_argument("--dwn-ports", type=int, nargs=2, default=None, metavar=("SOURCE", "TARGET"),
                        help="ports of the two DWN servers (default 3001 3002)")
    parser.add_argument("--stacks-port", type=int, default=None,
                        help="RPC port of the stacks devnet (default 20443, or a free one if taken); "
                             "not started when TRIBUTARY_STACKS_URL names a real node")
    parser.add_argument("--warehouse-db", default=None, metavar="NAME",
                        help="warehouse database (default TRIBUTARY_WAREHOUSE_DB, else tributary for the default "
                             "home and tributary_<hash of the home> for any other)")
    parser.add_argument("--reset-warehouse", action="store_true",
                        help="when the warehouse database belongs to another deployment, drop and re-create it "
                             "(its data is lost) instead of refusing to start")
    parser.add_argument("--prepare-only", action="store_true", help="set up everything, start nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    deployment = LocalDeployment(port=args.port)
    if args.home:
        deployment.home = args.home.resolve()
    if args.log_server_ports:
        deployment.worker_log_port, deployment.triggerer_log_port = args.log_server_ports
    if args.dags_folder:
        deployment.dags_folder = args.dags_folder.resolve()
    database = args.warehouse_db or os.environ.get("TRIBUTARY_WAREHOUSE_DB") or default_database(deployment.home)
    try:
        check_database_name(database)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.monotonic()
    new_home = home_is_new(deployment.home)  # before environ() creates the home's secrets
    env = deployment.environ()
    devnets = LocalDevnets.plan(deployment.state_dir, env, args.bitcoin_port, args.stacks_port, args.evm_port,
                                tuple(args.did_ports) if args.did_ports else None,
                                tuple(args.dwn_ports) if args.dwn_ports else None, args.bitcoin_block_interval)
    env.update(devnets.environ())
    try:
        env = prepare(deployment, args.settings, env, database=database, new_home=new_home,
                      reset_warehouse=args.reset_warehouse)
    except WarehouseOwnedElsewhere as exc:
        # Straight to stderr: by now Airflow may have routed logging elsewhere, and this is for a person.
        print(f"\ntributary-run: {exc}\n", file=sys.stderr, flush=True)
        return 2
    if args.prepare_only:
        return 0

    supervisor = Supervisor(env, deployment.home / "logs" / "processes")
    try:
        commands = {**devnets.commands(), **COMPONENTS}
        if args.mlflow_ui:
            from tributary.cli.mlflow_ui import server_command

            commands["mlflow-ui"] = server_command(env, host="127.0.0.1", port=args.mlflow_ui)
        supervisor.start(commands)
        try:
            peers = devnets.bootstrap(warehouse_dsn=(
                f"host={env['TRIBUTARY_WAREHOUSE_HOST']} port={env['TRIBUTARY_WAREHOUSE_PORT']} "
                f"user={env['TRIBUTARY_WAREHOUSE_USER']} dbname={env['TRIBUTARY_WAREHOUSE_DB']}"))
            seconds = wait_healthy(deployment.base_url, supervisor)
        except (TimeoutError, RuntimeError) as exc:
            log.error("%s", exc)
            return 1
        logins = ", ".join(f"{u}/{user_password(u)} ({role})" for u, role in USERS.items())
        mlflow_line = f"  MLflow UI: http://127.0.0.1:{args.mlflow_ui}\n" if args.mlflow_ui else ""
        mlflow_line += "".join(f"  {peer}\n" for peer in peers + [f"external {e}" for e in devnets.external])
        print(f"\nTributary is up in {time.monotonic() - started:.1f}s (API healthy after {seconds:.1f}s)\n"
              f"  UI and REST API: {deployment.base_url}\n{mlflow_line}  logins: {logins}\n"
              f"  AIRFLOW_HOME: {deployment.home}\n  Ctrl-C stops everything.\n", flush=True)
        return supervisor.watch()
    except StopRequested as stop:
        log.info("received %s; stopping Airflow", stop.signal_name)
        return 0
    finally:
        supervisor.stop()


class StopRequested(BaseException):
    """Raised by the SIGINT/SIGTERM handler so every ``finally`` (children, private DB) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


def _request_stop(signum: int, _frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one stop at a time; a second Ctrl-C waits for it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequested(signum)


def run(argv: list[str] | None = None) -> int:
    from tributary.storage.embedded import stop_embedded

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        return main(argv)
    except StopRequested as stop:  # during set-up, before any Airflow process started
        log.info("received %s during set-up; stopped", stop.signal_name)
        return 0
    finally:
        stop_embedded()  # the private warehouse cluster, when one was started


if __name__ == "__main__":
    sys.exit(run())
