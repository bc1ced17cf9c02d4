"""Group commit: items that arrive while a commit is running wait, and go together in the next.

An intake that takes many concurrent messages (the submission port with twenty sessions)
would otherwise run one database transaction, and one disk flush, per message, each in its
own thread fighting for the write lock. Here one commit at a time runs (in a worker thread,
or awaited on the loop: the worker's marks with its store process); what arrived meanwhile
forms the next group, so groups grow exactly as fast as commits slow down, and a lone
message never waits for a timer.

`GroupCommit` is used by the dispatcher (the marks of transactions about to start, see
outbox/liveness.py); `PlannedGroupCommit`, the same in two steps whose reads overlap the
previous group's write, by the submission port (messages in, see ingress/smtp/intake.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Plan = TypeVar("Plan")

MAX_GROUP = 100  # items per commit


class GroupCommit(Generic[Item, Result]):
    """`await put(item)` returns the item's own result or raises its own error.

    `commit(items)` returns one result or exception per item, in order; an exception it raises
    fails every item of its group. `run(commit, items)` runs it (a synchronous one in a
    thread; the marks' is a coroutine function, awaited on the loop) and must let it finish
    even if the waiting caller goes away (SubmissionServer.run does)."""

    def __init__(
        self,
        commit: Callable[[list[Item]], Any],
        run: Callable[..., Coroutine[Any, Any, list[Result | BaseException]]],
        *,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._commit = commit
        self._run = run
        self._max = max_group
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._busy = False
        self._task: asyncio.Future[list[Result | BaseException]] | None = None

    async def put(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._next()
        return await future

    @property
    def idle(self) -> bool:
        """No commit running and none waiting."""
        return not self._busy and not self._waiting

    def _next(self) -> None:
        # A caller that went away before its commit started (the client hung up, or was cut
        # off at shutdown) never got a 250 and will send again: its item is dropped.
        self._waiting = [(item, future) for item, future in self._waiting if not future.done()]
        if not self._waiting:
            return
        group, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
        self._busy = True
        items = [item for item, _ in group]
        self._task = asyncio.get_running_loop().create_task(self._run(self._commit, items))
        self._task.add_done_callback(lambda done: self._settle(done, group))

    def _settle(
        self, done: asyncio.Future[list[Result | BaseException]], group: list[tuple[Any, Any]]
    ) -> None:
        self._busy = False
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        results: list[Any] = [error] * len(group) if error else done.result()
        for (_, future), result in zip(group, results, strict=True):
            if future.done():  # its caller went away during the commit: committed all the same
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._waiting:
            self._next()


class PlannedGroupCommit(Generic[Item, Plan, Result]):
    """A group commit in two steps, each in a thread through `run`: `plan(items)` (the reads a
    commit needs) and `write(plan)` (the commit: one result or exception per item, in order).
    The next group's plan runs while a group writes, so a commit's cycle is the longer of the
    two steps, not their sum; writes go one at a time, in order.

    A group's plan starts when nothing is planned or written, or as the group before it
    starts its write (with what waited then); what arrives later waits for the next such
    moment, so groups grow as the writes slow down, as with GroupCommit. An exception `plan`
    or `write` raises fails every item of its group. A caller that went away before its
    group's plan started is dropped; one that goes away later is committed all the same."""

    def __init__(
        self,
        plan: Callable[[list[Item]], Plan],
        write: Callable[[Plan], list[Result | BaseException]],
        run: Callable[..., Coroutine[Any, Any, Any]],
        *,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._plan = plan
        self._write = write
        self._run = run
        self._max = max_group
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._planning = False
        self._ready: tuple[list[tuple[Item, asyncio.Future[Result]]], Plan] | None = None
        self._writing = False
        self._tasks: set[asyncio.Future[Any]] = set()

    async def put(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._advance()
        return await future

    @property
    def idle(self) -> bool:
        """Nothing planned, written or waiting."""
        busy = self._planning or self._writing or self._ready is not None
        return not busy and not self._waiting

    def _advance(self) -> None:
        if self._writing:
            return
        if self._ready is not None:
            group, plan = self._ready
            self._ready = None
            self._writing = True
            self._start(self._run(self._write, plan), lambda done: self._written(done, group))
        if not self._planning and self._ready is None:
            self._plan_next()  # idle, or the write just started: the next group's reads

    def _plan_next(self) -> None:
        self._waiting = [(item, future) for item, future in self._waiting if not future.done()]
        if not self._waiting:
            return
        group, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
        self._planning = True
        items = [item for item, _ in group]
        self._start(self._run(self._plan, items), lambda done: self._planned(done, group))

    def _start(
        self,
        step: Coroutine[Any, Any, Any],
        then: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(then)

    def _planned(self, done: asyncio.Future[Plan], group: list[tuple[Any, Any]]) -> None:
        self._planning = False
        error = _error(done)
        if error is not None:
            _settle(group, [error] * len(group))
        else:
            self._ready = (group, done.result())
        self._advance()

    def _written(
        self, done: asyncio.Future[list[Result | BaseException]], group: list[tuple[Any, Any]]
    ) -> None:
        self._writing = False
        error = _error(done)
        _settle(group, [error] * len(group) if error is not None else done.result())
        self._advance()


def _error(done: asyncio.Future[Any]) -> BaseException | None:
    return done.exception() if not done.cancelled() else asyncio.CancelledError()


def _settle(group: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(group, results, strict=True):
        if future.done():  # its caller went away meanwhile: committed all the same
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
