"""The dispatcher's own CPU per message, without SMTP: N queued messages (one recipient each)
delivered by `Dispatcher.run_once` through a transport that accepts at once, on a fresh
SQLite file or PostgreSQL scratch database. Prints the process CPU per message and, per
store call (`claim`, `record_attempts`, `mark_started`), its calls, CPU (of the thread that
ran it) and wall time per message, and the event loop thread's own CPU per message. What it
leaves out is the SMTP work `bench/deliver.py` measures; what it keeps is what a worker adds
on top of a bare client loop.

    .venv/bin/python bench/dispatch.py --n 3000 --db sqlite,postgresql --runs 3

Run it against a snapshot with `PYTHONPATH=<snap>/src` to compare commits (the world it
builds comes from this checkout's tests/support)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mailvia.domain.channel import Auth, Channel, Security
from mailvia.domain.clock import SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope
from mailvia.domain.replies import Reply, Stage
from support.world import World

OK = Reply(250, "2.0.0", "ok")
PG_SERVER = os.environ.get(
    "MAILVIA_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CALLS = ("claim", "record_attempts", "mark_started")


class Instant:
    """A transport that accepts every message at once."""

    async def send(
        self, channel: Channel, credentials: object, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))

    async def forget(self, channel_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _timed(store: Any, name: str, totals: dict[str, list[float]]) -> None:
    call: Callable[..., Any] = getattr(store, name)

    def timed(*args: Any, **kw: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return call(*args, **kw)
        finally:
            totals[name][0] += time.thread_time() - cpu
            totals[name][1] += time.perf_counter() - wall
            totals[name][2] += 1

    setattr(store, name, timed)


async def _run(db: str, n: int) -> dict[str, float]:
    server = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    name, url = f"mailvia_bench_{uuid.uuid4().hex[:8]}", None
    if db == "postgresql":
        with server.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    world = World(Path(tempfile.mkdtemp()) / "data", db_url=url)
    try:
        world.channel(9, security=Security.NONE, auth=Auth.NONE, max_connections=20)
        for start in range(0, n, 1000):
            world.send(count=min(1000, n - start))
        dispatcher = world.services.dispatcher
        dispatcher.transport = Instant()  # type: ignore[assignment]
        totals = {call: [0.0, 0.0, 0.0] for call in CALLS}
        for call in CALLS:
            _timed(world.store, call, totals)
        cpu, wall, loop = time.process_time(), time.perf_counter(), time.thread_time()
        sent = await dispatcher.run_once(SteppingClock(time.time()))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        loop = time.thread_time() - loop
        assert sent == n, sent
        result = {"cpu_ms": cpu / n * 1e3, "wall_s": wall, "loop_cpu_ms": loop / n * 1e3}
        for call, (c, w, calls) in totals.items():
            result[f"{call}_cpu_ms"] = c / n * 1e3
            result[f"{call}_wall_ms"] = w / n * 1e3
            result[f"{call}_calls"] = calls
        return result
    finally:
        await world.close()
        if url is not None:
            with server.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        server.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="messages per run (3000)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--runs", type=int, default=3, help="runs per database (3)")
    args = parser.parse_args()
    for db in args.db.split(","):
        runs = [asyncio.run(_run(db, args.n)) for _ in range(args.runs)]

        def med(key: str, runs: list[dict[str, float]] = runs) -> str:
            values = [run[key] for run in runs]
            return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

        print(f"{db}, {args.n} messages, median (min-max) of {args.runs} runs:")
        print(f"  dispatcher CPU per message: {med('cpu_ms')} ms; wall {med('wall_s')} s")
        print(f"  event loop thread's CPU per message: {med('loop_cpu_ms')} ms")
        for call in CALLS:
            print(
                f"  {call}: {runs[0][f'{call}_calls']:.0f} calls, CPU {med(f'{call}_cpu_ms')}"
                f" ms/msg, wall {med(f'{call}_wall_ms')} ms/msg"
            )


if __name__ == "__main__":
    main()
