"""The order in which writers to one SQLite file take its write lock: the processes' writers
queue on an exclusive `flock` of `<database>.lock`, and an intake's commit (a message being
accepted, its caller waiting for the answer) goes before the delivery's bookkeeping.

Side effects: the lock file's locks (a `flock` of the whole file, and a shared record lock
on its byte 1 while an intake waits or writes); nothing in the database.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailvia.domain.errors import StoreUnavailable

# An ordinary writer lets waiting intake commits go first for at most this long (then it goes
# anyway), so that a stream of intake commits slows delivery down but never stops it.
GIVE_WAY_SECONDS = 0.05
_BUSY = "the database is busy: another writer has held it too long"
# Open file description locks (Linux): per open file, like flock, and independent of it.
_OFD = hasattr(fcntl, "F_OFD_SETLK")


def _byte_lock(fd: int, kind: int, *, wait: bool = False) -> None:
    """Lock (F_RDLCK, F_WRLCK) or unlock (F_UNLCK) byte 1 of the file. Raises OSError when
    another open file holds a conflicting lock (unless `wait`)."""
    command = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
    # struct flock: type, whence, start, length, pid (0 for these locks); room to spare
    fcntl.fcntl(fd, command, struct.pack("@hhqqi", kind, os.SEEK_SET, 1, 1, 0) + bytes(16))


class WriterQueue:
    """Writers to one SQLite file wait their turn here rather than in SQLite's busy handler.

    SQLite's handler sleeps (1 ms growing to 100 ms) and retries, so with several writers, e.g.
    `serve` taking mail in while a `worker` claims it, most time goes to sleeping and the order
    is unfair. Here a thread lock queues the writers of this process, and an exclusive `flock`
    on `<database>.lock` the processes (tried every 0.2 ms growing to 2 ms; an intake's every
    0.1 ms growing to 0.5 ms). Like SQLite's own wait it gives up after `timeout`
    (StoreUnavailable), so a stalled process cannot freeze the others. Correctness does not
    depend on it: BEGIN IMMEDIATE still takes SQLite's lock.

    Intake first: an intake's turn (`turn(intake=True)`) is signed, while it waits and
    writes, by a shared lock on byte 1 of the lock file (an open file description lock,
    independent of the `flock`; Linux only: elsewhere there is no sign and the writers simply
    queue). An ordinary writer (a worker's claim, started mark or settlement) does not start
    while one is signed, for up to GIVE_WAY_SECONDS: so an intake waits for the transaction
    under way, not for the ones queued behind it."""

    def __init__(
        self,
        db_file: Path,
        *,
        timeout: float = 5.0,
        give_way: float = GIVE_WAY_SECONDS,
    ) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._fd: int | None = os.open(f"{db_file}.lock", flags, 0o600)
        # The intakes' sign (see above) is held on an open file of its own: a probe on `_fd`
        # then sees this process's intakes too.
        self._sign_fd: int | None = os.open(f"{db_file}.lock", flags) if _OFD else None
        self._threads = threading.RLock()
        self._timeout = timeout
        self._give_way = give_way
        self._intakes = 0  # this process's intake writers waiting or writing
        self._signs = threading.Lock()  # guards _intakes and the record lock

    @contextmanager
    def turn(self, *, intake: bool = False) -> Iterator[None]:
        """Hold the write turn inside the block. Raises StoreUnavailable when it cannot be had
        within the timeout."""
        deadline = time.monotonic() + self._timeout
        if intake:
            self._sign(+1)
        try:
            self._take_thread(deadline, intake)
            try:
                fd = self._fd
                if fd is None:  # closed (the store is shutting down): SQLite's lock alone
                    yield
                    return
                self._lock(fd, deadline, intake)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                self._threads.release()
        finally:
            if intake:
                self._sign(-1)

    def _take_thread(self, deadline: float, intake: bool) -> None:
        """This process's thread lock; an ordinary writer first lets signed intakes go."""
        until = time.monotonic() + self._give_way
        while True:
            if not intake:
                self._wait_unsigned(until)
            if not self._threads.acquire(timeout=max(deadline - time.monotonic(), 0)):
                raise StoreUnavailable(_BUSY)
            # An intake of this process that came meanwhile waits for this thread lock: let
            # it have it (it would otherwise wait for this writer's whole transaction).
            if intake or not self._intakes or time.monotonic() >= until:
                return
            self._threads.release()

    def _wait_unsigned(self, until: float) -> None:
        pause = 0.0002
        while time.monotonic() < until and self.intake_waiting():
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def _lock(self, fd: int, deadline: float, intake: bool) -> None:
        pause, longest = (0.0001, 0.0005) if intake else (0.0002, 0.002)
        until = time.monotonic() + self._give_way
        while True:
            # An ordinary writer holding the thread lock still gives way to another process's
            # intake (not to one of this process's: that one waits for this thread lock).
            yielding = not intake and not self._intakes and time.monotonic() < until
            if not (yielding and self.intake_waiting()):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
            if time.monotonic() >= deadline:
                raise StoreUnavailable(_BUSY)
            time.sleep(pause)
            pause = min(pause * 2, longest)

    def intake_waiting(self) -> bool:
        """Whether an intake of any process waits for its turn or holds it."""
        if self._intakes:
            return True
        with self._signs:
            fd = self._fd
            if fd is None or self._sign_fd is None:
                return False
            try:
                _byte_lock(fd, fcntl.F_WRLCK)
            except OSError:
                return True  # an intake holds its sign (or another writer probes right now)
            _byte_lock(fd, fcntl.F_UNLCK)
            return False

    def _sign(self, step: int) -> None:
        with self._signs:
            self._intakes += step
            fd = self._sign_fd
            if fd is None:
                return
            if step > 0 and self._intakes == 1:
                _byte_lock(fd, fcntl.F_RDLCK, wait=True)  # waits only for a probe
            elif step < 0 and self._intakes == 0:
                _byte_lock(fd, fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the lock file once no writer of this process holds it."""
        with self._threads, self._signs:
            for fd in (self._fd, self._sign_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._sign_fd = None
