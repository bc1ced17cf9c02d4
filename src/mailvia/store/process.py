"""The delivery's hot store calls in a process of their own (`DELIVERY_STORE=process`).

A worker's event loop drives its SMTP sessions; its claims, started marks and records are
SQLAlchemy work of about 0.2 ms per message that, in threads of the same process, share the
GIL with the loop. `StoreProcess` starts a child process (spawned, so it shares nothing but
the database) that opens the same store and runs those calls; `ChildStore` is the
dispatcher's store (DispatchStore and WorkerRegistry): the calls in `IN_CHILD` go to the
child over a pipe (pickled, one request and one answer per call, several calls at once), every
other one runs here on the local store as before.

Guarantees: a call returns only when the child's call returned, i.e. after its transaction
committed; an exception raised in the child is raised to the caller as the same exception (a
RuntimeError naming it when it does not pickle). When the child dies the worker cannot go on
(its claims and records go nowhere): it logs and exits at once, like a crash, and its leases
bring its mail back (serve starts its worker again). The child stops when the worker's end
of the pipe closes, however the worker ended (a kill -9 too).

Side effects: a child process; the calls' own (claims, marks, records, in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import io
import itertools
import logging
import multiprocessing
import multiprocessing.process
import os
import pickle
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from multiprocessing.connection import Connection
from typing import Any, cast

from mailvia import runtime
from mailvia.domain.channel import Budget, Channel
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.outbox.ports import AttemptRecord, Claim, Event, Ledger
from mailvia.store.sqlstore import SqlStore

log = logging.getLogger(__name__)

# The calls of a channel run's hot path, made in the child.
IN_CHILD = frozenset({"claim", "unclaim", "record_attempts", "mark_started"})
CHILD_THREADS = 4  # calls at once in the child (a claim, a record, a mark, a give-back)
EXIT_CHILD_GONE = 70  # the worker's exit status when its store process died (EX_SOFTWARE)


def _child_main(conn: Connection, url: str) -> None:
    """The child: answer calls on `store` until the worker's end of the pipe closes (shut by
    `StoreProcess.close`, or by the kernel when the worker dies, however it died). Signals
    to the whole group (Ctrl-C, systemd's SIGTERM) are the worker's to act on: it stops its
    delivery, recording what it sent through here, then this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Its reader and call threads hand each call over: a thread woken by the pipe or the
    # database waits at most 1 ms for the GIL (Python's default is 5 ms), as in the worker.
    runtime.shorten_switch_interval()
    store = SqlStore(url)
    # What starting made (the modules, SQLAlchemy's tables and compiled statements) is kept
    # out of every later collection: a full one then walks what the calls made, not the heap.
    runtime.freeze_heap()
    sending = threading.Lock()
    pool = ThreadPoolExecutor(CHILD_THREADS, thread_name_prefix="store-call")

    def answer(number: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            reply: tuple[int, bool, Any] = (number, True, getattr(store, name)(*args, **kwargs))
        except Exception as exc:
            reply = (number, False, _portable(exc))
        data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        with sending:
            conn.send_bytes(data)

    try:
        while True:
            try:
                number, name, args, kwargs = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the worker is gone: stop
            pool.submit(answer, number, name, args, kwargs)
    finally:
        pool.shutdown(wait=True)
        store.close()
        conn.close()


def _portable(exc: Exception) -> Exception:
    """`exc` if it crosses the pipe as itself, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RuntimeError(f"in the store process: {exc!r}")
    return exc


def _exit_child_gone() -> None:
    log.error("the store process died: the worker stops (its leases bring its mail back)")
    logging.shutdown()
    os._exit(EXIT_CHILD_GONE)


Answer = Callable[[bool, Any], None]  # hands a call's result (True) or exception (False) back


class StoreProcess:
    """The child process and the pipe to it. `call(name, ...)` runs `store.name(...)` there,
    from any thread, and returns its result or raises its exception; `call_awaited` the same
    from the event loop, without a thread: the request is written on the loop, and the pipe's
    reader hands the answer straight to the loop (one thread hop less each way than
    `asyncio.to_thread(call, ...)`). Both write under one lock, so requests never interleave.
    The loop's write blocks the loop while the pipe is full: the child's reader only hands
    each call to its threads, so the pipe fills only when the child stops reading while
    alive (stopped by a signal, frozen, swapping hard), and then the worker's connections
    wait with it, as they would for their marks."""

    def __init__(self, url: str, *, on_gone: Callable[[], None] = _exit_child_gone) -> None:
        self._url = url
        self._on_gone = on_gone
        self._sending = threading.Lock()
        self._waiting: dict[int, Answer] = {}
        self._numbers = itertools.count(1)
        self._closing = False
        self._answered = False  # the child has answered a call: it is up
        self._gone: Exception | None = None
        self.process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        """Start the child (once; the first call does it too). It opens its store while the
        worker goes on."""
        with self._sending:
            if self.process is not None:
                return
            context = multiprocessing.get_context("spawn")
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_child_main, args=(theirs, self._url), name="mailvia-store", daemon=True
            )
            main = sys.modules["__main__"]
            # What the child needs is in this module: without this it would import the
            # command's own __main__ (all of mailvia.app, the web framework too) first.
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                process.start()
            finally:
                sys.modules["__main__"] = main
            theirs.close()  # the child holds the only other end: EOF there when this one closes
            self.process, self._conn = process, mine
            reader = threading.Thread(target=self._read, args=(mine,), name="store-answers")
            reader.daemon = True
            reader.start()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        future: Future[Any] = Future()
        self._send(_answer_to(future), name, args, kwargs)
        return future.result()

    async def call_awaited(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """`call` from the event loop: its answer is set on the loop by the pipe's reader. A
        caller that goes away does not stop the call (the child commits it all the same)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._send(_answer_on(loop, future), name, args, kwargs)
        return await future

    def _send(self, answer: Answer, name: str, args: tuple[Any, ...], kwargs: Any) -> None:
        if self.process is None:
            self.start()
        number = next(self._numbers)
        data = request_bytes((number, name, args, kwargs))
        with self._sending:
            if self._gone is not None:
                raise self._gone
            self._waiting[number] = answer
            try:
                cast(Connection, self._conn).send_bytes(data)
            except OSError as exc:
                self._waiting.pop(number, None)
                raise RuntimeError("the store process is gone") from exc

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                number, ok, value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            self._answered = True
            answer = self._waiting.pop(number, None)
            if answer is None:  # not a call of ours: the pipe is out of step, give up on it
                log.error("the store process answered call %s, which was not made", number)
                break
            answer(ok, value)
        with self._sending:
            self._gone = RuntimeError("the store process is gone")
            waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            answer(False, self._gone)
        if not self._closing:
            self._on_gone()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child once the calls made are answered (up to `timeout`: a record still
        committing is not cut off); it exits at the end of the pipe. One still starting, or
        stuck, is killed (nothing it did can be lost: see the module)."""
        self._closing = True
        if self.process is None or self._conn is None:
            return
        deadline = time.monotonic() + timeout
        while self._waiting and self._gone is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.socket(fileno=os.dup(self._conn.fileno())) as end:
            end.shutdown(socket.SHUT_RDWR)  # the end of the pipe, here and in the child
        self.process.join(timeout if self._answered else 0.5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()


def _answer_to(future: Future[Any]) -> Answer:
    """An answer for a caller waiting in its own thread."""

    def answer(ok: bool, value: Any) -> None:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    return answer


def _answer_on(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Answer:
    """An answer for a caller awaiting on `loop`, set there (from the pipe's reader)."""

    def settle(ok: bool, value: Any) -> None:
        if future.done():  # its caller went away
            return
        if ok:
            future.set_result(value)
            return
        try:
            future.set_exception(value)
        except TypeError:  # asyncio refuses a StopIteration: the caller still gets an error
            future.set_exception(RuntimeError(f"in the store process: {value!r}"))

    def answer(ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
            loop.call_soon_threadsafe(settle, ok, value)

    return answer


class ChildStore:
    """The dispatcher's store with the hot calls (`IN_CHILD`) made in the store process and
    the others on `local` (one transaction each, as DispatchStore and WorkerRegistry say)."""

    def __init__(self, local: SqlStore, child: StoreProcess) -> None:
        self.local = local
        self.child = child

    # In the child: a channel run's claims, records, give-backs and started marks.
    def claim(
        self, *, channel_id: str, now: Instant, limit: int, lease_until: Instant, worker: str
    ) -> list[Claim]:
        return cast(
            list[Claim],
            self.child.call(
                "claim",
                channel_id=channel_id,
                now=now,
                limit=limit,
                lease_until=lease_until,
                worker=worker,
            ),
        )

    def unclaim(self, claims: Sequence[Claim], *, state: State, now: Instant) -> None:
        self.child.call("unclaim", list(claims), state=state, now=now)

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        self.child.call("record_attempts", list(records))

    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        held = self.child.call("mark_started", list(seqs), worker, now, records=list(records))
        return cast(list[bool], held)

    async def mark_started_awaited(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        """`mark_started` from the event loop, without a thread (`StoreProcess.call_awaited`):
        the commit's cycle loses the hops to a thread and back (docs/benchmarks.md)."""
        held = await self.child.call_awaited(
            "mark_started", list(seqs), worker, now, records=list(records)
        )
        return cast(list[bool], held)

    # Here: the looks, the channel's state, the heartbeats.
    def snapshot(self) -> AbstractContextManager[None]:
        return self.local.snapshot()

    def expire_due(self, now: Instant, events_for: str, *, limit: int = 1000) -> list[Event]:
        return self.local.expire_due(now, events_for, limit=limit)

    def channels_due(self, now: Instant) -> list[str]:
        return self.local.channels_due(now)

    def next_due_at(self) -> Instant | None:
        return self.local.next_due_at()

    def get_channel(self, channel_id: str) -> Channel:
        return self.local.get_channel(channel_id)

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger:
        return self.local.budget_ledger(channel_id, budgets)

    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None:
        return self.local.disconnect_channel(seen, reason, now, refusal=refusal)

    def set_channel_throttle(self, channel_id: str, until: Instant | None, level: int) -> None:
        self.local.set_channel_throttle(channel_id, until, level)

    def hold_channel(self, channel_id: str, now: Instant) -> int:
        return self.local.hold_channel(channel_id, now)

    def release_if_active(self, seen: Channel, now: Instant) -> int | None:
        return self.local.release_if_active(seen, now)

    def add_events(self, events: Sequence[Event]) -> None:
        self.local.add_events(events)

    def start_worker(self, worker: str, now: Instant, *, host: str, pid: int) -> int:
        self.child.start()  # the dispatcher's first call: the child opens its store meanwhile
        return self.local.start_worker(worker, now, host=host, pid=pid)

    def beat(
        self,
        worker: str,
        now: Instant,
        *,
        lease_until: Instant,
        seqs: Sequence[int],
        host: str,
        pid: int,
    ) -> int:
        return self.local.beat(worker, now, lease_until=lease_until, seqs=seqs, host=host, pid=pid)

    def stop_worker(self, worker: str) -> None:
        self.local.stop_worker(worker)


def _claim_without_content(claim: Claim) -> tuple[Any, ...]:
    """How a claim is pickled in a request to the child: as pickle's default for it (the
    class, then its fields), with `content` empty. Giving back and recording never read a
    message's bytes, and they would cross the pipe again (a 30 MB message, twice more).
    Done in the pickling, not by copying each claim and record first (`dataclasses.replace`
    twice a record, ~10 us, on the event loop for every message: docs/benchmarks.md)."""
    state = claim.__dict__.copy()
    state["content"] = b""
    return (copyreg.__newobj__, (Claim,), state)  # type: ignore[attr-defined]


_REQUESTS = copyreg.dispatch_table.copy()
_REQUESTS[Claim] = _claim_without_content


def request_bytes(request: tuple[int, str, tuple[Any, ...], dict[str, Any]]) -> bytes:
    """A call to the child, pickled: every claim in it (given back, or in a record) without
    its message's bytes; the caller's objects are untouched."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _REQUESTS
    pickler.dump(request)
    return buffer.getvalue()
