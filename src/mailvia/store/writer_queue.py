"""The order in which writers to one SQLite file take its write lock: the processes' writers
queue on an exclusive `flock` of `<database>.lock`, an intake's commit (a message being
accepted, its caller waiting for the answer) goes before the delivery's bookkeeping, and
under a stream of intake commits the two take turns.

Side effects: the lock file's locks (a `flock` of the whole file; shared locks on its bytes
1 and 2 while an intake, or a writer owed its turn, waits) and a counter in its bytes 8-15;
nothing in the database.
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

# How long at most a writer lets the other kind go first (then it goes anyway): a stuck
# process's sign delays the others by this much, it never stops them.
GIVE_WAY_SECONDS = 0.05
_BUSY = "the database is busy: another writer has held it too long"
# Open file description locks (Linux): per open file, like flock, and independent of it.
_OFD = hasattr(fcntl, "F_OFD_SETLK")
_INTAKE, _OWED = 1, 2  # the bytes signed: an intake waits or writes; a writer is owed a turn


def _byte_lock(fd: int, byte: int, kind: int, *, wait: bool = False) -> None:
    """Lock (F_RDLCK, F_WRLCK) or unlock (F_UNLCK) one byte of the file. Raises OSError when
    another open file holds a conflicting lock (unless `wait`)."""
    command = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
    # struct flock: type, whence, start, length, pid (0 for these locks); room to spare
    fcntl.fcntl(fd, command, struct.pack("@hhqqi", kind, os.SEEK_SET, byte, 1, 0) + bytes(16))


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
    independent of the `flock`; Linux only: elsewhere there are no signs and the writers
    simply queue). An ordinary writer (a worker's claim, started mark or settlement) does not
    start while one is signed: an intake waits for the transaction under way, not for the
    ones queued behind it. Taking turns: once an intake has had its turn meanwhile (intakes
    count their turns in the file), the ordinary writer signs byte 2, owed the next turn, and
    intakes let it go first; so a stream of intake commits does not hold delivery off. Each
    gives way for at most GIVE_WAY_SECONDS."""

    def __init__(
        self,
        db_file: Path,
        *,
        timeout: float = 5.0,
        give_way: float = GIVE_WAY_SECONDS,
    ) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._fd: int | None = os.open(f"{db_file}.lock", flags, 0o600)
        # Signs are held on open files of their own: a probe on `_fd` then sees this
        # process's signs too.
        self._sign_fd: int | None = os.open(f"{db_file}.lock", flags) if _OFD else None
        self._owed_fd: int | None = os.open(f"{db_file}.lock", flags) if _OFD else None
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
        way = None if intake else self._way()  # an ordinary writer's give-way
        if intake:
            self._sign(+1)
        try:
            self._take_thread(deadline, way)
            try:
                fd = self._fd
                if fd is None:  # closed (the store is shutting down): SQLite's lock alone
                    yield
                    return
                self._lock(fd, deadline, way)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                self._threads.release()
        finally:
            if intake:
                self._sign(-1)

    def _take_thread(self, deadline: float, way: tuple[float, int] | None) -> None:
        """This process's thread lock; an ordinary writer first lets signed intakes go."""
        while True:
            if way is not None:
                self._wait_unsigned(way)
            if not self._threads.acquire(timeout=max(deadline - time.monotonic(), 0)):
                raise StoreUnavailable(_BUSY)
            # An intake of this process that came meanwhile waits for this thread lock: let
            # it have it (it would otherwise wait for this writer's whole transaction).
            if way is None or not self._intakes or not self._giving(way):
                return
            self._threads.release()

    def _way(self) -> tuple[float, int]:
        """An ordinary writer's give-way: until when at most, and the intakes' turns so far."""
        return time.monotonic() + self._give_way, self._passes()

    def _giving(self, way: tuple[float, int]) -> bool:
        """Whether an ordinary writer still gives way: before its bound, while an intake is
        signed, and only until one intake has had its turn (then the writer goes before the
        next: under a stream of intake commits, they and the others take turns)."""
        until, passes = way
        if time.monotonic() >= until or self._passes() != passes:
            return False
        return self.intake_waiting()

    def _wait_unsigned(self, way: tuple[float, int]) -> None:
        pause = 0.0002
        while self._giving(way):
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def _lock(self, fd: int, deadline: float, way: tuple[float, int] | None) -> None:
        intake = way is None
        pause, longest = (0.0001, 0.0005) if intake else (0.0002, 0.002)
        until = time.monotonic() + self._give_way
        owed = False
        try:
            while True:
                if way is not None and not owed and self._passes() != way[1]:
                    owed = self._sign_owed(True)  # an intake went meanwhile: next is ours
                late = time.monotonic() >= deadline  # then one last try, giving way or not
                if late or self._may_try(way, until):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        pass
                if late:
                    raise StoreUnavailable(_BUSY)
                time.sleep(pause)
                pause = min(pause * 2, longest)
        finally:
            if owed:
                self._sign_owed(False)
        if intake:
            self._passed(fd)

    def _may_try(self, way: tuple[float, int] | None, until: float) -> bool:
        """Whether to try the `flock` now. An intake lets a writer owed its turn go first; an
        ordinary writer holding the thread lock still gives way to another process's intake
        (not to one of this process's: that one waits for this thread lock)."""
        if way is None:
            return time.monotonic() >= until or not self._signed(_OWED)
        return bool(self._intakes) or not self._giving(way)

    def _passes(self) -> int:
        """How many intake turns the lock file has counted (bytes 8-15: a counter that intakes
        raise while they hold the `flock`, so the other writers can tell that one went)."""
        with self._signs:  # not while close() closes it
            fd = self._fd
            try:
                return 0 if fd is None else int.from_bytes(os.pread(fd, 8, 8) or b"\0", "big")
            except OSError:
                return 0

    def _passed(self, fd: int) -> None:
        """Count an intake's turn (this one holds the `flock`). Only a hint for the others: an
        error here must not keep the turn from being given back."""
        try:
            count = int.from_bytes(os.pread(fd, 8, 8) or b"\0", "big")
            os.pwrite(fd, ((count + 1) % 2**63).to_bytes(8, "big"), 8)
        except OSError:
            pass

    def intake_waiting(self) -> bool:
        """Whether an intake of any process waits for its turn or holds it."""
        return bool(self._intakes) or self._signed(_INTAKE)

    def _signed(self, byte: int) -> bool:
        """Whether any open file (this process's too) holds a sign on this byte."""
        with self._signs:
            fd = self._fd
            if fd is None or not _OFD:
                return False
            try:
                _byte_lock(fd, byte, fcntl.F_WRLCK)
            except OSError:
                return True  # signed (or another writer probes right now)
            _byte_lock(fd, byte, fcntl.F_UNLCK)
            return False

    def _sign(self, step: int) -> None:
        with self._signs:
            self._intakes += step
            fd = self._sign_fd
            if fd is None:
                return
            if step > 0 and self._intakes == 1:
                _byte_lock(fd, _INTAKE, fcntl.F_RDLCK, wait=True)  # waits only for a probe
            elif step < 0 and self._intakes == 0:
                _byte_lock(fd, _INTAKE, fcntl.F_UNLCK)

    def _sign_owed(self, on: bool) -> bool:
        """Sign (or take back) that this process's writer holding the thread lock is owed the
        next turn. Returns whether it is signed."""
        with self._signs:
            fd = self._owed_fd
            if fd is None:
                return False
            _byte_lock(fd, _OWED, fcntl.F_RDLCK if on else fcntl.F_UNLCK, wait=on)
            return on

    def close(self) -> None:
        """Close the lock file once no writer of this process holds it."""
        with self._threads, self._signs:
            for fd in (self._fd, self._sign_fd, self._owed_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._sign_fd = self._owed_fd = None
