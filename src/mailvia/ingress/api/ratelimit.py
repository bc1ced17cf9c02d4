"""The API's rate limits per API token, counted in this process's memory: requests
(API_RATE_LIMIT) and the recipients of the messages submitted (API_RECIPIENT_LIMIT).

Each token has a bucket of each (domain/ratelimit.py) keyed by the token's SHA-256, never the
token. Path functions run in FastAPI's thread pool, so one lock guards the buckets.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from mailvia.domain.errors import RateLimited, RequestTooLarge
from mailvia.domain.ratelimit import RateLimiter, RequestRate


class TokenRateLimit:
    """`check` counts a request of an API token, `take_recipients` the recipients of what it
    submits; a rate of None never limits. Time comes from `clock` (monotonic)."""

    def __init__(
        self,
        rate: RequestRate | None,
        *,
        recipients: RequestRate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.recipients = recipients
        self._requests = RateLimiter(rate) if rate else None
        self._recipients = RateLimiter(recipients) if recipients else None
        self._clock = clock
        self._lock = threading.Lock()

    def check(self, token: str) -> None:
        """Count one request of this (authenticated) API token. Raises RateLimited when the
        token is over the rate; that request is not counted."""
        if self._requests is None or self.rate is None:
            return
        wait = self._take(self._requests, token, 1)
        if wait > 0:
            raise RateLimited(
                f"too many requests for this API token: at most {self.rate.count} per "
                f"{self.rate.per_seconds:g} s; retry after {math.ceil(wait)} s",
                retry_after=wait,
            )

    def take_recipients(self, token: str, count: int) -> None:
        """Count the recipients of one request of this token. Raises RateLimited when they do
        not fit its recipient limit now (nothing is counted), RequestTooLarge when they never
        would."""
        if self._recipients is None or self.recipients is None or count <= 0:
            return
        wait = self._take(self._recipients, token, count)
        rate = f"at most {self.recipients.count} per {self.recipients.per_seconds:g} s"
        if math.isinf(wait):
            raise RequestTooLarge(
                f"{count} recipients are more than this API token may send: {rate}"
            )
        if wait > 0:
            raise RateLimited(
                f"too many recipients for this API token: {rate}; these {count} fit in "
                f"{math.ceil(wait)} s",
                retry_after=wait,
            )

    def _take(self, limiter: RateLimiter, token: str, cost: int) -> float:
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            return limiter.take(key, self._clock(), cost)
