"""Notifiers: webhook (JSON and Slack-compatible) against a local server, email via local SMTP."""

from __future__ import annotations

import json
import socket

import pytest

from tributary.core.events import OutcomeEvent
from tributary.core.notifiers import (
    EmailNotifier,
    LogNotifier,
    WebhookNotifier,
    alerting_config,
    build_notifiers,
    dispatch,
    should_alert,
)

pytestmark = pytest.mark.unit


def _event(severity: str = "critical", kind: str = "failure") -> OutcomeEvent:
    return OutcomeEvent(kind=kind, severity=severity, dag_id="dwn_data_replication", task_id="replicate",
                        run_id="scheduled__1", map_index=-1, try_number=1, system="dwn", error_class="security",
                        reason="jws", exception_type="SecurityError", message="record signature does not verify")


def test_webhook_json_payload(http_sink, webhook_conn) -> None:
    WebhookNotifier(webhook_conn).send(_event())
    [doc] = http_sink.posted_json()
    assert doc["source"] == "tributary"
    assert doc["event"]["error_class"] == "security"
    assert doc["summary"].startswith("[CRITICAL] security failure in dwn_data_replication.replicate")


def test_webhook_slack_payload(http_sink, webhook_conn) -> None:
    WebhookNotifier(webhook_conn, format="slack").send(_event())
    [doc] = http_sink.posted_json()
    assert set(doc) == {"text", "blocks"}
    assert ":rotating_light:" in doc["text"]
    assert all(block["type"] == "section" for block in doc["blocks"])
    assert "record signature does not verify" in json.dumps(doc["blocks"])


def test_email_notifier_sends_through_the_smtp_provider(monkeypatch) -> None:
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_SMTP", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "tributary@example.com"}}))
        EmailNotifier(to=["oncall@example.com"], conn_id="alert_smtp").send(_event())
    finally:
        controller.stop()
    [mail] = received
    assert mail.rcpt_tos == ["oncall@example.com"]
    body = mail.content.decode()
    assert "Subject: [CRITICAL] security failure in dwn_data_replication.replicate" in body


def test_dispatch_reports_each_notifier_and_never_raises(http_sink, webhook_conn) -> None:
    http_sink.status = 404
    status = dispatch(_event(), [LogNotifier(), WebhookNotifier(webhook_conn)])
    assert status["log"] == "sent"
    assert status["webhook"].startswith("failed: PermanentError")


@pytest.mark.parametrize(("severity", "kind", "config", "expected"), [
    ("error", "failure", {"min_severity": "warning"}, True),
    ("warning", "failure", {"min_severity": "error"}, False),
    ("warning", "retry", {"min_severity": "warning"}, False),
    ("warning", "retry", {"min_severity": "warning", "alert_on": ["failure", "retry"]}, True),
])
def test_should_alert(severity: str, kind: str, config: dict, expected: bool) -> None:
    assert should_alert(_event(severity, kind), {"alert_on": ["failure"], **config}) is expected


def test_config_from_environment_and_bad_config_falls_back_to_log(monkeypatch) -> None:
    monkeypatch.setenv("TRIBUTARY_ALERTING", json.dumps({"notifiers": [
        {"type": "webhook", "conn_id": "a", "format": "slack"}, {"type": "email", "to": "x@example.com"}]}))
    webhook, email = build_notifiers(alerting_config())
    assert (webhook.conn_id, webhook.format) == ("a", "slack")
    assert email.to == ["x@example.com"]
    monkeypatch.setenv("TRIBUTARY_ALERTING", "{not json")
    assert [n.name for n in build_notifiers(alerting_config())] == ["log"]
