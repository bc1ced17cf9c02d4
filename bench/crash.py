#!/usr/bin/env python3
"""Crash recovery at full size: N messages (20,000 by default) posted to `mailvia serve`,
the dispatching process (serve with DISPATCH=inline, serve's worker process with --child, or
`mailvia worker` with --worker) killed with SIGKILL at
random moments while it delivers and restarted each time on the same data folder.

Reports: lost (accepted messages neither delivered nor pending once drained: must be 0, and
delivered ones the receiving server never got), duplicates at the receiving server (each must
be flagged possible_duplicate; they are at most the messages in a transaction at the kills),
and the time to drain after the last restart. The receiving side is the project's test server
(`mailvia testserver`, which logs each message it stores); the run and the accounting are the
tests' own (tests/support/crashes.py, tests/support/reconcile.py), at a size CI cannot afford.

One JSON line per run goes to the results file (bench/benchlib.py's format). Every server binds
127.0.0.1; every process is stopped by its PID; scratch folders and databases are removed.

usage: .venv/bin/python bench/crash.py [--n 20000] [--kills 5] [--worker | --child]
       [--db sqlite|postgresql] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    DEFAULT_PG_URL,
    REPO,
    Postgres,
    Recorder,
    cpu_snap,
    exit_on_signal,
    results_file,
)

sys.path.insert(0, str(REPO / "tests"))

from support.crashes import CrashRun, kill_points
from support.reconcile import reconcile


def dispatching(args: argparse.Namespace) -> str:
    return "worker" if args.worker else "child" if args.child else "serve"


def one_run(args: argparse.Namespace, folder: Path, db_url: str | None, rec: Recorder) -> int:
    run = CrashRun(
        folder,
        worker=args.worker,
        child=args.child,
        connections=args.connections,
        db_url=db_url,
    )
    try:
        run.start()
        started = time.monotonic()
        accepted = run.submit(args.n)
        print(f"  {len(accepted):,} accepted in {time.monotonic() - started:.1f} s", flush=True)
        # Delivery runs while the mail is posted: the kills fall in what is left after that.
        for point in kill_points(args.seed, args.kills, args.n, after=run.received()):
            run.wait_received(point, timeout=args.timeout)
            in_transaction = run.kill()
            print(f"  killed at {run.received():,} received: {in_transaction} in a transaction")
            run.start()
        c0 = cpu_snap()
        drained = run.wait_settled(args.timeout)
        result = reconcile(accepted, run.db_url, run.maildir)
    finally:
        run.stop()
    lost = result.accepted - result.delivered - result.bounced - result.expired
    lost += sum(1 for p in result.problems if p.startswith("lost"))
    unflagged = sum(1 for p in result.problems if p.startswith("unflagged"))
    print(f"  {result}\n  kills {run.kills}; drained {drained:.1f} s after the last restart")
    rec.record(
        c0,
        cpu_snap(),
        "mailvia_crash_drain",
        f"{args.db}, {dispatching(args)}",
        1,
        result.accepted,
        drained,
        "msg/s",
        lost=lost,
        duplicates=result.duplicates,
        flagged=result.flagged,
        unflagged=unflagged,
        in_transaction_at_kills=sum(run.kills),
        kills=args.kills,
        seed=args.seed,
    )
    ok = lost == 0 and unflagged == 0 and result.duplicates <= sum(run.kills)
    print(
        f"  lost {lost}, duplicates {result.duplicates} (all flagged: {unflagged == 0}) -> "
        f"{'OK' if ok else 'FAILED'}",
        flush=True,
    )
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SIGKILL the dispatcher at random moments.")
    parser.add_argument("--n", type=int, default=20000, help="messages (20,000)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs during delivery (5)")
    parser.add_argument("--worker", action="store_true", help="kill a `mailvia worker`")
    parser.add_argument("--child", action="store_true", help="kill serve's worker process")
    parser.add_argument("--connections", type=int, default=10, help="channel connections (10)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("MAILVIA_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--seed", type=int, default=None, help="kill moments (random)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per wait, seconds (300)")
    parser.add_argument("--raw", type=Path, default=results_file())
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = parser.parse_args(argv)
    args.seed = args.seed or random.randrange(1, 10**6)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_signal)
    rec = Recorder(args.raw)
    folder = Path(tempfile.mkdtemp(prefix="crash-", dir=args.work_dir))
    pg = Postgres(args.pg_url) if args.db == "postgresql" else None
    print(
        f"== crash: n={args.n:,} kills={args.kills} {dispatching(args)} "
        f"db={args.db} seed={args.seed}; mailvia {rec.rev}; scratch {folder}",
        flush=True,
    )
    try:
        db_url = pg.create()[1] if pg is not None else None
        return one_run(args, folder, db_url, rec)
    except KeyboardInterrupt:
        return 130
    finally:
        if pg is not None:
            pg.drop_all()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
