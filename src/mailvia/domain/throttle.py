"""Throttle escalation: how long a channel pauses after a throttling reply (`421 4.7.0 ...
try later`, `452 4.5.3 daily quota`), and at what level it is left.

Exactly as long as the provider said (Retry-After), else 60 s doubling with each consecutive
throttle up to 30 min; a daily quota waits for the oldest start of its 24 h window to age
out (an hour when the channel keeps no budget ledger). A delivery resets the level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailvia.domain.clock import Instant

THROTTLE_FIRST = 60.0  # seconds; doubles per consecutive throttle
THROTTLE_MAX = 1800.0
THROTTLE_DAILY = 3600.0  # a daily-quota reply when the channel has no budget to wait for
DAY = 86_400.0


@dataclass(frozen=True)
class Pause:
    """A channel's pause: how long from now, and its throttle level afterwards."""

    seconds: float
    level: int


def escalate(level: int, *, retry_after: float | None, daily_wait: float | None) -> Pause:
    """The pause after a throttle at `level` (consecutive throttles so far). `retry_after`:
    the provider's own wait, kept exactly and without raising the level; `daily_wait`: for a
    daily-quota reply, the least wait its window allows (`daily_quota_wait`)."""
    if retry_after is not None:
        pause = Pause(max(retry_after, 0.0), level)
    else:
        pause = Pause(min(THROTTLE_FIRST * 2**level, THROTTLE_MAX), level + 1)
    if daily_wait is not None:
        pause = Pause(max(pause.seconds, daily_wait), pause.level)
    return pause


def daily_quota_wait(starts: Sequence[Instant] | None, now: Instant) -> float:
    """How long a daily quota lasts at `now`: until the oldest of the channel's transaction
    starts (oldest first; None: it keeps no ledger) in the last 24 h ages out, at least
    THROTTLE_FIRST; THROTTLE_DAILY when there is none to go by."""
    if starts is None:
        return THROTTLE_DAILY
    in_window = [t for t in starts if t > now - DAY]
    return max(in_window[0] + DAY - now, THROTTLE_FIRST) if in_window else THROTTLE_DAILY
