"""python -m tributary.cli.mlflow_ui serves the UI and REST API over the deployment's own store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_ui_serves_the_models_the_dags_registered_and_stops_on_sigterm(lifecycle, tmp_path) -> None:
    import requests

    name = lifecycle.unique_name("ui")
    lifecycle.train_and_gate(name, "ui", lifecycle.good_grid[:1])
    port = _free_port()
    env = dict(os.environ, TRIBUTARY_MLFLOW_URI=lifecycle.store["uri"],
               TRIBUTARY_MLFLOW_ARTIFACTS=lifecycle.store["artifacts"])
    process = subprocess.Popen([sys.executable, "-m", "tributary.cli.mlflow_ui", "--port", str(port),
                                "--home", str(tmp_path / "home")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        else:
            raise AssertionError("the MLflow UI did not answer /health within 120 s")

        assert "<html" in requests.get(url, timeout=10).text.lower()
        found = requests.get(f"{url}/api/2.0/mlflow/registered-models/get", params={"name": name}, timeout=10)
        assert found.status_code == 200
        assert found.json()["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
