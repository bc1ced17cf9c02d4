#!/usr/bin/env python3
"""The submission port's logged-in path, the one mail clients take: N messages over S
sessions that log in (STARTTLS, then AUTH PLAIN with an API token, as a mail app does) with
a Python SMTP client (aiosmtplib), into `mailvia serve` delivering to `smtp-sink` (the
outbox, serve and sink of bench/relay.py). `smtp-source` cannot log in, hence this script.

Per run it prints and appends one JSON line: serve's CPU per message while taking the mail
in (until the client had every 250) and until all N were delivered, the rates, the load.

`--plan-groups G`: also drive `Intake.plan` in this process on a fresh outbox, G groups of
`--group-size` logged-in messages (plan only, nothing committed), counting each plan's
statements, and on PostgreSQL its round trips (a statement outside autocommit is in a
transaction: its BEGIN and COMMIT are two more), with the plan's CPU time.

Bounded: N messages, at most --timeout seconds per timed section; every server binds
127.0.0.1 and is stopped by PID; scratch folders and databases are removed.

usage: .venv/bin/python bench/relay_login.py [--n 4000] [--runs 1] [--sessions 20]
       [--db sqlite|postgresql] [--plan-groups 300] [--group-size 10] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_PG_URL,
    ENV_FROM,
    ENV_TO,
    PROCS,
    QUIET,
    Postgres,
    Sink,
    exit_on_signal,
    free_port,
    load_message,
    results_file,
)
from relay import Mailvia, Outbox, measure, prepare, start_mailvia, tear_down


async def _session(port: int, cafile: Path, token: str, msg: bytes, count: int) -> int:
    """One logged-in session sending `count` messages; returns how many had 250."""
    import aiosmtplib

    context = ssl.create_default_context(cafile=str(cafile))
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=True, tls_context=context, timeout=120
    )
    await client.connect()
    try:
        await client.login(ENV_FROM, token)
        sent = 0
        for _ in range(count):
            refused, _reply = await client.sendmail(ENV_FROM, [ENV_TO], msg)
            sent += not refused
        return sent
    finally:
        await client.quit()


async def _sessions(args: argparse.Namespace, run: Mailvia, outbox: Outbox, msg: bytes) -> str:
    cafile = outbox.data_dir / "tls" / "submission.pem"
    share, extra = divmod(args.n, args.sessions)
    counts = [share + (k < extra) for k in range(args.sessions)]
    jobs = [_session(run.submission_port, cafile, outbox.token, msg, c) for c in counts if c]
    done = await asyncio.wait_for(asyncio.gather(*jobs), args.timeout)
    return "" if sum(done) == args.n else f"only {sum(done)} of {args.n} accepted"


def run_once(args: argparse.Namespace, msg: bytes, pg: Postgres | None, run_no: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"relay-login-{run_no}-", dir=args.work_dir))
    sink = Sink(scratch, "login", args.timeout * 3 + 600)
    outbox: Outbox | None = None
    run: Mailvia | None = None
    try:
        outbox = prepare(args, scratch, sink.port, pg)
        run = start_mailvia(args, outbox, scratch)
        started, box = run, outbox
        accept: dict[str, float] = {}

        def send() -> str:
            t0, cpu0 = time.perf_counter(), started.serve_cpu()
            failed = asyncio.run(_sessions(args, started, box, msg))
            accept["secs"] = time.perf_counter() - t0
            accept["serve_cpu_s"] = started.serve_cpu() - cpu0
            return failed

        m = measure(args, outbox, sink, run, send, f"login-run{run_no}")
        row = {
            "bench": "relay_login",
            "db": args.db,
            "run": run_no,
            "n": args.n,
            "sessions": args.sessions,
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "accepted_per_s": round(args.n / m.accept_secs, 1),
            "delivered_per_s": round(args.n / m.deliver_secs, 1),
            "serve_cpu_ms_per_msg_accept": round(accept["serve_cpu_s"] * 1000 / args.n, 3),
            "serve_cpu_ms_per_msg": round(m.extra["serve_cpu_s"] * 1000 / args.n, 3),
            "mailvia_cpu_ms_per_msg": round(m.extra["mailvia_cpu_s"] * 1000 / args.n, 3),
            "busy_before_pct": m.extra["busy_before_pct"],
            "load": os.getloadavg()[0],
            "failed": m.failed,
        }
        return row
    finally:
        tear_down(run, sink, outbox, pg, scratch)


def count_plans(args: argparse.Namespace, msg: bytes, pg: Postgres | None) -> dict:
    """`Intake.plan` of logged-in groups in this process: statements, round trips, CPU."""
    from sqlalchemy import event

    from mailvia.domain.message import Envelope
    from mailvia.ingress.smtp.intake import Arrived, Intake

    scratch = Path(tempfile.mkdtemp(prefix="relay-login-plan-", dir=args.work_dir))
    outbox = prepare(args, scratch, free_port(), pg)
    try:
        services = outbox.services
        user = services.tenancy.user(ENV_FROM)
        intake = Intake(services, time.time)
        composed = intake.compose(msg, Envelope(ENV_FROM, (ENV_TO,)))
        group = [Arrived(composed, user, None) for _ in range(args.group_size)]
        engine = services.store._db.engine
        seen: list[bool] = []  # per statement: in autocommit (PostgreSQL)

        def look(conn: Any, *_: Any) -> None:
            dbapi = conn.connection.dbapi_connection
            seen.append(bool(getattr(dbapi, "autocommit", False)))

        event.listen(engine, "before_cursor_execute", look)
        statements, trips, cpu = [], [], []
        try:
            for _ in range(args.plan_groups):
                seen.clear()
                c0 = time.process_time()
                plan = intake.plan(group)
                cpu.append(time.process_time() - c0)
                assert not any(isinstance(r, Exception) for r in plan.results), plan.results
                statements.append(len(seen))
                in_transaction = pg is not None and not all(seen)
                trips.append(len(seen) + 2 * in_transaction)
        finally:
            event.remove(engine, "before_cursor_execute", look)
        return {
            "bench": "relay_login_plan",
            "db": args.db,
            "group_size": args.group_size,
            "groups": args.plan_groups,
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "statements_per_group": statistics.median(statements),
            "round_trips_per_group": statistics.median(trips) if pg is not None else None,
            "plan_cpu_ms_median": round(statistics.median(cpu) * 1000, 3),
            "load": os.getloadavg()[0],
        }
    finally:
        outbox.close(pg)
        shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="messages per run (4000)")
    p.add_argument("--runs", type=int, default=1, help="runs (1)")
    p.add_argument("--sessions", type=int, default=20, help="logged-in sessions (20)")
    p.add_argument("--connections", type=int, default=20, help="channel max_connections (20)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: serve delivers)")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("MAILVIA_BENCH_PG_URL", DEFAULT_PG_URL))
    p.add_argument("--plan-groups", type=int, default=0, help="in-process plans to count (0)")
    p.add_argument("--group-size", type=int, default=10, help="messages per counted plan (10)")
    p.add_argument("--timeout", type=float, default=300.0, help="per timed section (300 s)")
    p.add_argument("--quiet-threshold", type=float, default=20.0, help="busy %% to wait for")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="...at most this long (10 s)")
    p.add_argument("--raw", type=Path, default=results_file(), help="results JSON lines")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch parent folder")
    p.add_argument("--py-spy", metavar="DIR", default=None, help="profile serve (raw, 100/s)")
    args = p.parse_args(argv)
    # bench/relay.py's measure() takes these
    args.py_spy_format, args.py_spy_rate, args.py_spy_nonblocking = "raw", 100, False
    args.py_spy_subprocesses = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    QUIET["threshold"], QUIET["max_wait"] = args.quiet_threshold, args.quiet_wait
    signal.signal(signal.SIGTERM, exit_on_signal)
    pg = Postgres(args.pg_url) if args.db == "postgresql" else None
    if pg is not None and (problem := pg.check()):
        print(f"PostgreSQL not reachable: {problem}", file=sys.stderr)
        return 2
    top = Path(tempfile.mkdtemp(prefix="relay-login-msg-", dir=args.work_dir))
    failed = False
    try:
        msg, _source = load_message(top)
        rows = [count_plans(args, msg, pg)] if args.plan_groups else []
        rows += [run_once(args, msg, pg, k) for k in range(1, args.runs + 1) if args.n]
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        with open(args.raw, "a") as out:
            for row in rows:
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")
                failed |= bool(row.get("failed"))
    finally:
        PROCS.stop_all()
        if pg is not None:
            pg.drop_all()
        shutil.rmtree(top, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
