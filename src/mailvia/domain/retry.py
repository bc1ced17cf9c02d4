"""The retry schedule: when to try a deferred message again, and when to give up.

Defaults follow Postfix (`minimal_backoff_time` 300 s doubling to `maximal_backoff_time`
4000 s, `maximal_queue_lifetime` 5 d); see ../shared/research/reliability_security.md (d).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput

# The reply an expired message's unfinished recipients are left with (RFC 3463 X.4.7).
GAVE_UP = (451, "4.4.7", "mailvia: gave up after the retry period")
GAVE_UP_TEXT = " ".join(str(part) for part in GAVE_UP)  # the reason its event gives
# The reply a cancelled recipient shows (mailvia's own words, as for an expired one).
CANCELLED = (550, "5.0.0")
# The last try is due at the give-up time; the expiry sweep leaves it this long to happen (a
# throttled or busy channel may not get to it at once) before it expires the message unsent.
LAST_TRY_GRACE = 600.0  # seconds


@dataclass(frozen=True)
class RetryPolicy:
    """First delay, ceiling, give-up age (seconds) and the jitter fraction."""

    first_delay: float = 300.0
    max_delay: float = 4000.0
    give_up_after: float = 5 * 86400.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise InvalidInput("retry: need 0 < first_delay <= max_delay")
        if self.give_up_after <= 0 or not 0 <= self.jitter < 1:
            raise InvalidInput("retry: need give_up_after > 0 and 0 <= jitter < 1")

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after the `failures`-th temporary failure; `rand` is in [0, 1)."""
        base = min(self.first_delay * 2.0 ** max(failures - 1, 0), self.max_delay)
        return base * (1.0 + self.jitter * (2.0 * rand - 1.0))

    def next_attempt_at(
        self, *, failures: int, now: Instant, expires_at: Instant, rand: float
    ) -> Instant | None:
        """When to try again, or None when the message has reached its give-up time.

        The last try is scheduled at the give-up time itself, so no message expires
        without one more attempt near its deadline.
        """
        if now >= expires_at:
            return None
        return min(now + self.delay(failures, rand), expires_at)
