"""A background loop's view of store outages: pause, say so once, look again after a jittered
backoff, and say once when the store is back.

PostgreSQL stopped or the data folder full makes every store call raise StoreUnavailable. A
loop (the dispatcher, the webhook dispatcher) that called the store every pass would log a
line and hammer the database each time; with `Outage` it logs one line when the outage
starts and one when it ends, and between looks waits 0.5 s doubling to `most` seconds, each
wait drawn between half and all of that, so workers that lost the store together do not all
come back in the same instant. See docs/architecture.md ("Store trouble").

Side effects: log lines only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mailvia.domain.clock import Instant
from mailvia.domain.errors import StoreUnavailable

log = logging.getLogger(__name__)

FIRST_WAIT = 0.5  # seconds before the first look after the store went away
MOST_WAIT = 10.0  # the backoff's ceiling: the store is used again at most this long after
T = TypeVar("T")


class Outage:
    """One loop's outage state. `what` names the loop in its two log lines."""

    def __init__(self, what: str, *, rand: Callable[[], float], most: float = MOST_WAIT) -> None:
        self.what = what
        self.rand = rand
        self.most = most
        self.since: Instant | None = None  # when the current outage was first seen
        self.looks = 0  # failed looks in the current outage

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, now: Instant, exc: StoreUnavailable) -> float:
        """The store failed at `now`: logs the first failure of an outage (only that one).
        Returns the seconds to wait before the next look (jittered, growing)."""
        if self.since is None:
            self.since = now
            log.warning("store unavailable: %s paused (%s)", self.what, exc)
        self.looks += 1
        ceiling = min(FIRST_WAIT * 2.0 ** min(self.looks - 1, 30), self.most)
        return ceiling * (0.5 + self.rand() / 2)

    def worked(self, now: Instant) -> None:
        """The store answered at `now`: ends the outage, if there was one (logged once)."""
        if self.since is not None:
            log.warning(
                "store back after %.1f s: %s resumed", max(now - self.since, 0.0), self.what
            )
            self.since, self.looks = None, 0

    async def until_back(
        self,
        attempt: Callable[[], Awaitable[T]],
        clock: Callable[[], Instant],
        *,
        give_up: Callable[[], bool],
    ) -> T:
        """`await attempt()` until it does not raise StoreUnavailable, waiting between tries.
        Raises the last StoreUnavailable once `give_up()` is true."""
        while True:
            try:
                result = await attempt()
            except StoreUnavailable as exc:
                if give_up():
                    raise
                await asyncio.sleep(self.failed(clock(), exc))
                continue
            self.worked(clock())
            return result
