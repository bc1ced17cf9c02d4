"""The SQLite writer queue: writers of other processes (here: another open file description
holding the flock) are waited for, not slept on; a writer held too long gives up with
StoreUnavailable instead of freezing the caller; it is skipped where it cannot work."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailvia.domain.errors import StoreUnavailable
from mailvia.store.engine import Database, WriterQueue


def hold_lock(db_file: Path, seconds: float) -> threading.Thread:
    """Another 'process': its own open file description holds the flock for `seconds`."""
    fd = os.open(f"{db_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(seconds)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_write_waits_for_the_other_writer_then_goes(tmp_path: Path) -> None:
    db_file = tmp_path / "mailvia.db"
    db = Database(f"sqlite:///{db_file}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    holder = hold_lock(db_file, 0.3)
    started = time.monotonic()
    with db.write() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    waited = time.monotonic() - started
    holder.join()
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    assert 0.25 <= waited < 0.3 + 0.5, waited
    db.dispose()


def test_a_writer_held_too_long_is_store_unavailable(tmp_path: Path) -> None:
    db_file = tmp_path / "mailvia.db"
    queue = WriterQueue(db_file, timeout=0.2)
    holder = hold_lock(db_file, 0.6)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="busy"), queue.turn():
        pass
    assert time.monotonic() - started < 0.5
    holder.join()
    with queue.turn():  # free again
        pass
    queue.close()


def test_no_queue_where_it_cannot_work_and_writes_go_on_after_dispose(tmp_path: Path) -> None:
    memory = Database("sqlite://")
    assert memory._queue is None
    db_file = tmp_path / "mailvia.db"
    db = Database(f"sqlite:///{db_file}")
    assert (tmp_path / "mailvia.db.lock").exists()
    db.dispose()
    with db.write() as conn:  # the lock file is closed: SQLite's own lock still serialises
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    db.dispose()


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def writes_while_one_runs(holder: WriterQueue, waiting: list[tuple[WriterQueue, str]]) -> list[str]:
    """While `holder` has a turn, an intake of the first queue comes, then the others'
    ordinary writers; the order in which they wrote once the holder let go."""
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.turn():
            holding.set()
            release.wait(5)

    def write(queue: WriterQueue, name: str, intake: bool = False) -> None:
        with queue.turn(intake=intake):
            order.append(name)

    threads = [threading.Thread(target=hold)]
    threads[0].start()
    assert holding.wait(5)
    (intake_queue, intake_name), *others = waiting
    threads.append(threading.Thread(target=write, args=(intake_queue, intake_name, True)))
    threads[-1].start()
    wait_for(holder.intake_waiting)
    for queue, name in others:
        threads.append(threading.Thread(target=write, args=(queue, name)))
        threads[-1].start()
    time.sleep(0.05)  # the other writers are queued too (none can go yet)
    release.set()
    for thread in threads:
        thread.join(10)
    return order


def test_an_intake_goes_before_the_writers_queued_behind_the_running_one(
    tmp_path: Path,
) -> None:
    """serve's commit of a message waits for the worker's transaction under way, not for the
    worker's next ones too (nor another worker's): each queue here stands for a process (its
    own open files), each thread for one of its writers."""
    db_file = tmp_path / "mailvia.db"
    worker, other_worker, serve = (WriterQueue(db_file, give_way=2.0) for _ in range(3))
    for _ in range(5):
        order = writes_while_one_runs(
            worker, [(serve, "intake"), (worker, "worker"), (other_worker, "other worker")]
        )
        assert order[0] == "intake", order
        assert sorted(order[1:]) == ["other worker", "worker"]
        assert not other_worker.intake_waiting()
    for queue in (worker, other_worker, serve):
        queue.close()


def test_a_writer_gives_way_to_a_signed_intake_for_a_bounded_time(tmp_path: Path) -> None:
    """An intake that never comes (its process stuck while signed) delays the other writers
    by the give-way bound, it does not stop them."""
    db_file = tmp_path / "mailvia.db"
    worker = WriterQueue(db_file, give_way=0.2)
    stuck = WriterQueue(db_file)
    stuck._sign(+1)  # signed, and never takes its turn
    assert worker.intake_waiting()
    started = time.monotonic()
    with worker.turn():
        waited = time.monotonic() - started
    assert 0.19 <= waited < 0.2 + 0.5, waited
    stuck._sign(-1)
    assert not worker.intake_waiting()
    started = time.monotonic()
    with worker.turn():  # nobody signed: at once, not after the give-way (0.2 s)
        assert time.monotonic() - started < 0.15
    for queue in (worker, stuck):
        queue.close()


def test_an_intake_of_the_same_process_does_not_wait_for_its_own_give_way(
    tmp_path: Path,
) -> None:
    """One process's ordinary writer and intake (serve delivering inline): the thread lock
    goes to the intake, and the ordinary writer is not held for the give-way bound by the
    intake of its own process that waits behind it."""
    db_file = tmp_path / "mailvia.db"
    queue = WriterQueue(db_file, give_way=2.0)
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.turn():
            holding.set()
            release.wait(5)
            order.append("first")

    def write(name: str, intake: bool) -> None:
        with queue.turn(intake=intake):
            order.append(name)

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(5)
    intake = threading.Thread(target=write, args=("intake", True))
    intake.start()
    wait_for(lambda: queue._intakes == 1)
    ordinary = threading.Thread(target=write, args=("ordinary", False))
    ordinary.start()
    time.sleep(0.05)
    started = time.monotonic()
    release.set()
    for thread in (first, intake, ordinary):
        thread.join(10)
    assert order == ["first", "intake", "ordinary"]
    assert time.monotonic() - started < 1.0
    queue.close()


def test_under_a_stream_of_intakes_the_other_writers_take_turns_with_them(
    tmp_path: Path,
) -> None:
    """Two intake threads of serve keep a sign up without a break (the submission port's
    group commits under load); the worker gives way to one intake turn at a time, not for
    its whole bound each time, so delivery goes on at the intakes' pace."""
    db_file = tmp_path / "mailvia.db"
    serve, worker = WriterQueue(db_file), WriterQueue(db_file, give_way=0.5)
    stop = threading.Event()

    def intakes() -> None:
        while not stop.is_set():
            with serve.turn(intake=True):
                time.sleep(0.005)

    streams = [threading.Thread(target=intakes) for _ in range(2)]
    for stream in streams:
        stream.start()
    wait_for(worker.intake_waiting)
    started = time.monotonic()
    for _ in range(10):
        with worker.turn():
            time.sleep(0.005)
    took = time.monotonic() - started
    stop.set()
    for stream in streams:
        stream.join(10)
    assert took < 2.0, took  # giving way for the whole bound each time: 5 s or more
    serve.close()
    worker.close()


def test_a_free_lock_is_tried_once_more_at_the_deadline_while_giving_way(tmp_path: Path) -> None:
    """An intake that spent most of its time waiting for this process's other writer, then
    lets another process's writer owed its turn go first, past its deadline: the lock is
    free (that writer never comes), so it is taken (one last try), not refused as busy."""
    db_file = tmp_path / "mailvia.db"
    queue = WriterQueue(db_file, timeout=0.2, give_way=0.1)
    stuck = WriterQueue(db_file)
    stuck._sign_owed(True)  # another process's writer, owed the next turn and never coming
    first_in = threading.Event()

    def first() -> None:
        with queue.turn():  # this process's other writer, ahead: 0.15 s of the intake's 0.2
            first_in.set()
            time.sleep(0.15)

    ahead = threading.Thread(target=first)
    ahead.start()
    first_in.wait()
    with queue.turn(intake=True):  # waits for it, then gives way past its deadline
        pass
    ahead.join()
    stuck._sign_owed(False)
    for q in (queue, stuck):
        q.close()
