"""serve's supervisor of its worker process (ingress/cli/supervise.py), with real child
processes: one that cannot start (a bad DB_URL) is started again with growing pauses, never in
a tight loop, and one stopped on time goes quietly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailvia.app import build
from mailvia.ingress.cli.supervise import DeliveryProcess
from mailvia.settings import Settings

pytestmark = pytest.mark.timeout(60)


async def supervise_for(process: DeliveryProcess, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(process.supervise(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def test_a_worker_process_that_keeps_dying_is_restarted_ever_more_slowly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", db_url="nosuchdb://x", shutdown_seconds=1)
    started = time.monotonic()
    asyncio.run(supervise_for(DeliveryProcess(settings), 6.0))
    assert time.monotonic() - started < 12
    out, err = capsys.readouterr()
    starts = out.count("delivery: worker process")
    # at once, then after 1 s, 2 s, 4 s: at most 4 starts in 6 s (each start takes a while)
    assert 2 <= starts <= 4, (out, err)
    assert err.count("exited (exit code") >= starts - 1, err
    assert "starting another in 0 s" in err and "starting another in 1 s" in err


def test_a_worker_process_stopped_on_time_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", shutdown_seconds=1)
    asyncio.run(build(settings, create_key=True).aclose())  # as serve does before
    delivery = DeliveryProcess(settings)
    asyncio.run(supervise_for(delivery, 4.0))
    out, err = capsys.readouterr()
    assert out.count("delivery: worker process") == 1, (out, err)
    assert "exited" not in err, err
    # It stopped itself on SIGTERM (its handler ran), not killed by the signal's default.
    assert delivery.process is not None and delivery.process.returncode == 0, err
