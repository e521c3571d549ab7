"""Alert notifiers: log, generic webhook (JSON or Slack-compatible) and email via the SMTP provider.

Configuration is the Airflow Variable ``tributary_alerting`` (JSON; ``AIRFLOW_VAR_TRIBUTARY_ALERTING``
works too), for example::

    {"min_severity": "error",
     "alert_on": ["failure"],
     "notifiers": [{"type": "log"},
                   {"type": "webhook", "conn_id": "tributary_alert_webhook", "format": "slack"},
                   {"type": "email", "conn_id": "smtp_default", "to": ["oncall@example.com"]}]}

Without it, events are alerted to the task log only. :func:`dispatch` never raises: a notifier that
fails is reported in the returned status map (and so in the event row), not to the task.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tributary.core.errors import Severity
from tributary.core.events import OutcomeEvent
from tributary.core.masking import mask_text

log = logging.getLogger(__name__)

CONFIG_VARIABLE = "tributary_alerting"
DEFAULT_CONFIG: dict[str, Any] = {"min_severity": "warning", "alert_on": ["failure"],
                                  "notifiers": [{"type": "log"}]}
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
              "critical": logging.CRITICAL}
_SLACK_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":x:",
                "critical": ":rotating_light:"}


class Notifier(Protocol):
    name: str

    def send(self, event: OutcomeEvent) -> None: ...


def headline(event: OutcomeEvent) -> str:
    where = f"{event.dag_id}.{event.task_id}" if event.task_id else event.dag_id
    klass = f" {event.error_class}" if event.error_class else ""
    return f"[{event.severity.upper()}]{klass} {event.kind} in {where} (try {event.try_number}, {event.system})"


def json_payload(event: OutcomeEvent) -> dict[str, Any]:
    return {"source": "tributary", "summary": headline(event), "event": event.as_dict()}


def slack_payload(event: OutcomeEvent) -> dict[str, Any]:
    fields = [("DAG", event.dag_id), ("Task", event.task_id), ("Run", event.run_id),
              ("Class", event.error_class), ("System", event.system), ("Reason", event.reason)]
    text = f"{_SLACK_EMOJI.get(event.severity, '')} {headline(event)}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields if v]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{(event.message or '')[:2500]}```"}},
        ],
    }


@dataclass
class LogNotifier:
    name: str = "log"

    def send(self, event: OutcomeEvent) -> None:
        log.log(_LOG_LEVEL.get(event.severity, logging.ERROR), "ALERT %s: %s", headline(event), event.message)


@dataclass
class WebhookNotifier:
    conn_id: str = "tributary_alert_webhook"
    format: str | None = None
    name: str = "webhook"

    def send(self, event: OutcomeEvent) -> None:
        from tributary.core.webhook import WebhookHook

        hook = WebhookHook(self.conn_id)
        fmt = self.format or hook.payload_format
        hook.post(slack_payload(event) if fmt == "slack" else json_payload(event))


@dataclass
class EmailNotifier:
    to: Sequence[str]
    conn_id: str = "smtp_default"
    name: str = "email"

    def send(self, event: OutcomeEvent) -> None:
        from html import escape

        from airflow.providers.smtp.hooks.smtp import SmtpHook

        rows = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                       for k, v in event.as_dict().items() if v not in (None, "", {}))
        with SmtpHook(smtp_conn_id=self.conn_id) as smtp:
            smtp.send_email_smtp(to=list(self.to), subject=headline(event),
                                 html_content=f"<table>{rows}</table>")


def alerting_config() -> dict[str, Any]:
    """The alerting Variable, else ``TRIBUTARY_ALERTING`` from the environment, else log-only."""
    raw: Any = None
    try:
        from airflow.sdk import Variable

        raw = Variable.get(CONFIG_VARIABLE, default=None)
    except Exception as exc:  # outside a task (unit tests, CLI) there is no Variable access
        log.debug("alerting Variable unavailable: %s", exc)
    raw = raw or os.environ.get("TRIBUTARY_ALERTING")
    if not raw:
        return dict(DEFAULT_CONFIG)
    try:
        config = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError) as exc:
        log.error("alerting config is not valid JSON (%s); alerting to the log only", exc)
        return dict(DEFAULT_CONFIG)
    return {**DEFAULT_CONFIG, **config}


def build_notifiers(config: dict[str, Any]) -> list[Notifier]:
    notifiers: list[Notifier] = []
    for spec in config.get("notifiers", []):
        kind = spec.get("type")
        if kind == "log":
            notifiers.append(LogNotifier())
        elif kind == "webhook":
            notifiers.append(WebhookNotifier(conn_id=spec.get("conn_id", "tributary_alert_webhook"),
                                             format=spec.get("format")))
        elif kind == "email":
            to = spec.get("to") or []
            notifiers.append(EmailNotifier(to=[to] if isinstance(to, str) else list(to),
                                           conn_id=spec.get("conn_id", "smtp_default")))
        else:
            log.error("unknown notifier type %r in alerting config; ignored", kind)
    return notifiers or [LogNotifier()]


def should_alert(event: OutcomeEvent, config: dict[str, Any]) -> bool:
    if event.kind not in config.get("alert_on", ["failure"]):
        return False
    threshold = Severity(config.get("min_severity", "warning"))
    return event.severity_enum.rank >= threshold.rank


def dispatch(event: OutcomeEvent, notifiers: Sequence[Notifier]) -> dict[str, str]:
    """Send to every notifier; returns ``{name: "sent" | "failed: ..."}``. Never raises."""
    status: dict[str, str] = {}
    for notifier in notifiers:
        try:
            notifier.send(event)
            status[notifier.name] = "sent"
        except Exception as exc:
            status[notifier.name] = f"failed: {type(exc).__name__}: {mask_text(str(exc))[:300]}"
            log.warning("notifier %s failed for event %s: %s", notifier.name, event.event_id,
                        status[notifier.name])
    return status
