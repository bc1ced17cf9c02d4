"""The API's rate limit: requests per API token, counted in this process's memory.

Each token has a bucket (domain/ratelimit.py) keyed by the token's SHA-256, never the token.
Path functions run in FastAPI's thread pool, so one lock guards the buckets.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from mailvia.domain.errors import RateLimited
from mailvia.domain.ratelimit import RateLimiter, RequestRate


class TokenRateLimit:
    """`check` counts a request of an API token; time comes from `clock` (monotonic)."""

    def __init__(self, rate: RequestRate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._limiter = RateLimiter(rate)
        self._clock = clock
        self._lock = threading.Lock()

    def check(self, token: str) -> None:
        """Count one request of this (authenticated) API token. Raises RateLimited when the
        token is over the rate; that request is not counted."""
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            wait = self._limiter.take(key, self._clock())
        if wait > 0:
            raise RateLimited(
                f"too many requests for this API token: at most {self.rate.count} per "
                f"{self.rate.per_seconds:g} s; retry after {math.ceil(wait)} s",
                retry_after=wait,
            )
