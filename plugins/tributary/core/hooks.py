"""Base class of every Tributary hook: Connection -> client, timeouts, safe retries, connection test.

A subclass declares, as class attributes, everything a reader (and Airflow's Connection form) needs:

    conn_name_attr / default_conn_name / conn_type / hook_name   as in the Airflow providers
    system          the name used in error events and alerts ("bitcoin", "warehouse", ...)

The Connection form (extra fields, hidden fields, labels, placeholders) is declared per
``conn_type`` in ``tributary/provider_info.py``, the provider.yaml of this package.

and implements ``get_conn()`` (build the client) and ``probe()`` (one cheap read that proves the
connection works and returns a line for a person, e.g. "regtest at height 101").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from airflow.sdk import BaseHook

from tributary.core.errors import PermanentError, classify
from tributary.core.masking import mask_secret, mask_text
from tributary.core.retry import RetryPolicy, call_with_retry

T = TypeVar("T")


class TributaryHook(BaseHook):
    conn_name_attr: ClassVar[str] = "conn_id"
    default_conn_name: ClassVar[str] = ""
    conn_type: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""
    system: ClassVar[str] = ""

    default_timeout: ClassVar[float] = 30.0
    read_retry: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name
        self._timeout = timeout
        self.retry_policy = retry_policy or self.read_retry

    # ----------------------------------------------------------------- connection
    @cached_property
    def connection(self) -> Any:
        conn = self.get_connection(self.conn_id)
        actual = (getattr(conn, "conn_type", None) or "").replace("-", "_")
        if self.conn_type and actual and actual != self.conn_type:
            # e.g. a DAG param pointing a Bitcoin task at an EVM Connection: refuse before any call
            raise PermanentError(
                f"connection {self.conn_id!r} is of type {actual!r}; {type(self).__name__} needs a "
                f"{self.conn_type!r} Connection", system=self.system, reason="config:conn_type")
        return conn

    @cached_property
    def extra(self) -> dict[str, Any]:
        raw = self.connection.extra
        if not raw:
            return {}
        if isinstance(raw, dict):
            return raw
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PermanentError(f"connection {self.conn_id!r}: extra is not valid JSON ({exc.msg})",
                                 system=self.system, reason="config:extra") from exc
        if not isinstance(value, dict):
            raise PermanentError(f"connection {self.conn_id!r}: extra must be a JSON object",
                                 system=self.system, reason="config:extra")
        return value

    @property
    def timeout(self) -> float:
        if self._timeout is not None:
            return self._timeout
        return float(self.extra.get("timeout", self.default_timeout))

    def http_base_url(self, default_port: int | None = None) -> str:
        """The Connection's host as a base URL: a full ``http(s)://`` URL as given (no trailing ``/``),
        else ``http://host:port`` with the Connection's port or ``default_port``."""
        host = (self.connection.host or "").strip().rstrip("/")
        if not host:
            raise PermanentError(f"connection {self.conn_id!r}: host is empty", system=self.system,
                                 reason="config:host")
        if host.startswith(("http://", "https://")):
            return host
        port = self.connection.port or default_port
        return f"http://{host}" + (f":{port}" if port else "")

    def json_session(self, **headers: str) -> Any:
        """A ``requests.Session`` for a JSON API, with the Connection's password handed to the secrets
        masker first (it authenticates the calls the session makes)."""
        import requests

        mask_secret(self.connection.password)
        session = requests.Session()
        session.headers.update({"Accept": "application/json", **headers})
        return session

    # ----------------------------------------------------------------- behaviour
    def get_conn(self) -> Any:
        raise NotImplementedError

    def probe(self) -> str:
        """One cheap, side-effect-free call; returns a one-line description of the peer."""
        raise NotImplementedError

    def read(self, func: Callable[[], T], what: str = "read") -> T:
        """Run an idempotent call, retrying transient failures inside the hook."""
        return call_with_retry(func, self.retry_policy, what=f"{self.system}:{what}")

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, self.probe()
        except Exception as exc:
            classification = classify(exc)
            return False, f"[{classification.error_class}] {mask_text(str(exc))}"

    # ----------------------------------------------------------------- Connection form
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from tributary.provider_info import connection_type

        behaviour = connection_type(cls.conn_type).get("ui-field-behaviour", {})
        return {
            "hidden_fields": list(behaviour.get("hidden-fields", [])),
            "relabeling": dict(behaviour.get("relabeling", {})),
            "placeholders": dict(behaviour.get("placeholders", {})),
        }
