"""Throttle escalation (domain/throttle.py): how long a channel pauses after a throttling
reply, and at what level it is left; and the stepping clock the dispatch tests drive."""

from __future__ import annotations

import pytest

from mailvia.domain.clock import SteppingClock
from mailvia.domain.throttle import (
    DAY,
    THROTTLE_DAILY,
    THROTTLE_FIRST,
    Pause,
    daily_quota_wait,
    escalate,
)


@pytest.mark.parametrize(
    ("level", "pause"),
    [
        (0, Pause(60, 1)),
        (1, Pause(120, 2)),
        (2, Pause(240, 3)),
        (4, Pause(960, 5)),
        (5, Pause(1800, 6)),  # 1,920 s capped at 30 min
        (9, Pause(1800, 10)),
    ],
)
def test_each_consecutive_throttle_doubles_the_pause_up_to_half_an_hour(
    level: int, pause: Pause
) -> None:
    assert escalate(level, retry_after=None, daily_wait=None) == pause


@pytest.mark.parametrize(
    ("level", "retry_after", "pause"),
    [
        (0, 5.0, Pause(5.0, 0)),  # exactly as long as the provider said, level kept
        (3, 7200.0, Pause(7200.0, 3)),  # even beyond the cap
        (2, -3.0, Pause(0.0, 2)),  # a date in the past: no pause
    ],
)
def test_a_retry_after_is_kept_exactly_and_does_not_escalate(
    level: int, retry_after: float, pause: Pause
) -> None:
    assert escalate(level, retry_after=retry_after, daily_wait=None) == pause


@pytest.mark.parametrize(
    ("level", "retry_after", "daily", "pause"),
    [
        (0, None, 5000.0, Pause(5000.0, 1)),  # the window's wait outlasts the backoff
        (5, None, 100.0, Pause(1800.0, 6)),  # the backoff outlasts it
        (1, 30.0, 600.0, Pause(600.0, 1)),  # a Retry-After sooner than the quota allows
    ],
)
def test_a_daily_quota_waits_at_least_for_its_window(
    level: int, retry_after: float | None, daily: float, pause: Pause
) -> None:
    assert escalate(level, retry_after=retry_after, daily_wait=daily) == pause


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("starts", "wait"),
    [
        (None, THROTTLE_DAILY),  # no ledger to go by
        ([], THROTTLE_DAILY),
        ([NOW - DAY - 5], THROTTLE_DAILY),  # nothing in the last 24 h
        ([NOW - DAY - 5, NOW - 80_000, NOW - 10], 6_400.0),  # the oldest in the window ages out
        ([NOW - DAY + 1], THROTTLE_FIRST),  # ages out in 1 s: at least a minute
    ],
)
def test_a_daily_quota_lasts_until_the_oldest_start_of_the_day_ages_out(
    starts: list[float] | None, wait: float
) -> None:
    assert daily_quota_wait(starts, NOW) == pytest.approx(wait)


def test_a_stepping_clock_stands_still_or_steps_and_is_set_by_hand() -> None:
    still = SteppingClock(100.0)
    assert [still(), still()] == [100.0, 100.0]
    assert still.at(250.0) is still and still() == 250.0
    still.advance(0.5)
    assert still() == 250.5
    ticking = SteppingClock(10.0, step=0.25)
    assert [ticking(), ticking(), ticking()] == [10.0, 10.25, 10.5]
