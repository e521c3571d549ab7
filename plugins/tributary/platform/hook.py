"""Airflow's own public REST API v2 (JWT from ``POST /auth/token``): the plain client and its hook.

:class:`AirflowApiClient` needs no Connection; :class:`AirflowApiHook` builds it from one. Used where
a task must see the control plane (the health DAG lists Connections through it: in Airflow 3 a task
has no metadata-DB access) and by the end-to-end tests and benchmarks, so those exercise the same
path a user's script does.
"""

from __future__ import annotations

import time
from typing import Any

from tributary.core.errors import PermanentError, SecurityError, TransientError
from tributary.core.hooks import TributaryHook
from tributary.platform import SYSTEM

TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowApiClient:
    """Plain client, usable without an Airflow Connection (tests, benchmarks, scripts)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self.session = requests.Session()
        self._token: str | None = None

    # ----------------------------------------------------------------- auth
    def token(self) -> str:
        response = self.session.post(f"{self.base_url}/auth/token", timeout=self.timeout,
                                     json={"username": self.username, "password": self._password})
        if response.status_code in (401, 403):
            raise SecurityError(f"Airflow API rejected the credentials of {self.username!r}",
                                system=SYSTEM, reason=f"http:{response.status_code}")
        response.raise_for_status()
        return str(response.json()["access_token"])

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Authenticated call; returns the ``requests.Response`` (callers check the status)."""
        if self._token is None:
            self._token = self.token()
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        response = self.session.request(method, f"{self.base_url}{path}", headers=headers,
                                        timeout=self.timeout, **kwargs)
        if response.status_code == 401:  # expired token: one fresh token, one more try
            self._token = self.token()
            headers["Authorization"] = f"Bearer {self._token}"
            response = self.session.request(method, f"{self.base_url}{path}", headers=headers,
                                            timeout=self.timeout, **kwargs)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 500:
            raise TransientError(f"{method} {path}: {response.status_code}", system=SYSTEM,
                                 reason=f"http:{response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"{method} {path}: {response.status_code} {response.text[:300]}",
                                 system=SYSTEM, reason=f"http:{response.status_code}")
        return response.json()

    # ----------------------------------------------------------------- resources
    def health(self) -> dict[str, Any]:
        response = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout)
        response.raise_for_status()
        return dict(response.json())

    def version(self) -> str:
        return str(self._json("GET", "/api/v2/version")["version"])

    def list_connections(self, page_size: int = 100) -> list[dict[str, Any]]:
        connections: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._json("GET", "/api/v2/connections",
                              params={"limit": page_size, "offset": offset, "order_by": "connection_id"})
            connections.extend(page["connections"])
            offset += len(page["connections"])
            if not page["connections"] or offset >= page["total_entries"]:
                return connections

    def unpause(self, dag_id: str) -> None:
        self._json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> Any:
        """``POST /dagRuns``; returns the ``requests.Response`` so callers can read a 4xx."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0, poll: float = 0.5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.get_run(dag_id, run_id)["state"]
            if state in TERMINAL_RUN_STATES:
                return str(state)
            if time.monotonic() > deadline:
                raise TransientError(f"run {dag_id}/{run_id} still {state} after {timeout:.0f}s",
                                     system=SYSTEM, reason="timeout")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
                    ["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1) -> Any:
        entry = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
                                  f"/xcomEntries/{key}", params={"map_index": map_index, "deserialize": True})
        return entry["value"]


class AirflowApiHook(TributaryHook):
    """Airflow's REST API v2 as an integration.

    Connection fields: ``host`` the API base URL (``http://127.0.0.1:8080``), ``login`` and
    ``password`` of an Airflow user (role ``op`` or higher to list connections).
    Extra: ``timeout`` (seconds, default 30).
    """

    default_conn_name = "tributary_airflow_api"
    conn_type = "tributary_airflow_api"
    hook_name = "Tributary: Airflow REST API"
    system = SYSTEM

    def get_conn(self) -> AirflowApiClient:
        conn = self.connection
        host = (conn.host or "").rstrip("/")
        if not host.startswith(("http://", "https://")):
            host = f"http://{host}:{conn.port or 8080}"
        elif conn.port and host.count(":") == 1:
            host = f"{host}:{conn.port}"
        return AirflowApiClient(host, conn.login or "", conn.password or "", timeout=self.timeout)

    def probe(self) -> str:
        client = self.get_conn()
        health = self.read(client.health, "health")
        version = self.read(client.version, "version")  # authenticated: proves the credentials
        unhealthy = [name for name, part in health.items()
                     if isinstance(part, dict) and part.get("status") not in (None, "healthy")]
        if unhealthy:
            raise TransientError(f"Airflow {version} reports unhealthy: {', '.join(unhealthy)}",
                                 system=self.system, reason="unhealthy")
        return f"Airflow {version}, all components healthy"
