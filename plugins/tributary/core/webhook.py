"""Generic HTTP webhook (JSON POST), used by the alerting notifier; Slack incoming webhooks too."""

from __future__ import annotations

from typing import Any

from tributary.core.errors import PermanentError, TransientError
from tributary.core.hooks import TributaryHook


class WebhookHook(TributaryHook):
    """POSTs JSON documents to a URL.

    Connection fields: ``host`` is the full URL (``https://hooks.slack.com/services/...`` or
    ``http://127.0.0.1:9000/alerts``); ``password`` optional bearer token.
    Extra: ``format`` (``json`` or ``slack``), ``headers`` (object), ``timeout`` (seconds, default 10).
    """

    default_conn_name = "tributary_alert_webhook"
    conn_type = "tributary_webhook"
    hook_name = "Tributary: Webhook"
    system = "webhook"
    default_timeout = 10.0

    @property
    def url(self) -> str:
        url = (self.connection.host or "").strip()
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"connection {self.conn_id!r}: host must be an http(s) URL",
                                 system=self.system, reason="config:url")
        return url

    @property
    def payload_format(self) -> str:
        return str(self.extra.get("format") or "json")

    def get_conn(self) -> Any:
        import requests

        session = requests.Session()
        session.headers.update({"Content-Type": "application/json", **self.extra.get("headers", {})})
        if self.connection.password:
            session.headers["Authorization"] = f"Bearer {self.connection.password}"
        return session

    def post(self, document: dict[str, Any]) -> int:
        """POST once (alerts are not retried blindly: a receiver may have taken the first)."""
        response = self.get_conn().post(self.url, json=document, timeout=self.timeout)
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"webhook answered {response.status_code}", system=self.system,
                                 reason=f"http:{response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"webhook answered {response.status_code}: {response.text[:200]}",
                                 system=self.system, reason=f"http:{response.status_code}")
        return response.status_code

    def probe(self) -> str:
        # HEAD sends nothing to the channel; most receivers answer 405 to it, which proves reachability.
        response = self.get_conn().head(self.url, timeout=self.timeout, allow_redirects=True)
        if response.status_code >= 500:
            raise TransientError(f"webhook URL answered {response.status_code}", system=self.system,
                                 reason=f"http:{response.status_code}")
        if response.status_code == 404:
            raise PermanentError(f"webhook URL answered {response.status_code}", system=self.system,
                                 reason=f"http:{response.status_code}")
        return f"reachable (HEAD {response.status_code}, format {self.payload_format})"
