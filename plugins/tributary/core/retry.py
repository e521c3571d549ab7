"""One retry policy: exponential backoff with full jitter, for transient errors only.

Airflow retries whole tasks (see ``core.defaults``); this module retries single idempotent calls
inside a hook, so a node that blinks does not cost a task retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tributary.core.errors import classify

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter backoff for the given 1-based attempt that just failed."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def call_with_retry(
    func: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    *,
    what: str = "call",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``func``; on a transient error wait and try again, up to ``policy.attempts`` times.

    Only for idempotent operations (reads, or writes keyed so a repeat is a no-op).
    """
    attempt = 1
    while True:
        try:
            return func()
        except Exception as exc:
            classification = classify(exc)
            if not classification.retryable or attempt >= policy.attempts:
                raise
            pause = policy.delay(attempt)
            log.warning("%s failed (%s, try %d/%d); retrying in %.2fs", what, classification.reason,
                        attempt, policy.attempts, pause)
            sleep(pause)
            attempt += 1
