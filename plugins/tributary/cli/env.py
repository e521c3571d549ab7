"""The environment of a local Tributary deployment: AIRFLOW_HOME, ports, users, secrets.

One function computes every variable the Airflow processes need, so the run command, the tests
and the benchmarks start Airflow the same way. Secrets that must agree between processes (Fernet
key, JWT secret) are generated once per AIRFLOW_HOME and kept in ``<home>/tributary/secrets.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]

# Fixed local users (SimpleAuthManager roles: viewer, user, op, admin). Override the passwords
# with TRIBUTARY_<USER>_PASSWORD; they are for a developer machine, not for production.
USERS: dict[str, str] = {"admin": "admin", "ops": "op", "viewer": "viewer"}


def user_password(username: str) -> str:
    return os.environ.get(f"TRIBUTARY_{username.upper()}_PASSWORD", username)


def write_private_file(path: Path, text: str) -> Path:
    """Write a file only its owner can read, from the first byte: a temporary file created with mode
    0600 in the same folder, then renamed over ``path`` (never a moment with wider permissions, and
    never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_passwords_file(path: Path) -> Path:
    """The SimpleAuthManager passwords file for the fixed users (``TRIBUTARY_<USER>_PASSWORD``)."""
    return write_private_file(path, json.dumps({u: user_password(u) for u in USERS}))


def openlineage_transport(env: dict[str, str], state_dir: Path) -> str:
    """OpenLineage transport: HTTP to Marquez when ``TRIBUTARY_OPENLINEAGE_URL`` is set, else a local
    JSON-lines file (``<AIRFLOW_HOME>/tributary/openlineage/events.jsonl``). An explicit
    ``AIRFLOW__OPENLINEAGE__TRANSPORT`` wins."""
    if env.get("AIRFLOW__OPENLINEAGE__TRANSPORT"):
        return env["AIRFLOW__OPENLINEAGE__TRANSPORT"]
    if env.get("TRIBUTARY_OPENLINEAGE_URL"):
        return json.dumps({"type": "http", "url": env["TRIBUTARY_OPENLINEAGE_URL"], "endpoint": "api/v1/lineage"})
    path = state_dir / "openlineage" / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return json.dumps({"type": "file", "log_file_path": str(path), "append": True})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_or_create_secrets(home: Path) -> dict[str, str]:
    """The deployment's generated secrets, kept across restarts (a new one is added to an older file):
    the Fernet key, the API's JWT secret, and the key-encryption key of the DID key store."""
    from cryptography.fernet import Fernet

    path = home / "tributary" / "secrets.json"
    values = dict(json.loads(path.read_text())) if path.exists() else {}
    wanted = {"fernet_key": lambda: Fernet.generate_key().decode(), "jwt_secret": lambda: secrets.token_urlsafe(32),
              "did_kek": lambda: secrets.token_urlsafe(32)}
    missing = {name: make() for name, make in wanted.items() if name not in values}
    if missing:
        values.update(missing)
        write_private_file(path, json.dumps(values))
    return values


@dataclass
class LocalDeployment:
    home: Path = field(default_factory=lambda: Path(os.environ.get("TRIBUTARY_AIRFLOW_HOME")
                                                    or PROJECT_ROOT / ".local" / "airflow"))
    port: int = 8080
    # Log servers of the workers and the triggerer: two deployments on one machine need their own.
    worker_log_port: int = 8793
    triggerer_log_port: int = 8794
    dags_folder: Path = PROJECT_ROOT / "dags"
    parallelism: int = 4

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.home / "tributary"

    @property
    def reports_dir(self) -> Path:
        return Path(os.environ.get("TRIBUTARY_REPORTS_DIR") or PROJECT_ROOT / "reports")

    def write_passwords_file(self) -> Path:
        return write_passwords_file(self.state_dir / "passwords.json")

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        self.home.mkdir(parents=True, exist_ok=True)
        keys = _load_or_create_secrets(self.home)
        venv_bin = str(Path(sys.executable).parent)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT / "plugins"), env.get("PYTHONPATH")])),
            "TRIBUTARY_STATE_DIR": str(self.state_dir),
            "TRIBUTARY_REPORTS_DIR": str(self.reports_dir),
            "TRIBUTARY_INCLUDE_DIR": str(PROJECT_ROOT / "include"),
            "TRIBUTARY_DATA_DIR": env.get("TRIBUTARY_DATA_DIR") or str(PROJECT_ROOT / "data"),
            "TRIBUTARY_API_URL": self.base_url,
            # Key-encryption key of the DID key store (did_keys): generated once, kept in secrets.json.
            "TRIBUTARY_DID_KEK": env.get("TRIBUTARY_DID_KEK") or keys["did_kek"],
            # Embedded MLflow: sqlite tracking/registry store and artifact folder inside the deployment.
            "TRIBUTARY_MLFLOW_URI": env.get("TRIBUTARY_MLFLOW_URI")
                or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}",
            "TRIBUTARY_MLFLOW_ARTIFACTS": env.get("TRIBUTARY_MLFLOW_ARTIFACTS")
                or str(self.state_dir / "mlflow" / "artifacts"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # The Connection form's Test button (and POST /api/v2/connections/test): off by default in
            # Airflow 3 because a test runs hook code on the api-server; on for a developer machine.
            "AIRFLOW__CORE__TEST_CONNECTION": env.get("AIRFLOW__CORE__TEST_CONNECTION", "Enabled"),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.state_dir / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.triggerer_log_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
                or f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            "AIRFLOW__OPENLINEAGE__DISABLED": env.get("AIRFLOW__OPENLINEAGE__DISABLED", "False"),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": env.get("AIRFLOW__OPENLINEAGE__NAMESPACE", "tributary"),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": openlineage_transport(env, self.state_dir),
        })
        return env


if __name__ == "__main__":  # python -m tributary.cli.env passwords PATH   (docker-compose airflow-init)
    if len(sys.argv) != 3 or sys.argv[1] != "passwords":
        sys.exit("usage: python -m tributary.cli.env passwords PATH")
    print(f"wrote {write_passwords_file(Path(sys.argv[2]))}")
