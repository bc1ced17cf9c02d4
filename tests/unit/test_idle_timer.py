"""The submission connection's idle timeout (`LazyIdleTimer`): closed once idle for the
whole timeout, as aiosmtpd's own timer did, without a new timer at each command."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from mailvia.ingress.smtp.idle import LazyIdleTimer


class Connection(LazyIdleTimer):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self._timeout_duration = timeout
        self._timeout_handle = None
        self.closed_at: float | None = None
        self.timers = 0

    def _timeout_cb(self) -> None:
        self.closed_at = self.loop.time()


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self._cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True


class Clock:
    """The loop's clock and timers, moved by hand (no real time: the test cannot be late)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move the clock on, running each timer that falls due (in time order)."""
        end = self.now + seconds
        while due := sorted(
            (t for t in self.timers if not t.cancelled() and t.when() <= end),
            key=Timer.when,
        ):
            first = due[0]
            self.timers.remove(first)
            self.now = first.when()
            first.callback()
        self.now = end


def test_commands_put_the_close_off_until_the_connection_is_idle_the_whole_timeout() -> None:
    clock = Clock()
    conn = Connection(cast(asyncio.AbstractEventLoop, clock), 0.3)
    conn._reset_timeout()  # the greeting
    for _ in range(5):  # a command every 0.1 s for 0.5 s: never idle for 0.3 s
        clock.advance(0.1)
        assert conn.closed_at is None
        conn._reset_timeout()
    last = clock.now
    clock.advance(0.29)
    assert conn.closed_at is None  # idle 0.29 s of 0.3
    clock.advance(0.2)
    assert conn.closed_at == last + 0.3  # closed once idle the whole timeout, not later


def test_a_command_schedules_no_new_timer_while_one_is_due_sooner() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        conn = Connection(loop, 300)
        scheduled = 0
        call_at = loop.call_at

        def counting(when: float, callback: object, *args: object) -> asyncio.TimerHandle:
            nonlocal scheduled
            scheduled += 1
            return call_at(when, callback, *args)  # type: ignore[arg-type]

        loop.call_at = counting  # type: ignore[method-assign]
        try:
            for _ in range(100):
                conn._reset_timeout()
            conn._reset_timeout(1.0)  # a shorter one (aiosmtpd's PROXY wait) is set anew
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
            if conn._timeout_handle is not None:
                conn._timeout_handle.cancel()
        return scheduled

    assert asyncio.run(scenario()) == 2
