"""In-hook retries: transient failures of idempotent calls are retried, bounded, with backoff."""

from __future__ import annotations

import pytest

from tributary.core.errors import PermanentError, TransientError
from tributary.core.retry import RetryPolicy, call_with_retry

pytestmark = pytest.mark.unit


def test_transient_failures_are_retried_until_success() -> None:
    calls, pauses = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("blink")
        return "ok"

    assert call_with_retry(flaky, RetryPolicy(attempts=3), sleep=pauses.append) == "ok"
    assert len(calls) == 3 and len(pauses) == 2


def test_retries_stop_after_the_policy_attempts() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise TransientError("still down")

    with pytest.raises(TransientError):
        call_with_retry(down, RetryPolicy(attempts=4), sleep=lambda _: None)
    assert len(calls) == 4


def test_permanent_failures_are_not_retried() -> None:
    calls = []

    def rejected() -> None:
        calls.append(1)
        raise PermanentError("invalid params")

    with pytest.raises(PermanentError):
        call_with_retry(rejected, RetryPolicy(attempts=5), sleep=lambda _: None)
    assert len(calls) == 1


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)]:
        assert all(0 <= policy.delay(attempt) <= cap for _ in range(50))
