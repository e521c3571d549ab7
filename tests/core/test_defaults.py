"""default_args: retries with exponential backoff and the three outcome callbacks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tributary.core.callbacks import OutcomeRecorder
from tributary.core.defaults import default_args

pytestmark = pytest.mark.unit


def test_defaults_retry_with_exponential_backoff_and_record_outcomes() -> None:
    args = default_args("bitcoin")
    assert args["retries"] >= 2
    assert args["retry_exponential_backoff"] > 1
    assert args["max_retry_delay"] >= args["retry_delay"]
    assert args["execution_timeout"] > timedelta(0)
    for kind in ("failure", "retry", "success"):
        callback = args[f"on_{kind}_callback"]
        assert isinstance(callback, OutcomeRecorder)
        assert (callback.kind, callback.system) == (kind, "bitcoin")


def test_fewer_than_two_retries_is_refused() -> None:
    with pytest.raises(ValueError, match="retries >= 2"):
        default_args("x", retries=1)


def test_success_recording_can_be_turned_off() -> None:
    assert "on_success_callback" not in default_args("x", record_success=False)
