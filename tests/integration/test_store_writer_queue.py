"""The SQLite writer queue: writers of other processes (here: another open file description
holding the flock) are waited for, not slept on; a writer held too long gives up with
StoreUnavailable instead of freezing the caller; it is skipped where it cannot work."""

from __future__ import annotations

import fcntl
import os
import threading
import time
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
