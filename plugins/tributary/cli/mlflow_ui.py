"""The MLflow UI over the deployment's own store: ``python -m tributary.cli.mlflow_ui [--port 5000]``.

Runs ``mlflow server`` on 127.0.0.1 against the same tracking/registry store and artifact root the
run command gives the Airflow processes (``TRIBUTARY_MLFLOW_URI`` / ``TRIBUTARY_MLFLOW_ARTIFACTS``, as
``LocalDeployment.environ()`` computes them: by default the sqlite store and artifact folder under
``.local/airflow/tributary/mlflow``). When the Connection points at a remote tracking server, open
that server's UI instead. Ctrl-C or SIGTERM stops the server and its workers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tributary.cli.env import LocalDeployment


def server_command(env: dict[str, str], *, host: str, port: int, workers: int = 1) -> list[str]:
    """``mlflow server`` for the deployment whose environment is ``env``."""
    store = env["TRIBUTARY_MLFLOW_URI"]
    if not store.startswith("sqlite:///"):
        raise SystemExit(f"TRIBUTARY_MLFLOW_URI is {store!r}: a remote tracking server has its own UI")
    artifacts = env["TRIBUTARY_MLFLOW_ARTIFACTS"]
    Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    Path(artifacts).mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
            "--default-artifact-root", artifacts, "--artifacts-destination", artifacts,
            "--host", host, "--port", str(port), "--workers", str(workers)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tributary.cli.mlflow_ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("TRIBUTARY_MLFLOW_UI_PORT", 5000)))
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1 only)")
    parser.add_argument("--home", type=Path, default=None, help="AIRFLOW_HOME of the deployment (as run.sh --home)")
    args = parser.parse_args(argv)

    deployment = LocalDeployment() if args.home is None else LocalDeployment(home=args.home.resolve())
    env = deployment.environ()
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    command = server_command(env, host=args.host, port=args.port)
    print(f"MLflow UI: http://{args.host}:{args.port}  (store {env['TRIBUTARY_MLFLOW_URI']})", flush=True)
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()


if __name__ == "__main__":
    sys.exit(main())
