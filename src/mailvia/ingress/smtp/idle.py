"""The idle timeout of a submission connection without a timer per command.

aiosmtpd restarts its idle timer at each command (`SMTP._reset_timeout`: the old timer
cancelled, a new one scheduled: four of each for every relayed message). `LazyIdleTimer`
(mixed in before `aiosmtpd.smtp.SMTP`) only moves the deadline; the timer already set, due
no later, finds the deadline moved when it fires and sets itself again for what is left. The
connection is closed (aiosmtpd's `_timeout_cb`) at the same time as before: once it has been
idle for the whole timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LazyIdleTimer:
    """aiosmtpd's `_reset_timeout`, moving a deadline instead of rescheduling a timer."""

    loop: asyncio.AbstractEventLoop
    _timeout_duration: float
    _timeout_handle: asyncio.TimerHandle | None
    _idle_deadline = 0.0

    def _reset_timeout(self, duration: float | None = None) -> None:
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and handle.when() <= deadline:
            return  # set already, due no later: it moves itself when it fires
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)
            return
        smtp: Any = self
        smtp._timeout_cb()
