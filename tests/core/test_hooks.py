"""The hook base: Connection -> settings, retries of idempotent reads, connection tests."""

from __future__ import annotations

import json

import pytest

from tributary.core.errors import PermanentError
from tributary.core.hooks import TributaryHook
from tributary.core.retry import RetryPolicy

pytestmark = pytest.mark.unit


class ProbeHook(TributaryHook):
    """A hook whose peer is the local HTTP sink."""

    default_conn_name = "probe_default"
    conn_type = "tributary_webhook"
    hook_name = "Tributary: Webhook"
    system = "probe"

    def get_conn(self):
        import requests

        return requests.Session()

    def probe(self) -> str:
        response = self.read(lambda: self._get(), "probe")
        return f"answered {response}"

    def _get(self) -> int:
        response = self.get_conn().post(self.connection.host, json={}, timeout=self.timeout)
        response.raise_for_status()
        return response.status_code


@pytest.fixture
def probe_conn(http_sink, monkeypatch):
    def configure(extra) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PROBE_DEFAULT", json.dumps(
            {"conn_type": "tributary_webhook", "host": http_sink.url, "extra": extra}))
    return configure


def test_settings_come_from_the_connection_extra(probe_conn) -> None:
    probe_conn({"timeout": 3})
    hook = ProbeHook()
    assert hook.timeout == 3.0
    assert ProbeHook(timeout=1.5).timeout == 1.5


def test_a_non_object_extra_is_a_permanent_configuration_error(probe_conn) -> None:
    probe_conn("[1, 2]")
    with pytest.raises(PermanentError, match="extra must be a JSON object"):
        _ = ProbeHook().extra


def test_test_connection_reports_success(http_sink, probe_conn) -> None:
    probe_conn({})
    assert ProbeHook().test_connection() == (True, "answered 200")


def test_transient_failures_of_reads_are_retried_inside_the_hook(http_sink, probe_conn) -> None:
    probe_conn({})
    http_sink.status = 503
    hook = ProbeHook(retry_policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02))
    ok, message = hook.test_connection()
    assert not ok and message.startswith("[transient]")
    assert len(http_sink.posted_json()) == 3


def test_permanent_failures_are_not_retried_and_say_their_class(http_sink, probe_conn) -> None:
    probe_conn({})
    http_sink.status = 401
    ok, message = ProbeHook(retry_policy=RetryPolicy(attempts=3, base_delay=0.01)).test_connection()
    assert not ok and message.startswith("[permanent]")
    assert len(http_sink.posted_json()) == 1


def test_form_behaviour_comes_from_the_provider_declaration() -> None:
    behaviour = ProbeHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["host"] == "Webhook URL"
    assert "port" in behaviour["hidden_fields"]
