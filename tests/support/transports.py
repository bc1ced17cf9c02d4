"""A base for the tests' own transports: the Transport port's housekeeping (forget a
channel's connections, narrow them, close) as no-ops, so a test's transport writes only
its `send`."""

from __future__ import annotations


class QuietTransport:
    """Nothing to forget, narrow or close."""

    async def forget(self, channel_id: str) -> None:
        return None

    def narrow(self, channel_id: str, width: int) -> None:
        return None

    async def aclose(self) -> None:
        return None
