"""GroupCommit: what arrives during a commit goes in the next one; each item gets its own
result or error; a failed commit fails only its own group; a caller that leaves does not
stop its item from being committed. PlannedGroupCommit: the same in two steps, the next
group's plan while a group writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mailvia.outbox.group_commit import GroupCommit, PlannedGroupCommit


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


class Steps:
    """Plan and write steps run in a thread; each write blocks until `writes` is released,
    and `log` records the steps in the order they began and ended."""

    def __init__(self, fail_plan: int | None = None, fail_write: int | None = None) -> None:
        self.log: list[str] = []
        self.plans: list[list[int]] = []
        self.fail_plan, self.fail_write = fail_plan, fail_write
        self.writes = asyncio.Event()
        self.held = 0  # writes waiting for `writes`
        self.written = 0

    def plan(self, items: list[int]) -> list[int]:
        self.plans.append(items)
        self.log.append(f"plan {items}")
        if len(self.plans) - 1 == self.fail_plan:
            raise RuntimeError("store unavailable")
        return items

    def write(self, items: list[int]) -> list[int | BaseException]:
        self.log.append(f"wrote {items}")
        self.written += 1
        if self.written - 1 == self.fail_write:
            raise RuntimeError("disk full")
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        if func == self.write:
            self.held += 1
            await self.writes.wait()
        return await asyncio.to_thread(func, *args)


def planned(steps: Steps, max_group: int = 100) -> PlannedGroupCommit[int, list[int], int]:
    return PlannedGroupCommit(steps.plan, steps.write, steps.run, max_group=max_group)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never came")


async def test_the_next_groups_plan_runs_while_a_group_writes() -> None:
    steps = Steps()
    group = planned(steps)
    first = asyncio.ensure_future(group.put(0))
    await until(lambda: steps.held == 1)  # planned; its write waits for `writes`
    second = [asyncio.ensure_future(group.put(i)) for i in (2, 4)]
    await asyncio.sleep(0.05)
    assert steps.plans == [[0]]  # what arrives during a write waits for the next one
    steps.writes.set()
    assert await first == 0
    assert await asyncio.gather(*second) == [20, 40]
    assert steps.log == ["plan [0]", "wrote [0]", "plan [2, 4]", "wrote [2, 4]"]
    assert group.idle


async def test_a_plan_overlaps_the_write_before_it_and_writes_keep_their_order() -> None:
    steps = Steps()
    group = planned(steps)
    first = asyncio.ensure_future(group.put(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.put(i)) for i in (2, 3)]  # wait during plan [0]
    await until(lambda: steps.plans == [[0], [2, 3]])  # planned while [0] waits to write
    later = asyncio.ensure_future(group.put(6))  # [2, 3] planned, not written: waits
    await asyncio.sleep(0.05)
    assert steps.log == ["plan [0]", "plan [2, 3]"]
    steps.writes.set()
    results = await asyncio.gather(first, *rest, later, return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [0, 20, "odd 3", 60]
    assert steps.log[:3] == ["plan [0]", "plan [2, 3]", "wrote [0]"]
    assert sorted(steps.log[3:5]) == ["plan [6]", "wrote [2, 3]"]  # at the same time
    assert steps.log[5:] == ["wrote [6]"]


@pytest.mark.parametrize("failing", ["plan", "write"])
async def test_a_failed_step_fails_its_group_only(failing: str) -> None:
    steps = Steps(**{f"fail_{failing}": 0})  # type: ignore[arg-type]
    group = planned(steps)
    first = asyncio.ensure_future(group.put(2))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(group.put(4))
    steps.writes.set()
    with pytest.raises(RuntimeError, match=r"store unavailable|disk full"):
        await first
    assert await second == 40
    assert group.idle


async def test_planned_groups_are_at_most_max_group_and_a_caller_gone_before_is_dropped() -> None:
    steps = Steps()
    group = planned(steps, max_group=2)
    first = asyncio.ensure_future(group.put(0))
    await asyncio.sleep(0)
    leaving = asyncio.ensure_future(group.put(10))
    waiting = [asyncio.ensure_future(group.put(i * 2)) for i in range(1, 4)]
    await asyncio.sleep(0)
    leaving.cancel()
    steps.writes.set()
    assert await asyncio.gather(first, *waiting) == [0, 20, 40, 60]
    assert steps.plans == [[0], [2, 4], [6]]
