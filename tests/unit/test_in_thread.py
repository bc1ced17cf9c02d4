"""The submit routes' thread calls (ingress/api/intake_route.py `in_thread`) keep what
FastAPI's `run_in_threadpool` gave them: the result or the exception, the caller's context,
and a request cancelled meanwhile waits for its work (a commit under way) to end."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from mailvia.ingress.api.intake_route import in_thread

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_the_result_the_exception_and_the_context_come_back() -> None:
    WHO.set("jane")

    def work(a: int, b: int) -> tuple[int, str, threading.Thread]:
        return a + b, WHO.get(), threading.current_thread()

    total, who, thread = await in_thread(work, 1, 2)
    assert (total, who) == (3, "jane") and thread is not threading.current_thread()

    def fails() -> None:
        raise LookupError("refused")

    with pytest.raises(LookupError, match="refused"):
        await in_thread(fails)


async def test_a_cancelled_caller_waits_for_its_work_to_end() -> None:
    started, go_on, ended = threading.Event(), threading.Event(), threading.Event()

    def commit() -> str:
        started.set()
        go_on.wait(10)
        ended.set()
        return "committed"

    task = asyncio.create_task(in_thread(commit))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the work
    task.cancel()  # cancelled again: it still waits
    await asyncio.sleep(0.05)
    assert not task.done()
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()
