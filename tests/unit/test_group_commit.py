"""GroupCommit: what arrives during a commit goes in the next one; each item gets its own
result or error; a failed commit fails only its own group; a caller that leaves does not
stop its item from being committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mailvia.ingress.smtp.group_commit import GroupCommit


class Commits:
    """A commit function run in a thread that blocks until released, recording each group."""

    def __init__(self, fail_group: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.fail_group = fail_group
        self.release = asyncio.Event()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.groups.append(items)
        if len(self.groups) - 1 == self.fail_group:
            raise RuntimeError("disk full")
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        await self.release.wait()
        return await asyncio.to_thread(func, *args)


async def test_items_arriving_during_a_commit_go_together_in_the_next() -> None:
    commits = Commits()
    group: GroupCommit[int, int] = GroupCommit(commits, commits.run)
    first = asyncio.ensure_future(group.put(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.put(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    commits.release.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert commits.groups == [[0], [1, 2, 3, 4, 5]]
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        "odd 1", 20, "odd 3", 40, "odd 5",
    ]  # fmt: skip


async def test_a_failed_commit_fails_its_group_only() -> None:
    commits = Commits(fail_group=0)
    group: GroupCommit[int, int] = GroupCommit(commits, commits.run)
    first = asyncio.ensure_future(group.put(2))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(group.put(4))
    commits.release.set()
    with pytest.raises(RuntimeError, match="disk full"):
        await first
    assert await second == 40


async def test_groups_are_at_most_max_group() -> None:
    commits = Commits()
    group: GroupCommit[int, int] = GroupCommit(commits, commits.run, max_group=2)
    waiting = [asyncio.ensure_future(group.put(i * 2)) for i in range(5)]
    await asyncio.sleep(0)
    commits.release.set()
    assert await asyncio.gather(*waiting) == [0, 20, 40, 60, 80]
    assert commits.groups == [[0], [2, 4], [6, 8]]


async def test_a_caller_that_leaves_does_not_stop_its_item() -> None:
    commits = Commits()
    group: GroupCommit[int, int] = GroupCommit(commits, commits.run)
    leaving = asyncio.ensure_future(group.put(2))
    await asyncio.sleep(0)
    staying = asyncio.ensure_future(group.put(4))
    await asyncio.sleep(0)
    leaving.cancel()
    commits.release.set()
    assert await staying == 40
    assert commits.groups == [[2], [4]]
