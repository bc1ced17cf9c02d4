#!/usr/bin/env python3
"""What a message's life writes: the store's own transactions on the shared 6 KiB message,
without SMTP or a dispatcher. N messages are submitted (`add_messages`, batches of 500), then
claimed 200 at a time, marked started 20 at a time and settled (delivered) 100 at a time, as
one worker does. Per kind of transaction: its wall time, the CPU time of the thread that ran
it (SQLite's work included, PostgreSQL's not), and what it wrote to the log (on SQLite the
WAL's size after it, the WAL emptied by a checkpoint before it; on PostgreSQL the WAL
position's advance, which counts other sessions' writes on the server too).

    .venv/bin/python bench/writes.py --n 2000 --db sqlite,postgresql

Against a snapshot: `PYTHONPATH=<snap>/src .venv/bin/python bench/writes.py ...`."""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DEFAULT_PG_URL, Postgres, load_message

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.delivery import RecipientSettlement
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Outcome, Reply
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.ports import AttemptRecord, NewMessage
from mailvia.store import migrate, open_store

OK = Reply(250, "2.0.0", "ok")
T0 = time.time()


class Log:
    """Bytes written to the database's log by the transaction in the block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.engine = None if self.sqlite else sa.create_engine(url, isolation_level="AUTOCOMMIT")

    @contextmanager
    def measure(self, into: list[tuple[float, float, int]]) -> Iterator[None]:
        before = self._empty()
        started, cpu = time.perf_counter(), time.thread_time()
        yield
        spent = time.thread_time() - cpu
        into.append((time.perf_counter() - started, spent, self._written(before)))

    def _empty(self) -> int:
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return 0
        assert self.engine is not None
        with self.engine.connect() as conn:
            return int(
                conn.exec_driver_sql("SELECT pg_current_wal_insert_lsn() - '0/0'").scalar_one()
            )

    def _written(self, before: int) -> int:
        if self.sqlite:
            return Path(self.url.removeprefix("sqlite:///") + "-wal").stat().st_size
        return self._empty() - before


def world(url: str) -> Any:
    migrate(url)
    store = open_store(url)
    store.create_organization("org_1", "acme", T0)
    store.create_team("team_1", "org_1", "sales", T0)
    user = User("usr_1", "org_1", "team_1", "a@acme.test", Role.MEMBER)
    store.create_user(user, password_hash="h", now=T0)
    relay = Channel(
        id="ch_a",
        organization_id="org_1",
        name="relay",
        kind=Kind.SMTP,
        host="127.0.0.1",
        port=25,
        security=Security.NONE,
        auth=Auth.NONE,
        scope=Scope.DOMAIN,
        owner=Owner(team_id="team_1"),
        domains=("acme.test",),
    )
    store.add_channel(relay, None, T0)
    return store


def life(url: str, n: int, content: bytes) -> dict[str, list[tuple[float, float, int]]]:
    """One message's life for n messages; the measurements per kind of transaction."""
    store, log = world(url), Log(url)
    seen: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    try:
        for start in range(0, n, 500):
            batch = [
                NewMessage(
                    id=f"msg_{i}",
                    organization_id="org_1",
                    user_id="usr_1",
                    channel_id="ch_a",
                    envelope=Envelope("a@acme.test", ("bob@example.test",)),
                    content=content,
                    state=State.QUEUED,
                    created_at=T0,
                    expires_at=T0 + 86400,
                )
                for i in range(start, min(n, start + 500))
            ]
            with log.measure(seen["submit 500"]):
                store.add_messages(batch)
        while True:
            with log.measure(seen["claim 200"]):
                claims = store.claim(
                    channel_id="ch_a", now=T0 + 1, limit=200, lease_until=T0 + 600, worker="w1"
                )
            if not claims:
                break
            for part in range(0, len(claims), 20):
                with log.measure(seen["start 20"]):
                    store.mark_started([c.seq for c in claims[part : part + 20]], "w1", T0 + 1)
            for part in range(0, len(claims), 100):
                records = [settled(c) for c in claims[part : part + 100]]
                with log.measure(seen["settle 100"]):
                    store.record_attempts(records)
        seen["claim 200"].pop()  # the last claim, empty: not one of the 200s
        return seen
    finally:
        store.close()


def settled(claim: Any) -> AttemptRecord:
    return AttemptRecord(
        claim=claim,
        worker="w1",
        at=T0 + 2,
        stage="data-end",
        recipients=tuple(
            RecipientSettlement(a, Outcome.DELIVERED, OK, State.DELIVERED) for a in claim.pending
        ),
        message_state=State.DELIVERED,
        next_attempt_at=None,
        failures=0,
        possible_duplicate=False,
    )


@contextmanager
def database(db: str, pg_server: str) -> Iterator[str]:
    if db == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/writes.db"
        return
    server = Postgres(pg_server)
    try:
        yield server.create()[1]
    finally:
        server.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per run (2000)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--runs", type=int, default=1, help="runs per database (1)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    content, _ = load_message(Path(tempfile.mkdtemp()))
    for db in args.db.split(","):
        seen: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        for _ in range(args.runs):
            with database(db, args.pg_url) as url:
                for kind, values in life(url, args.n, content).items():
                    seen[kind].extend(values)
        print(f"{db}: {args.n} messages of {len(content)} bytes, {args.runs} run(s)")
        for kind, values in seen.items():
            each = int(kind.split()[-1])
            ms: Callable[[float], str] = lambda q: f"{q * 1000:.1f}"  # noqa: E731
            times = sorted(t for t, _, _ in values)
            cpu = statistics.median(c for _, c, _ in values)
            print(
                f"  {kind:11s} x{len(values):4d}: wall p50 {ms(statistics.median(times))} ms,"
                f" max {ms(times[-1])} ms; CPU p50 {ms(cpu)} ms;"
                f" log {statistics.median(b for _, _, b in values) / each / 1024:.1f} KiB/message"
            )


if __name__ == "__main__":
    main()
