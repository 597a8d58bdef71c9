"""The API's decisions without a server: when a key is past its rate and how long it must
wait, when its last use is worth writing down, which scopes a command line names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer.api import keys, limits
from mailer.api.keys import Scope
from mailer.core.errors import InvalidInput

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "seconds", "verdict"),
    [
        (1, 0.0, limits.Verdict(True, 0)),
        (3, 59.9, limits.Verdict(True, 0)),
        (4, 0.0, limits.Verdict(False, 60)),
        (4, 45.2, limits.Verdict(False, 15)),  # whole seconds, rounded up: never too early
        (4, 59.9, limits.Verdict(False, 1)),
    ],
)
def test_a_key_past_its_rate_waits_for_the_next_minute(
    count: int, seconds: float, verdict: limits.Verdict
) -> None:
    assert limits.judge(count, 3, NOON + timedelta(seconds=seconds)) == verdict


def test_a_window_is_the_minute_a_request_falls_in() -> None:
    assert limits.window_start(NOON + timedelta(seconds=59, microseconds=999)) == NOON


def test_last_use_is_written_once_a_minute_at_most() -> None:
    assert keys.stale(None, NOON)
    assert not keys.stale(NOON, NOON + timedelta(seconds=59))
    assert keys.stale(NOON, NOON + timedelta(minutes=1))


def test_scopes_are_kept_once_each_in_their_own_order() -> None:
    assert keys.parse_scopes(["send", "customers:read", "send"]) == (
        Scope.CUSTOMERS_READ,
        Scope.SEND,
    )
    with pytest.raises(InvalidInput, match="unknown scope 'admin'"):
        keys.parse_scopes(["admin", "send"])
