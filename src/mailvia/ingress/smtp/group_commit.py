"""Group commit: items that arrive while a commit is running wait, and go together in the next.

An intake that takes many concurrent messages (the submission port with twenty sessions)
would otherwise run one database transaction, and one disk flush, per message, each in its
own thread fighting for the write lock. Here one commit at a time runs in a worker thread;
what arrived meanwhile forms the next group, so groups grow exactly as fast as commits slow
down, and a lone message never waits for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_GROUP = 100  # items per commit


class GroupCommit(Generic[Item, Result]):
    """`await put(item)` returns the item's own result or raises its own error.

    `commit(items)` (synchronous) returns one result or exception per item, in order; an
    exception it raises fails every item of its group. `run(commit, items)` runs it in a thread
    and must let it finish even if the waiting caller goes away (SubmissionServer.run does)."""

    def __init__(
        self,
        commit: Callable[[list[Item]], list[Result | BaseException]],
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
