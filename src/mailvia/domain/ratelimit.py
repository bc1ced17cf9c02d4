"""Rate limits on API requests: a token bucket per key, given the time, and the caps on what
one request may carry. No I/O, no clock.

A bucket holds up to `count` units (requests, or the recipients of requests) and refills
`count / per_seconds` a second: a burst of `count`, then a steady rate. A full bucket is the
same as no bucket, so full ones are swept (at most once every `per_seconds`) and memory
follows the keys seen lately, not every key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput, RequestTooLarge


@dataclass(frozen=True)
class RequestRate:
    """At most `count` requests in a burst, and `count` per `per_seconds` after it."""

    count: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or not (0 < self.per_seconds < math.inf):
            raise InvalidInput(f"{self}: the count must be 1 or more and the seconds above 0")

    @classmethod
    def parse(cls, text: str) -> RequestRate:
        """`COUNT/SECONDS`, e.g. `600/60`. Raises InvalidInput for anything else."""
        count, sep, seconds = text.strip().partition("/")
        try:
            if not sep or not count.strip().isdigit():
                raise ValueError(text)
            return cls(int(count), float(seconds))
        except ValueError:
            raise InvalidInput(f"{text!r}: expected COUNT/SECONDS, e.g. 600/60") from None

    @property
    def per_second(self) -> float:
        return self.count / self.per_seconds

    def __str__(self) -> str:
        return f"{self.count}/{self.per_seconds:g}"


@dataclass(frozen=True)
class _Bucket:
    level: float  # requests it holds at `at`
    at: Instant


class RateLimiter:
    """A token bucket per key, all at one rate. Not thread-safe: callers serialize `take`."""

    def __init__(self, rate: RequestRate) -> None:
        self.rate = rate
        self._buckets: dict[str, _Bucket] = {}
        self._swept_at = -math.inf

    def __len__(self) -> int:
        """The buckets kept (keys seen lately whose buckets are not full)."""
        return len(self._buckets)

    def take(self, key: str, now: Instant, cost: float = 1.0) -> float:
        """Take `cost` units (one request by default) from `key`'s bucket: 0.0 when they are
        allowed (and counted), or the seconds until they are (nothing is taken); infinity
        when `cost` is more than a bucket holds. May sweep full buckets."""
        if cost > self.rate.count:
            return math.inf
        self._sweep(now)
        level = self._level(key, now)
        if level < cost:
            return (cost - level) / self.rate.per_second
        self._buckets[key] = _Bucket(level - cost, now)
        return 0.0

    def _level(self, key: str, now: Instant) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.rate.count)
        refilled = max(0.0, now - bucket.at) * self.rate.per_second
        return min(float(self.rate.count), bucket.level + refilled)

    def _sweep(self, now: Instant) -> None:
        if now - self._swept_at < self.rate.per_seconds:
            return
        self._swept_at = now
        full = [key for key in self._buckets if self._level(key, now) >= self.rate.count]
        for key in full:
            del self._buckets[key]


@dataclass(frozen=True)
class RequestCaps:
    """What one API request may carry: the messages of a batch, and the recipients of all
    its messages (To, Cc, Bcc, or a raw message's envelope)."""

    messages: int = 1000
    recipients: int = 10_000

    def __post_init__(self) -> None:
        if self.messages < 1 or self.recipients < 1:
            raise InvalidInput(f"{self}: each cap must be 1 or more")

    def check(self, *, messages: int, recipients: int) -> None:
        """Raise RequestTooLarge when a request (so far) carries more than the caps."""
        if messages > self.messages:
            raise RequestTooLarge(f"a request may carry at most {self.messages} messages")
        if recipients > self.recipients:
            raise RequestTooLarge(
                f"a request may carry at most {self.recipients} recipients (To, Cc and Bcc "
                "of all its messages); split it"
            )
