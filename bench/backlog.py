#!/usr/bin/env python3
"""A large backlog: how soon a restarted `mailvia worker` delivers with N messages queued,
and whether its memory grows with N.

For each backend (SQLite, PostgreSQL) and each size (a small queue of --small messages, then
--n, 1,000,000 by default):

1. set-up, not timed: a fresh data folder (and scratch PostgreSQL database), an organization
   with one channel to Postfix's `smtp-sink` on 127.0.0.1; one message submitted through
   `Submitter.submit`, then copied in SQL to N queued messages (with their recipients; a
   million submits would take most of an hour and measure intake, not this);
2. the plans of the dispatcher's queries (channels_due, next_due_at, claim, expire_due,
   queue_counts) with EXPLAIN, printed with --explain;
3. timed: a `mailvia worker` starts; the time from its start until the sink has the first
   message, and until it has --deliver messages; its peak RSS (VmHWM) over that time.

One JSON line per measurement goes to the results file (bench/benchlib.py's format). Every
server binds 127.0.0.1; every process is stopped by its PID; scratch folders and databases are
removed on exit.

usage: .venv/bin/python bench/backlog.py [--n 1000000] [--small 1000] [--db sqlite|postgresql|both]
       [--deliver 2000] [--explain]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_PG_URL,
    PROCS,
    SMTP_SINK,
    STOP_TIMEOUT,
    Postgres,
    Recorder,
    Sink,
    cpu_snap,
    exit_on_signal,
    load_message,
    results_file,
)

FROM_ADDRESS = "notifications@example.com"
READY_TIMEOUT = 600.0


@dataclass
class Backlog:
    data_dir: Path
    db_url: str
    channel_id: str
    db_name: str | None
    fill_secs: float
    n: int


def prepare(
    args: argparse.Namespace,
    backend: str,
    scratch: Path,
    port: int,
    msg: bytes,
    n: int,
    pg: Postgres | None,
) -> Backlog:
    import asyncio

    from benchlib import build

    from mailvia.domain.channel import Auth, Security
    from mailvia.domain.message import Envelope
    from mailvia.outbox.channels import ChannelSpec
    from mailvia.outbox.compose import inspect_raw
    from mailvia.outbox.submit import Submission
    from mailvia.settings import Settings

    data_dir = scratch / "data"
    db_name = db_url = None
    if backend == "postgresql":
        assert pg is not None
        db_name, db_url = pg.create()
    settings = Settings.load(
        {}, {"data_dir": data_dir, "db_url": db_url, "allow_private_hosts": "127.0.0.0/8"}
    )
    services = build(settings, create_key=True)
    now = time.time()
    tenancy = services.tenancy
    tenancy.create_org("bench", now)
    tenancy.create_team("senders", "bench", now)
    tenancy.add_domain("bench", "example.com", now)
    user, _ = tenancy.create_user(
        FROM_ADDRESS, org_name="bench", team_name="senders", admin=True, now=now
    )
    spec = ChannelSpec(
        name="smtp-sink",
        host="127.0.0.1",
        port=port,
        security=Security.NONE,
        auth=Auth.NONE,
        address=FROM_ADDRESS,
        max_connections=args.connections,
    )
    channel, _ = services.channels.add(user, spec, now)
    services.store.set_channel_throttle(channel.id, now + 86400.0, 0)  # shut while filling
    composed = inspect_raw(
        msg,
        envelope=Envelope(FROM_ADDRESS, ("rcpt@example.net",)),
        max_size=services.max_message_size,
    )
    [receipt] = services.submitter.submit(user, [Submission(composed)], now=now)
    asyncio.run(services.aclose())
    started = time.perf_counter()
    copy_message(settings.database_url, receipt.id, n - 1)
    services_url = settings.database_url
    fill_secs = time.perf_counter() - started
    reopen(services_url, channel.id)
    return Backlog(data_dir, services_url, channel.id, db_name, fill_secs, n)


def copy_message(url: str, message_id: str, copies: int) -> None:
    """`copies` more queued messages like `message_id` (new ids, the same bytes), and their
    recipients, in SQL."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    cols = (
        "organization_id, user_id, channel_id, mail_from, size, state, created_at, "
        "expires_at, next_attempt_at, failures, possible_duplicate"
    )
    try:
        with engine.begin() as conn:
            # Since 0013 a message's bytes live in message_contents (main's older snapshots
            # kept them in messages.content): copy them wherever the schema keeps them.
            apart = sa.inspect(conn).has_table("message_contents")
            if not apart:
                cols += ", content"
            seed = conn.execute(
                sa.text("SELECT seq FROM messages WHERE id = :id"), {"id": message_id}
            ).scalar_one()
            if engine.dialect.name == "postgresql":
                series = f"generate_series(1, {copies}) AS g(i)"
                conn.exec_driver_sql(
                    f"INSERT INTO messages (id, {cols}) SELECT 'msg_bk' || i, {cols} "
                    f"FROM messages, {series} WHERE seq = {seed}"
                )
            else:
                conn.exec_driver_sql(
                    f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
                    f"WHERE i < {copies}) INSERT INTO messages (id, {cols}) "
                    f"SELECT 'msg_bk' || i, {cols} FROM messages, g WHERE seq = {seed}"
                )
            conn.exec_driver_sql(
                "INSERT INTO recipients (message_seq, position, address, state, updated_at) "
                f"SELECT m.seq, 0, r.address, 'queued', r.updated_at FROM messages m, "
                f"recipients r WHERE m.seq > {seed} AND r.message_seq = {seed}"
            )
            if apart:
                conn.exec_driver_sql(
                    "INSERT INTO message_contents (message_seq, content) SELECT m.seq, "
                    f"c.content FROM messages m, message_contents c WHERE m.seq > {seed} "
                    f"AND c.message_seq = {seed}"
                )
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def reopen(url: str, channel_id: str) -> None:
    """Lift the throttle (the worker starts on a full queue)."""
    from mailvia.store import open_store

    store = open_store(url)
    store.set_channel_throttle(channel_id, None, 0)
    store.close()


def explain(url: str) -> str:
    """EXPLAIN (QUERY PLAN) of every statement the dispatcher's queries run, one pass each."""
    from sqlalchemy import event

    from mailvia.store import open_store

    store = open_store(url)
    engine = store._db.engine  # a benchmark may look inside
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not many:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    now = time.time()
    lines: list[str] = []

    def claim() -> None:
        from mailvia.domain.message import State

        [channel_id] = store.channels_due(now)
        claims = store.claim(
            channel_id=channel_id, now=now, limit=200, lease_until=now + 30, worker="bench"
        )
        store.unclaim(claims, state=State.QUEUED, now=now)

    calls = {
        "channels_due": lambda: store.channels_due(now),
        "next_due_at": store.next_due_at,
        "claim (and give back)": claim,
        "expire_due": lambda: store.expire_due(now, "bench"),
        "queue_counts": store.queue_counts,
    }
    for name, call in calls.items():
        seen.clear()
        started = time.perf_counter()
        call()
        lines.append(f"{name}: {1000 * (time.perf_counter() - started):.1f} ms")
        event.remove(engine, "before_cursor_execute", grab)
        with engine.connect() as conn:
            for statement, params in seen:
                prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
                rows = conn.exec_driver_sql(prefix + statement, params).all()
                plan = [str(row[-1]).strip() for row in rows]
                lines.append("  " + " ".join(statement.split())[:100])
                lines += [f"    {step}" for step in plan if step]
        event.listen(engine, "before_cursor_execute", grab)
    store.close()
    return "\n".join(lines)


def peak_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, or zeros when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {
        line.split(":")[0]: int(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def time_worker(
    args: argparse.Namespace, backlog: Backlog, sink: Sink, scratch: Path
) -> dict[str, Any]:
    script = Path(sys.executable).parent / "mailvia"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mailvia"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    cmd = [
        *command,
        "worker",
        "--data-dir",
        str(backlog.data_dir),
        "--db-url",
        backlog.db_url,
        "--allow-private-hosts",
        "127.0.0.0/8",
        "--worker-id",
        "bench-backlog",
    ]
    started = time.monotonic()
    proc = PROCS.start(cmd, scratch / "worker.log", env)
    first = peak = 0.0
    hwm = 0
    try:
        goal = min(args.deliver, backlog.n)
        while sink.count() < goal:
            if proc.poll() is not None or time.monotonic() - started > READY_TIMEOUT:
                tail = (scratch / "worker.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"worker did not deliver {goal}:\n{tail}")
            if not first and sink.count() >= 1:
                first = time.monotonic() - started
            hwm = max(hwm, peak_rss_kib(proc.pid)[1])
            time.sleep(0.02)
        peak = time.monotonic() - started
        hwm = max(hwm, peak_rss_kib(proc.pid)[1])
    finally:
        PROCS.stop(proc, timeout=STOP_TIMEOUT)
    return {
        "first_s": round(first, 3),
        "deliver_s": round(peak, 3),
        "peak_rss_mib": round(hwm / 1024, 1),
    }


def one(
    args: argparse.Namespace, backend: str, n: int, msg: bytes, rec: Recorder, pg: Postgres | None
) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix=f"backlog-{backend}-{n}-", dir=args.work_dir))
    sink = Sink(scratch, "backlog", READY_TIMEOUT * 2)
    backlog: Backlog | None = None
    try:
        backlog = prepare(args, backend, scratch, sink.port, msg, n, pg)
        print(f"  {backend}: {n:,} queued (copied in {backlog.fill_secs:.1f} s)", flush=True)
        if args.explain:
            print(explain(backlog.db_url), flush=True)
        c0 = cpu_snap()
        result = time_worker(args, backlog, sink, scratch)
        rec.record(
            c0,
            cpu_snap(),
            "mailvia_backlog_first_delivery",
            f"{backend}, {n:,} queued",
            1,
            1,
            result["first_s"],
            "first/s",
            **result,
        )
        print(
            f"    first delivery {result['first_s']} s after the worker started; "
            f"{args.deliver:,} after {result['deliver_s']} s; peak RSS "
            f"{result['peak_rss_mib']} MiB",
            flush=True,
        )
        return result
    finally:
        sink.stop()
        if backlog is not None and backlog.db_name and pg is not None:
            pg.drop(backlog.db_name)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Restart with a large backlog queued.")
    parser.add_argument("--n", type=int, default=1_000_000, help="messages queued (1,000,000)")
    parser.add_argument("--small", type=int, default=1000, help="the small queue to compare")
    parser.add_argument("--deliver", type=int, default=2000, help="deliveries to wait for")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("MAILVIA_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--raw", type=Path, default=results_file())
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--explain", action="store_true", help="print the queries' plans")
    parser.add_argument("--keep", action="store_true", help="keep scratch folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_signal)
    if not Path(SMTP_SINK).exists():
        print(f"smtp-sink not found at {SMTP_SINK} (Debian package postfix)", file=sys.stderr)
        return 2
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    pg = Postgres(args.pg_url) if "postgresql" in backends else None
    if pg is not None and pg.check():
        print(f"PostgreSQL not reachable ({pg.check()}); skipping it", flush=True)
        backends.remove("postgresql")
        pg = None
    rec = Recorder(args.raw)
    top = Path(tempfile.mkdtemp(prefix="backlog-msg-", dir=args.work_dir))
    rows: list[str] = []
    try:
        msg, _source = load_message(top)
        print(
            f"== backlog: n={args.n:,} small={args.small:,} deliver={args.deliver:,} "
            f"backends={','.join(backends)}; mailvia {rec.rev}",
            flush=True,
        )
        for backend in backends:
            for n in (args.small, args.n):
                r = one(args, backend, n, msg, rec, pg)
                rows.append(
                    f"| {backend} | {n:,} | {r['first_s']} | {r['deliver_s']} | "
                    f"{r['peak_rss_mib']} |"
                )
        print(
            "\n| backend | queued | first delivery (s) | "
            f"{args.deliver:,} delivered (s) | worker peak RSS (MiB) |\n|---|---:|---:|---:|---:|"
        )
        print("\n".join(rows))
    except KeyboardInterrupt:
        return 130
    finally:
        PROCS.stop_all()
        if pg is not None:
            pg.drop_all()
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
