"""serve's supervisor of its worker process (ingress/cli/supervise.py), with real child
processes: one that cannot start (a bad DB_URL) is started again with growing pauses, never in
a tight loop, and one stopped on time goes quietly."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailvia.app import build
from mailvia.ingress.cli.supervise import RESTART_FIRST, DeliveryProcess
from mailvia.runtime import DELIVERY_NICE
from mailvia.settings import Settings

pytestmark = pytest.mark.timeout(60)


class Watched(DeliveryProcess):
    """Notes when each child is started and when it is seen to have exited."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.started: list[float] = []
        self.exited: list[float] = []

    async def start(self) -> int:
        self.started.append(time.monotonic())
        return await super().start()

    async def _exit_or(self, stop: asyncio.Event) -> int | None:
        code = await super()._exit_or(stop)
        if code is not None:
            self.exited.append(time.monotonic())
        return code


class Said:
    """What this process and its children wrote to stdout and stderr so far."""

    def __init__(self, capture: pytest.CaptureFixture[str]) -> None:
        self.capture, self.out, self.err = capture, "", ""

    def read(self) -> Said:
        out, err = self.capture.readouterr()
        self.out, self.err = self.out + out, self.err + err
        return self


async def supervise_until(
    process: DeliveryProcess, done: Callable[[], bool], timeout: float = 40.0
) -> float:
    """Supervise until `done()` (however long children take to start on a loaded machine),
    then stop; returns the seconds the stop took."""
    stop = asyncio.Event()
    task = asyncio.create_task(process.supervise(stop))
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, f"not done after {timeout} s"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        stopped_at = time.monotonic()
        await task
    return time.monotonic() - stopped_at


def test_a_worker_process_that_keeps_dying_is_restarted_ever_more_slowly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", db_url="nosuchdb://x", shutdown_seconds=1)
    process = Watched(settings)
    stopping = asyncio.run(supervise_until(process, lambda: len(process.exited) >= 3))
    assert stopping < 1.5  # a stop ends the 2 s pause after the third death at once
    said = Said(capfd).read()
    assert said.out.count("delivery: worker process") == len(process.started) == 3, said.out
    assert said.err.count("exited (exit code") >= 3, said.err
    for delay in (0, 1, 2):
        assert f"starting another in {delay} s" in said.err, said.err
    # at once after the first death, RESTART_FIRST (1 s) after the second: never a tight loop
    restarts = zip(process.exited[:2], process.started[1:], strict=True)
    paused = [start - died for died, start in restarts]
    assert paused[0] < RESTART_FIRST <= paused[1], paused


def test_a_worker_process_stopped_on_time_says_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", shutdown_seconds=1)
    asyncio.run(build(settings, create_key=True).aclose())  # as serve does before
    delivery = DeliveryProcess(settings)
    said = Said(capfd)
    # Stopped once it says it is delivering (its SIGTERM handler is in place by then)
    asyncio.run(supervise_until(delivery, lambda: " delivering" in said.read().out))
    said.read()
    assert said.out.count("delivery: worker process") == 1, (said.out, said.err)
    assert "exited" not in said.err, said.err
    # It stopped itself on SIGTERM (its handler ran), not killed by the signal's default.
    assert delivery.process is not None and delivery.process.returncode == 0, said.err


def test_the_worker_process_runs_below_serves_priority(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """serve's intake goes first when the CPUs are busy: its delivery child (and what that
    starts) runs DELIVERY_NICE nice values below it."""
    settings = Settings(data_dir=tmp_path / "data", shutdown_seconds=1)
    asyncio.run(build(settings, create_key=True).aclose())
    delivery = DeliveryProcess(settings)
    said = Said(capfd)
    seen: list[int] = []

    def delivering() -> bool:
        if " delivering" not in said.read().out or delivery.process is None:
            return False
        seen.append(os.getpriority(os.PRIO_PROCESS, delivery.process.pid))
        return True

    asyncio.run(supervise_until(delivery, delivering))
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + DELIVERY_NICE], seen
