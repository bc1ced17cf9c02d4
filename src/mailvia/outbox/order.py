"""Sending in order: a channel's connections take messages in the order they were claimed
(due time, then submission), and none takes a message more than `size` places beyond the
oldest one still in a transaction.

Without it a connection that is quick (already open) sends message after message while
another still opens its connection (TLS, AUTH) for an earlier one, and a rep's follow-up
overtakes the message it follows by any number of messages. With `size` = the channel's
connections + 1, a message taken while an earlier one is still in a transaction is at most
`max_connections` places after it in the claim order, so no message is overtaken by more
than `max_connections` messages claimed after it, and every connection can stay busy.
"""

from __future__ import annotations

import asyncio


class Turns:
    """Positions handed out in order; `wait()` holds a taker back while the oldest position
    still open is `size` or more behind the next."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.next = 0
        self.open: set[int] = set()
        self._moved = asyncio.Event()

    async def wait(self) -> None:
        while self.open and self.next - min(self.open) >= self.size:
            moved = self._moved
            await moved.wait()

    def take(self) -> int:
        position, self.next = self.next, self.next + 1
        self.open.add(position)
        return position

    def done(self, position: int) -> None:
        self.open.discard(position)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
