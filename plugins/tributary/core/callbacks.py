"""Task callbacks: record every failure, retry and success as an event, then alert.

``OutcomeRecorder`` instances are what ``core.defaults.default_args`` puts in ``on_failure_callback``,
``on_retry_callback`` and ``on_success_callback``. The order is fixed: store the event (warehouse or
spool), then notify, then record what each notifier did. Nothing here raises into the task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tributary.core.events import EventStore, event_from_context
from tributary.core.masking import mask_text
from tributary.core.notifiers import alerting_config, build_notifiers, dispatch, should_alert
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutcomeRecorder:
    kind: str  # failure | retry | success
    system: str | None = None
    warehouse_conn_id: str = WAREHOUSE_CONN_ID

    def __call__(self, context: Mapping[str, Any]) -> None:
        try:
            self.handle(context)
        except Exception as exc:  # a callback must never turn into a second failure
            log.error("outcome callback (%s) failed: %s", self.kind, mask_text(str(exc)))

    def handle(self, context: Mapping[str, Any]) -> dict[str, Any]:
        event = event_from_context(context, self.kind, self.system)
        store = EventStore(self.warehouse_conn_id)
        stored = store.record(event)
        config = alerting_config()
        if should_alert(event, config):
            event.alert_status = dispatch(event, build_notifiers(config))
            if stored == "stored":
                store.update_alert_status(event)
        return {"event": event, "stored": stored}


def on_failure(system: str | None = None) -> OutcomeRecorder:
    return OutcomeRecorder("failure", system)


def on_retry(system: str | None = None) -> OutcomeRecorder:
    return OutcomeRecorder("retry", system)


def on_success(system: str | None = None) -> OutcomeRecorder:
    return OutcomeRecorder("success", system)
