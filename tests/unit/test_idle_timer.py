"""The submission connection's idle timeout (`LazyIdleTimer`): closed once idle for the
whole timeout, as aiosmtpd's own timer did, without a new timer at each command."""

from __future__ import annotations

import asyncio

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


def test_commands_put_the_close_off_until_the_connection_is_idle_the_whole_timeout() -> None:
    async def scenario() -> tuple[float, Connection]:
        loop = asyncio.get_running_loop()
        conn = Connection(loop, 0.3)
        conn._reset_timeout()  # the greeting
        for _ in range(5):  # a command every 0.1 s for 0.5 s: never idle for 0.3 s
            await asyncio.sleep(0.1)
            assert conn.closed_at is None
            conn._reset_timeout()
        last = loop.time()
        await asyncio.sleep(0.2)
        assert conn.closed_at is None  # idle 0.2 s of 0.3
        await asyncio.sleep(0.3)
        return last, conn

    last, conn = asyncio.run(scenario())
    assert conn.closed_at is not None
    assert last + 0.3 <= conn.closed_at < last + 0.45


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
