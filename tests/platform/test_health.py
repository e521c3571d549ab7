"""Integration health: discovery rules, real connection checks, the report."""

from __future__ import annotations

import json
import socket

import pytest

from tributary.core.errors import PermanentError
from tributary.platform.health import (
    check_connection,
    checkable_types,
    env_connections,
    publish_report,
    raise_if_unhealthy,
    render_table,
    restrict,
    select_connections,
)


@pytest.mark.unit
def test_env_connections_are_discovered_from_uri_and_json() -> None:
    found = env_connections({
        "AIRFLOW_CONN_WAREHOUSE_B": "postgres://u:p@db:5432/x",
        "AIRFLOW_CONN_ALERTS": json.dumps({"conn_type": "tributary_webhook", "host": "http://x",
                                           "extra": {"health_check": False}}),
        "AIRFLOW_CONN_BROKEN": "{not json",
        "PATH": "/usr/bin",
    })
    assert [(c["connection_id"], c["conn_type"]) for c in found] == [
        ("warehouse_b", "postgres"), ("alerts", "tributary_webhook")]


@pytest.mark.unit
def test_selection_keeps_checkable_types_and_honours_opt_out() -> None:
    candidates = [
        {"connection_id": "b", "conn_type": "postgres", "extra": None},
        {"connection_id": "a", "conn_type": "tributary_webhook", "extra": '{"health_check": false}'},
        {"connection_id": "c", "conn_type": "email", "extra": None},
        {"connection_id": "b", "conn_type": "postgres", "extra": None},  # listed by REST and env
    ]
    assert select_connections(candidates, {"postgres", "tributary_webhook"}) == [
        {"conn_id": "b", "conn_type": "postgres"}]


@pytest.mark.unit
def test_our_connection_types_are_testable() -> None:
    assert {"postgres", "tributary_webhook", "tributary_airflow_api"} <= checkable_types()


@pytest.mark.unit
def test_restricting_to_an_unknown_connection_is_a_clear_error() -> None:
    found = [{"conn_id": "tributary_warehouse", "conn_type": "postgres"}]
    assert restrict(found, []) == found
    with pytest.raises(PermanentError, match="not configured or not testable: nope"):
        restrict(found, ["tributary_warehouse", "nope"])


@pytest.mark.postgres
def test_a_reachable_warehouse_is_healthy(warehouse) -> None:
    result, error = check_connection("tributary_warehouse", "postgres")
    assert error is None
    assert result["ok"] and result["message"] == "SQL round trip ok" and result["latency_ms"] > 0


@pytest.mark.unit
def test_an_unreachable_server_is_unhealthy_and_transient(monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_GONE_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "u", "password": "pw-secret-9",
         "schema": "x"}))
    result, error = check_connection("gone_db", "postgres")
    assert error is not None
    assert (result["ok"], result["error_class"]) == (False, "transient")
    assert "pw-secret-9" not in result["message"]


@pytest.mark.unit
def test_a_webhook_answering_404_is_a_permanent_failure(http_sink, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HOOK404", json.dumps(
        {"conn_type": "tributary_webhook", "host": http_sink.url.replace("/alerts", "/missing")}))
    http_sink.status = 404

    class NotFound(http_sink.server.RequestHandlerClass):  # HEAD answers 404 for this test
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    http_sink.server.RequestHandlerClass = NotFound
    result, _ = check_connection("hook404", "tributary_webhook")
    assert (result["ok"], result["error_class"]) == (False, "permanent")


@pytest.mark.postgres
def test_report_is_stored_idempotently_and_fails_the_run_when_unhealthy(pg) -> None:
    results = [
        {"conn_id": "tributary_warehouse", "conn_type": "postgres", "ok": True, "error_class": None,
         "message": "SQL round trip ok", "latency_ms": 3.0},
        {"conn_id": "node", "conn_type": "tributary_webhook", "ok": False, "error_class": "transient",
         "message": "ConnectError", "latency_ms": 2.0},
    ]
    summary = publish_report("run-1", results)
    publish_report("run-1", results)  # a retried report task
    with pg.cursor() as cur:
        cur.execute("SELECT conn_id, ok FROM integration_health WHERE run_id = 'run-1' ORDER BY conn_id")
        assert cur.fetchall() == [("node", False), ("tributary_warehouse", True)]
    assert (summary["total"], summary["healthy"], summary["unhealthy"]) == (2, 1, ["node"])
    with pytest.raises(PermanentError, match="1 of 2 connections unhealthy: node"):
        raise_if_unhealthy(summary)
    table = render_table(summary["results"])
    assert "node" in table and "FAIL" in table and "OK" in table
