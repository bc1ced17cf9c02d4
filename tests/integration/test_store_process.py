"""DELIVERY_STORE=process: a dispatcher's claims, started marks, records and give-backs run
in a child process of its own (store/process.py). Delivery through it to the real test
server, on SQLite and PostgreSQL; the child's exceptions raised here as themselves; its death
noticed at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import Auth, Security
from mailvia.domain.clock import SteppingClock
from mailvia.domain.errors import NotFound, StoreUnavailable
from mailvia.domain.message import State
from mailvia.store import migrate
from mailvia.store.process import ChildStore, StoreProcess, _portable, request_bytes
from mailvia.testserver import TestServer
from support.world import World


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("called in the worker's own process")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_mail_is_claimed_sent_and_recorded_through_the_store_process(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url, delivery_store="process")
    try:
        dispatcher = world.services.dispatcher
        assert isinstance(dispatcher.store, ChildStore)
        for name in ("claim", "record_attempts", "mark_started", "unclaim"):
            setattr(world.store, name, _refuse)  # the worker's own store: not these
        async with TestServer(maildir=tmp_path / "caught") as server:
            world.channel(server.port, security=Security.NONE, auth=Auth.NONE)
            receipts = world.send(count=30)
            now = time.time()
            dispatcher.liveness.start(now)  # starts the store process, as run_forever does
            assert await dispatcher.run_once(SteppingClock(now)) == 30
            got = await server.wait_for(30)
        assert sorted(e["content"] for e in got) == sorted(world.sent[r.id] for r in receipts)
        states = {world.store.get_message(r.id).state for r in receipts}
        assert states == {State.DELIVERED}
        child = dispatcher.store.child
        assert child.process is not None and child.process.is_alive()
    finally:
        await world.close()
    assert child.process.exitcode == 0  # stopped with the services, after the last record


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mailvia.db'}"
    migrate(url)
    return url


def test_an_error_raised_in_the_store_process_is_raised_here_as_itself(sqlite_url: str) -> None:
    child = StoreProcess(sqlite_url)
    try:
        with pytest.raises(NotFound):
            child.call("get_channel", "chn_nothing")
        with pytest.raises(TypeError):  # a bad call too, and the child goes on
            child.call("claim", "positional")
        assert child.call("channels_due", time.time()) == []
    finally:
        child.close()


def test_the_store_being_unavailable_in_the_child_is_store_unavailable_here(
    tmp_path: Path,
) -> None:
    """What the dispatcher treats as an outage (waits for the store to come back) stays one."""
    missing = tmp_path / "no such folder" / "mailvia.db"
    child = StoreProcess(f"sqlite:///{missing}")
    try:
        with pytest.raises(StoreUnavailable):
            child.call("channels_due", time.time())
    finally:
        child.close()


class _Unpicklable(Exception):
    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def test_an_exception_that_cannot_cross_the_pipe_becomes_a_runtime_error_naming_it() -> None:
    crossed = _portable(_Unpicklable("claim", "odd"))
    assert type(crossed) is RuntimeError and "_Unpicklable" in str(crossed)
    same = NotFound("no such channel")
    assert _portable(same) is same


def test_the_store_process_dying_is_noticed_at_once(sqlite_url: str) -> None:
    gone = threading.Event()
    child = StoreProcess(sqlite_url, on_gone=gone.set)
    try:
        child.start()
        assert child.call("next_due_at") is None
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        assert gone.wait(10), "the worker did not notice"
        with pytest.raises(RuntimeError, match="store process is gone"):
            child.call("next_due_at")
    finally:
        child.close()


def test_a_call_under_way_when_the_store_process_dies_raises(sqlite_url: str) -> None:
    """No caller waits for ever on an answer that cannot come."""
    gone = threading.Event()
    child = StoreProcess(sqlite_url, on_gone=gone.set)
    try:
        child.start()
        child.call("next_due_at")
        assert child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)  # the next call is taken but never answered
        errors: list[BaseException] = []

        def call() -> None:
            try:
                child.call("next_due_at")
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        caller.join(10)
        # the reader thread tells of the death just after it fails the calls under way
        assert not caller.is_alive() and gone.wait(10)
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    finally:
        child.close()


def test_give_backs_records_and_marks_cross_the_pipe_without_the_messages_bytes() -> None:
    """The child never reads a claim's content when it gives back, records or marks: it is
    not pickled to it again (a 30 MB message would cross twice more). What goes down the
    pipe is read back as the child reads it."""
    from mailvia.outbox.ports import AttemptRecord, Claim

    sent: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Child:
        def _send(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            data = request_bytes((len(sent) + 1, name, args, kwargs))
            assert b"x" * 1000 not in data
            _, name, args, kwargs = pickle.loads(data)
            sent.append((name, args, kwargs))

        def call(self, name: str, *args: Any, **kwargs: Any) -> None:
            self._send(name, args, kwargs)

        async def call_awaited(self, name: str, *args: Any, **kwargs: Any) -> list[bool]:
            self._send(name, args, kwargs)
            return [True]

    claim = Claim(
        "m1",
        1,
        "o1",
        "c1",
        "a@example.com",
        ("b@example.com",),
        (),
        b"x" * 1000,
        0,
        0.0,
        10.0,
        False,
        "w1",
    )
    record = AttemptRecord(claim, "w1", 1.0, (), State.DELIVERED, None, 0, False)
    store = ChildStore(local=None, child=Child())  # type: ignore[arg-type]
    store.unclaim([claim], state=State.QUEUED, now=1.0)
    store.record_attempts([record])
    store.mark_started([2], "w1", 1.0, records=[record])
    asyncio.run(store.mark_started_awaited([3], "w1", 1.0, records=[record]))
    (_, (claims,), _), (_, (records,), _), *marks = sent
    assert [c.content for c in claims] == [b""]
    assert claims[0] == dataclasses.replace(claim, content=b"")
    assert [r.claim.content for r in records] == [b""]
    assert records[0] == dataclasses.replace(record, claim=claims[0])
    assert [(a, kw["records"]) for _, a, kw in marks] == [
        (([2], "w1", 1.0), records),
        (([3], "w1", 1.0), records),
    ]
    assert claim.content == b"x" * 1000 and record.claim is claim  # the caller's: untouched


def test_the_pipe_itself_carries_no_message_bytes() -> None:
    """The bytes StoreProcess writes to its pipe (its own `_send`, threaded and awaited
    calls) hold no claim's content: the test above pickles in a stand-in child, so it passed
    with `_send` back on plain `pickle.dumps` (the review of branch `worker`)."""
    from mailvia.outbox.ports import AttemptRecord, Claim

    process = StoreProcess("sqlite://", on_gone=lambda: None)
    written: list[bytes] = []

    class Pipe:  # the worker's end: keeps what is written and answers at once
        def send_bytes(self, data: bytes) -> None:
            written.append(data)
            process._waiting.pop(pickle.loads(data)[0])(True, [True])

    process.process, process._conn = object(), Pipe()  # type: ignore[assignment]
    content = b"x" * 1000
    claim = Claim(
        "m1", 1, "o1", "c1", "a@example.com", ("b@example.com",), (), content,
        0, 0.0, 10.0, False, "w1",
    )  # fmt: skip
    record = AttemptRecord(claim, "w1", 1.0, (), State.DELIVERED, None, 0, False)
    store = ChildStore(local=None, child=process)  # type: ignore[arg-type]
    store.unclaim([claim], state=State.QUEUED, now=1.0)
    store.record_attempts([record])
    store.mark_started([2], "w1", 1.0, records=[record])
    asyncio.run(store.mark_started_awaited([3], "w1", 1.0, records=[record]))
    assert len(written) == 4
    assert not [data for data in written if content in data]
    assert pickle.loads(written[0])[2] == ([dataclasses.replace(claim, content=b"")],)
    assert claim.content == content


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_started_marks_are_awaited_on_the_event_loop_not_in_a_thread(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The commits of marks go to the child from the event loop (`call_awaited`): the
    threaded `mark_started` is never called, and the mail is delivered and recorded."""
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url, delivery_store="process")
    try:
        dispatcher = world.services.dispatcher
        store = dispatcher.store
        assert isinstance(store, ChildStore)
        store.mark_started = _refuse  # type: ignore[method-assign]
        awaited: list[str] = []
        call_awaited = store.child.call_awaited

        async def noted(name: str, *args: Any, **kwargs: Any) -> Any:
            awaited.append(name)
            assert threading.current_thread() is threading.main_thread()
            return await call_awaited(name, *args, **kwargs)

        store.child.call_awaited = noted  # type: ignore[method-assign]
        async with TestServer(maildir=tmp_path / "caught") as server:
            world.channel(server.port, security=Security.NONE, auth=Auth.NONE)
            receipts = world.send(count=30)
            now = time.time()
            dispatcher.liveness.start(now)
            assert await dispatcher.run_once(SteppingClock(now)) == 30
            await server.wait_for(30)
        assert "mark_started" in awaited
        assert {world.store.get_message(r.id).state for r in receipts} == {State.DELIVERED}
    finally:
        await world.close()


async def test_an_awaited_call_raises_the_childs_exception_as_itself(sqlite_url: str) -> None:
    child = StoreProcess(sqlite_url)
    try:
        with pytest.raises(NotFound):
            await child.call_awaited("get_channel", "chn_nothing")
        assert await child.call_awaited("channels_due", time.time()) == []
    finally:
        child.close()


async def test_an_awaited_call_under_way_when_the_store_process_dies_raises(
    sqlite_url: str,
) -> None:
    """No coroutine waits for ever on an answer that cannot come; the death is noticed."""
    gone = threading.Event()
    child = StoreProcess(sqlite_url, on_gone=gone.set)
    try:
        assert await child.call_awaited("next_due_at") is None
        assert child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)  # the next call is taken but never answered
        waiting = asyncio.ensure_future(child.call_awaited("next_due_at"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="store process is gone"):
            await asyncio.wait_for(waiting, 10)
        assert gone.wait(10)  # told just after the calls under way are failed
        with pytest.raises(RuntimeError, match="store process is gone"):
            await child.call_awaited("next_due_at")
    finally:
        child.close()


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """An executor that refuses work: a call that hops through a thread fails on it."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a thread was asked for")


async def test_an_awaited_call_takes_no_thread_from_the_loop(sqlite_url: str) -> None:
    """`call_awaited` is answered on the loop by the pipe's reader, not by a call made in the
    loop's executor (as `asyncio.to_thread(call, ...)` would be)."""
    child = StoreProcess(sqlite_url)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoThreads())
    try:
        assert await child.call_awaited("next_due_at") is None
        assert await child.call_awaited("channels_due", time.time()) == []
    finally:
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        child.close()


async def test_a_cancelled_awaited_call_is_answered_into_the_void_and_the_pipe_goes_on(
    sqlite_url: str,
) -> None:
    """Its caller went away, the child still answers: the answer is dropped, the worker is
    not told the store process is gone (the pipe is not out of step), the next call works."""
    gone = threading.Event()
    child = StoreProcess(sqlite_url, on_gone=gone.set)
    try:
        assert await child.call_awaited("next_due_at") is None
        assert child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)  # the call is taken, answered once resumed
        waiting = asyncio.ensure_future(child.call_awaited("next_due_at"))
        await asyncio.sleep(0)
        assert child._waiting  # written to the pipe
        waiting.cancel()
        os.kill(child.pid, signal.SIGCONT)
        assert await asyncio.wait_for(child.call_awaited("channels_due", time.time()), 10) == []
        # The child answers each call from a thread of its own: the cancelled call's answer
        # may come after the later call's.
        deadline = time.monotonic() + 10
        while child._waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not child._waiting and not gone.is_set()
    finally:
        child.close()


async def test_threaded_and_awaited_calls_at_once_each_get_their_own_answer(
    sqlite_url: str,
) -> None:
    child = StoreProcess(sqlite_url)
    names = [f"chn_{i}" for i in range(40)]

    def threaded(name: str) -> str:
        try:
            child.call("get_channel", name)
        except NotFound as exc:
            return str(exc)
        return "found"

    async def awaited(name: str) -> str:
        try:
            await child.call_awaited("get_channel", name)
        except NotFound as exc:
            return str(exc)
        return "found"

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            threads = [asyncio.wrap_future(pool.submit(threaded, n)) for n in names]
            on_loop = [awaited(n) for n in names]
            answers = await asyncio.gather(*threads, *on_loop)
        assert all(n in answer for n, answer in zip(names + names, answers, strict=True))
    finally:
        child.close()
