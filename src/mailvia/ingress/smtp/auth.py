"""Logins on the submission port are checked one at a time per client address, so that each
failure is counted (domain/signins.py) before the client's next login is judged.

In memory, per process. No I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mailvia.domain.signins import client_key


class OneAtATime:
    """Logins from one client (an IPv6 client by its /64) are checked one after another: guessing
    over many parallel connections gains nothing, and many good logins at once (a mail app's
    connections, a system's workers) only wait their turn instead of looking like an attack.
    Never per login address: a client guessing someone's address, and waiting out its own
    slow-down, must not hold up the owner's logins from elsewhere."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        key = client_key(client)
        self._holders[key] = self._holders.get(key, 0) + 1
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]
