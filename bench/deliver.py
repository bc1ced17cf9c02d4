#!/usr/bin/env python3
"""Durable delivery throughput: mailvia's dispatcher against a bare aiosmtplib loop.

For each backend (SQLite, PostgreSQL), each worker count and each run:

1. set-up, not timed: a fresh data folder (and a scratch PostgreSQL database), `app.build`,
   an organization with the domain example.com, a user notifications@example.com and one
   address-scoped channel to Postfix's `smtp-sink` on 127.0.0.1 (security none, auth none,
   `max_connections` = C, long timeouts), held shut by a throttle;
2. submit, timed separately: N copies of the shared 5 KiB message through
   `Submitter.submit` in batches (each one `inspect_raw`-ed with an explicit envelope),
   reported as messages/s committed;
3. baseline, timed: a bare aiosmtplib loop (C `aiosmtplib.SMTP` clients, connections kept
   open, each sending its share of N with `sendmail`) to a fresh `smtp-sink`;
4. mailvia, timed: `mailvia worker` processes (or the dispatcher in this process with
   `--in-process`) deliver the queue to its own `smtp-sink`. The channel's throttle is lifted
   at a set instant T0 once the workers idle; the clock stops when the store says all N are
   `delivered` (results committed). The time at which the sink had all N is shown too.

Every server binds 127.0.0.1; every process started here is stopped by its PID; scratch
folders and databases are removed on exit. One JSON line per measurement is appended to the
results file (the shared bench's `record()` format, with steal% and busy% from /proc/stat).

usage: .venv/bin/python bench/deliver.py [--n 20000] [--db sqlite|postgresql|both]
       [--workers 1|2|1,2] [--runs 3] [--connections 20] [--in-process] [--py-spy DIR]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_PG_URL,
    ENV_FROM,
    ENV_TO,
    POLL,
    PROCS,
    QUIET,
    SMTP_SINK,
    STOP_TIMEOUT,
    Postgres,
    Recorder,
    Sink,
    children,
    cpu_snap,
    exit_on_signal,
    finish_py_spy,
    fmt_range,
    load_message,
    postgres_cpu,
    proc_cpu,
    results_file,
    start_py_spy,
    summarize_collapsed,
    wait_quiet,
)

FROM_ADDRESS = "notifications@example.com"  # the message's From header
READY_TIMEOUT = 90.0  # seconds for a worker to start


# --------------------------------------------------------------------------- set-up


@dataclass
class Queue:
    """A data folder with N messages queued for one channel to a sink."""

    services: Any
    settings: Any
    channel_id: str
    data_dir: Path
    submit_secs: float
    db_name: str | None = None


def prepare(
    args: argparse.Namespace,
    backend: str,
    scratch: Path,
    sink_port: int,
    msg: bytes,
    pg: Postgres | None,
    connections: int,
) -> Queue:
    from benchlib import build

    from mailvia.domain.channel import Auth, Security, Timeouts
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
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "db_url": db_url,
        "allow_private_hosts": "127.0.0.0/8",
        "worker_id": "bench-inproc",
        "claim_batch": args.claim_batch,
        "lease_seconds": args.lease_seconds,
    }
    settings = Settings.load({}, overrides)
    services = build(settings, create_key=True)
    now = time.time()
    tenancy = services.tenancy
    tenancy.create_org("bench", now)
    tenancy.create_team("senders", "bench", now)
    tenancy.add_domain("bench", "example.com", now)
    user, _ = tenancy.create_user(
        FROM_ADDRESS, org_name="bench", team_name="senders", admin=True, now=now
    )
    long = Timeouts(connect=30, greeting=120, command=120, data_init=120, data_block=120)
    spec = ChannelSpec(
        name="smtp-sink",
        host="127.0.0.1",
        port=sink_port,
        security=Security.NONE,
        auth=Auth.NONE,
        address=FROM_ADDRESS,
        max_connections=connections,
        timeouts=long,
    )
    channel, _ = services.channels.add(user, spec, now)
    # Shut until the timed section starts (lifted at T0, see deliver_workers).
    services.store.set_channel_throttle(channel.id, now + 86400.0, 0)

    envelope = Envelope(ENV_FROM, (ENV_TO,))
    spy = start_py_spy(args, os.getpid(), f"{scratch.name}-submit") if args.py_spy_submit else None
    t0 = time.perf_counter()
    for start in range(0, args.n, args.submit_batch):
        count = min(args.submit_batch, args.n - start)
        subs = [
            Submission(inspect_raw(msg, envelope=envelope, max_size=services.max_message_size))
            for _ in range(count)
        ]
        services.submitter.submit(user, subs, now=time.time())
    submit_secs = time.perf_counter() - t0
    finish_py_spy(spy)
    return Queue(services, settings, channel.id, data_dir, submit_secs, db_name)


def close_queue(queue: Queue, pg: Postgres | None) -> None:
    with contextlib.suppress(Exception):
        asyncio.run(queue.services.aclose())
    if queue.db_name and pg is not None:
        pg.drop(queue.db_name)


def delivered_count(queue: Queue) -> tuple[int, dict[str, int]]:
    from mailvia.domain.message import State

    counts = queue.services.store.queue_counts().get(queue.channel_id, {})
    others = {str(s): n for s, n in counts.items() if n and s is not State.DELIVERED}
    return counts.get(State.DELIVERED, 0), others


# --------------------------------------------------------------------------- baseline


async def _bare(port: int, n: int, connections: int, msg: bytes) -> float:
    from aiosmtplib import SMTP

    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    ends: list[float] = []

    async def client(share: int) -> None:
        smtp = SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname="bench.invalid",
            timeout=120,
            start_tls=False,
        )
        await smtp.connect()
        for _ in range(share):
            await smtp.sendmail(ENV_FROM, [ENV_TO], msg)
        ends.append(time.perf_counter())
        await smtp.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(share) for share in shares if share))
    return max(ends) - t0


def run_bare(
    args: argparse.Namespace, scratch: Path, msg: bytes, rec: Recorder, run: int, pair: str
) -> float | None:
    sink = Sink(scratch, "bare", args.timeout + 60 + QUIET["max_wait"])
    try:
        busy_before = wait_quiet()
        c0 = cpu_snap()
        cpu0, sink0 = time.process_time(), sink.cpu()
        secs = asyncio.run(
            asyncio.wait_for(_bare(sink.port, args.n, args.connections, msg), args.timeout)
        )
        c1 = cpu_snap()
        cpu1, sink1 = time.process_time(), sink.cpu()
        got = _settle_count(sink, args.n)
    except TimeoutError:
        print(f"  WARNING: the bare loop did not finish in {args.timeout:.0f} s", flush=True)
        return None
    finally:
        sink.stop()
    note = "" if got == args.n else f"sink counted {got} of {args.n}"
    return rec.record(
        c0,
        c1,
        "aiosmtplib_bare_loop",
        f"{args.connections} connections ({pair})",
        run,
        got,
        secs,
        "msg/s",
        note,
        busy_before_pct=busy_before,
        client_cpu_ms_per_msg=round(1000 * (cpu1 - cpu0) / max(got, 1), 3),
        sink_cpu_s=round(sink1 - sink0, 2),
    )


def _settle_count(sink: Sink, n: int, wait: float = 2.0) -> int:
    deadline = time.monotonic() + wait
    while sink.count() < n and time.monotonic() < deadline:
        time.sleep(POLL)
    return sink.count()


# --------------------------------------------------------------------------- mailvia


@dataclass
class Delivery:
    secs: float  # T0 until the store has all N delivered
    sink_secs: float  # T0 until the sink counted N
    sunk: int
    delivered: int
    others: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    failed: str = ""


EXPERIMENTS = {
    "nodelay": "TCP_NODELAY on the channel's sockets (OutboundGuard.connect's socket is made "
    "with proto 0, so asyncio does not disable Nagle on it)",
    "norset": "no RSET before reusing a pooled connection (Session.reset returns True)",
    "fastencode": "transport.session.encode_data with bytes.replace instead of two re.sub "
    "passes (same output)",
}


def _encode_data_replace(content: bytes) -> bytes:
    """encode_data's contract with bytes.replace: CRLF everywhere, final CRLF, dot-stuffed."""
    body = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    return b"." + body if body.startswith(b".") else body


def apply_experiments(names: list[str]) -> None:
    """Diagnostic patches of the product, in this process only, to measure what a change
    would gain. Never part of the headline figures (their rows are labelled)."""
    unknown = set(names) - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiment(s) {sorted(unknown)}; known: {sorted(EXPERIMENTS)}")
    if "nodelay" in names:
        from mailvia.transport.guard import OutboundGuard

        original = OutboundGuard.connect

        async def connect(self: Any, *a: Any, **kw: Any) -> socket.socket:
            sock = await original(self, *a, **kw)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        OutboundGuard.connect = connect  # type: ignore[method-assign]
    if "norset" in names:
        from mailvia.transport.session import Session

        async def reset(self: Any) -> bool:
            return True

        Session.reset = reset  # type: ignore[method-assign]
    if "fastencode" in names:
        import mailvia.transport.session as session_module

        session_module.encode_data = _encode_data_replace  # type: ignore[assignment]


def mailvia_command(experiments: list[str]) -> list[str]:
    if experiments:  # this script, as `mailvia` with the patches applied (see main)
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "--as-mailvia",
            ",".join(experiments),
        ]
    script = Path(sys.executable).parent / "mailvia"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mailvia.app import main; main()"]


def deliver_workers(
    args: argparse.Namespace, queue: Queue, sink: Sink, workers: int, scratch: Path, label: str
) -> Delivery:
    """`mailvia worker` subprocesses deliver the queue; timed from the throttle's end (T0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    if args.claim_batch:
        env["MAILVIA_CLAIM_BATCH"] = str(args.claim_batch)
    if args.lease_seconds:
        env["MAILVIA_LEASE_SECONDS"] = str(args.lease_seconds)
    if args.delivery_store:
        env["MAILVIA_DELIVERY_STORE"] = args.delivery_store
    procs: list[Any] = []
    logs: list[Path] = []
    spies: list[tuple[Any, Path] | None] = []
    try:
        for k in range(workers):
            log = scratch / f"worker{k + 1}.log"
            cmd = [
                *mailvia_command(args.experiment),
                "worker",
                "--data-dir",
                str(queue.data_dir),
                "--db-url",
                queue.settings.database_url,
                "--allow-private-hosts",
                "127.0.0.0/8",
                "--worker-id",
                f"bench-w{k + 1}",
            ]
            procs.append(PROCS.start(cmd, log, env))
            logs.append(log)
        deadline = time.monotonic() + READY_TIMEOUT
        for proc, log in zip(procs, logs, strict=True):
            while b"delivering" not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"worker pid {proc.pid} did not start:\n{tail}")
                time.sleep(0.05)
        time.sleep(1.2)  # every worker is now in its idle wait (at most 1 s)
        busy_before = wait_quiet()
        for k, proc in enumerate(procs):
            spies.append(start_py_spy(args, proc.pid, f"{label}-w{k + 1}"))
        t_open = time.time() + 1.5
        queue.services.store.set_channel_throttle(queue.channel_id, t_open, 0)
        time.sleep(max(0.0, t_open - time.time()))

        def died() -> str:
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-1500:]
                    return f"worker pid {proc.pid} exited ({proc.returncode}):\n{tail}"
            return ""

        def cpu() -> dict[str, float]:
            # the workers' own child processes too (DELIVERY_STORE=process), also apart
            kids = sum(proc_cpu(kid) for p in procs for kid in children(p.pid))
            snap = {
                "worker_cpu_s": sum(proc_cpu(p.pid) for p in procs) + kids,
                "worker_children_cpu_s": kids,
                "sink_cpu_s": sink.cpu(),
            }
            if queue.db_name:
                snap["postgres_cpu_s"] = postgres_cpu()
            return snap

        result = _measure(args, queue, sink, t_open, died, cpu)
        result.extra["busy_before_pct"] = busy_before
        return result
    finally:
        for proc in procs:
            PROCS.stop(proc, timeout=STOP_TIMEOUT)
        for spy in spies:
            finish_py_spy(spy)


def _measure(
    args: argparse.Namespace,
    queue: Queue,
    sink: Sink,
    t_open: float,
    died: Callable[[], str],
    cpu: Callable[[], dict[str, float]],
) -> Delivery:
    c0, cpu0 = cpu_snap(), cpu()
    deadline = t_open + args.timeout
    failed = ""
    while sink.count() < args.n and not failed:
        failed = died() or ("timeout" if time.time() > deadline else "")
        time.sleep(POLL)
    t_sink = time.time()
    delivered, others = 0, {}
    while not failed:
        delivered, others = delivered_count(queue)
        if delivered >= args.n:
            break
        failed = died() or ("timeout" if time.time() > deadline else "")
        time.sleep(POLL)
    t_end = time.time()
    c1, cpu1 = cpu_snap(), cpu()
    extra: dict[str, Any] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    extra["cpu"] = (c0, c1)
    if failed:
        delivered, others = delivered_count(queue)
    return Delivery(t_end - t_open, t_sink - t_open, sink.count(), delivered, others, extra, failed)


async def _deliver_here(args: argparse.Namespace, queue: Queue, sink: Sink) -> Delivery:
    """The dispatcher in this process's event loop (no subprocess), e.g. for py-spy."""
    dispatcher = queue.services.dispatcher
    stop = asyncio.Event()
    busy_before = wait_quiet()
    queue.services.store.set_channel_throttle(queue.channel_id, None, 0)
    me = os.getpid()
    loop = asyncio.get_running_loop()
    task = loop.create_task(dispatcher.run_forever(time.time, stop))

    def died() -> str:
        if task.done():
            return f"the dispatcher stopped: {task.exception()!r}"
        return ""

    def cpu() -> dict[str, float]:
        snap = {"worker_cpu_s": proc_cpu(me), "sink_cpu_s": sink.cpu()}
        if queue.db_name:
            snap["postgres_cpu_s"] = postgres_cpu()
        return snap

    c0, cpu0 = cpu_snap(), cpu()
    t_open = time.time()
    deadline = t_open + args.timeout
    failed = ""
    while sink.count() < args.n and not failed:
        failed = died() or ("timeout" if time.time() > deadline else "")
        await asyncio.sleep(POLL)
    t_sink = time.time()
    delivered, others = 0, {}
    while not failed:
        delivered, others = delivered_count(queue)
        if delivered >= args.n:
            break
        failed = died() or ("timeout" if time.time() > deadline else "")
        await asyncio.sleep(POLL)
    t_end = time.time()
    c1, cpu1 = cpu_snap(), cpu()
    stop.set()
    dispatcher.wake()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, STOP_TIMEOUT)
    await queue.services.transport.aclose()
    extra: dict[str, Any] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    extra["cpu"] = (c0, c1)
    extra["busy_before_pct"] = busy_before
    if failed:
        delivered, others = delivered_count(queue)
    return Delivery(t_end - t_open, t_sink - t_open, sink.count(), delivered, others, extra, failed)


def deliver_here(args: argparse.Namespace, queue: Queue, sink: Sink, label: str) -> Delivery:
    spy = start_py_spy(args, os.getpid(), f"{label}-inproc")
    try:
        return asyncio.run(_deliver_here(args, queue, sink))
    finally:
        finish_py_spy(spy)


# --------------------------------------------------------------------------- profiles


# --------------------------------------------------------------------------- main


@dataclass
class Pair:
    backend: str
    workers: str
    mailvia: list[float] = field(default_factory=list)
    sink_rates: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def one_run(
    args: argparse.Namespace,
    backend: str,
    workers: int,
    run: int,
    msg: bytes,
    rec: Recorder,
    pg: Postgres | None,
    pair: Pair,
) -> None:
    mode = "in-process" if args.in_process else f"{workers} worker{'s' * (workers > 1)}"
    label = f"{backend}-{'inproc' if args.in_process else f'w{workers}'}-run{run}"
    if args.experiment:
        mode += f", experiment {'+'.join(args.experiment)}"
        label += "-" + "-".join(args.experiment)
    scratch = Path(tempfile.mkdtemp(prefix=f"deliver-{label}-", dir=args.work_dir))
    sink = Sink(scratch, "mailvia", args.timeout * 3 + 600)
    queue: Queue | None = None
    try:
        # The channel's max_connections is C for every run: with several workers their
        # connection slots (outbox/slots.py) share C among them, as in service.
        queue = prepare(args, backend, scratch, sink.port, msg, pg, args.connections)
        pair.submit.append(
            rec.record(
                None,
                cpu_snap(),
                "mailvia_submit",
                f"{backend}, batches of {args.submit_batch}",
                run,
                args.n,
                queue.submit_secs,
                "msg/s",
            )
        )
        bare = None if args.skip_bare else run_bare(args, scratch, msg, rec, run, backend)
        try:
            if args.in_process:
                result = deliver_here(args, queue, sink, label)
            else:
                result = deliver_workers(args, queue, sink, workers, scratch, label)
        except RuntimeError as exc:  # a worker that would not start: this run failed
            print(f"  FAILED: {exc}", flush=True)
            pair.failures.append(str(exc).splitlines()[0])
            return
        c0, c1 = result.extra.pop("cpu")
        note = result.failed.splitlines()[0] if result.failed else ""
        if result.others:
            note += f" other states {result.others}"
        if result.sunk != args.n:
            note += f" sink counted {result.sunk}"
        per_msg = 1000 * result.extra.get("worker_cpu_s", 0.0) / max(result.delivered, 1)
        rate = rec.record(
            c0,
            c1,
            "mailvia_deliver",
            f"{backend}, {mode}, {args.connections} connections",
            run,
            result.delivered,
            result.secs,
            "msg/s",
            note.strip(),
            sink_seconds=round(result.sink_secs, 4),
            sink_rate=round(args.n / result.sink_secs, 1) if result.sink_secs > 0 else None,
            worker_cpu_ms_per_msg=round(per_msg, 3),
            channel_max_connections=args.connections,
            sink_sessions=sink.sessions(),
            profiled=bool(args.py_spy),
            **result.extra,
        )
        if result.failed:
            print(f"  FAILED: {result.failed}", flush=True)
            pair.failures.append(result.failed.splitlines()[0])
            return
        pair.mailvia.append(rate)
        pair.sink_rates.append(args.n / result.sink_secs)
        print(
            f"    sink had all {args.n} after {result.sink_secs:.3f}s; "
            f"worker CPU {result.extra.get('worker_cpu_s')} s ({per_msg:.2f} ms/msg), "
            f"sink CPU {result.extra.get('sink_cpu_s')} s"
            + (
                f", postgres CPU {result.extra['postgres_cpu_s']} s"
                if "postgres_cpu_s" in result.extra
                else ""
            ),
            flush=True,
        )
        if bare:
            pair.bare.append(bare)
            pair.ratios.append(rate / bare)
            print(f"    ratio mailvia / bare loop = {rate / bare:.2f}", flush=True)
    finally:
        sink.stop()
        if queue is not None:
            close_queue(queue, pg)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def table(pairs: list[Pair], args: argparse.Namespace) -> str:
    lines = [
        f"N = {args.n:,} messages of 5 KiB, {args.connections} connections, "
        f"medians of {args.runs} run(s) (min–max)",
        "",
        "| backend | workers | submit msg/s | mailvia msg/s (durable) | mailvia msg/s "
        "(at sink) | bare aiosmtplib msg/s | ratio (durable / bare) | goal ≥ 0.8 |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in pairs:
        goal = "-"
        if p.ratios:
            goal = "met" if statistics.median(p.ratios) >= 0.8 else "missed"
        if p.failures:
            goal += f" ({len(p.failures)} failed run(s))"
        lines.append(
            f"| {p.backend} | {p.workers} | {fmt_range(p.submit)} | {fmt_range(p.mailvia)} | "
            f"{fmt_range(p.sink_rates)} | {fmt_range(p.bare)} | {fmt_range(p.ratios, 2)} | {goal} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="mailvia durable delivery vs a bare aiosmtplib loop, to smtp-sink."
    )
    parser.add_argument("--n", type=int, default=20000, help="messages per run (20000)")
    parser.add_argument("--connections", type=int, default=20, help="C, both sides (20)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--workers", default="1", help="worker processes: 1, 2 or a list like 1,2 (1)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the dispatcher in this process (Dispatcher.run_forever) instead of workers",
    )
    parser.add_argument("--submit-batch", type=int, default=500, help="per submit call (500)")
    parser.add_argument("--claim-batch", type=int, default=None, help="MAILVIA_CLAIM_BATCH")
    parser.add_argument("--lease-seconds", type=float, default=None, help="lease length")
    parser.add_argument(
        "--delivery-store", choices=("thread", "process"), help="MAILVIA_DELIVERY_STORE"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("MAILVIA_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL server (a scratch database is created there and dropped)",
    )
    parser.add_argument("--raw", type=Path, default=results_file(), help="results JSON lines")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch parent folder")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="limit per timed section, seconds (300)"
    )
    parser.add_argument("--skip-bare", action="store_true", help="no baseline loop")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=20.0,
        help="before each timed section wait until the CPUs were at most this %% busy (20)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="...for at most this many seconds (60)"
    )
    parser.add_argument(
        "--experiment",
        default="",
        help="diagnostic patches of the product, comma-separated: "
        + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("--keep", action="store_true", help="keep scratch folders (logs)")
    parser.add_argument(
        "--py-spy", metavar="DIR", default=None, help="record a py-spy profile of each worker"
    )
    parser.add_argument("--py-spy-format", choices=("raw", "speedscope"), default="raw")
    parser.add_argument("--py-spy-rate", type=int, default=100, help="samples/s (100)")
    parser.add_argument("--py-spy-nonblocking", action="store_true")
    parser.add_argument(
        "--py-spy-subprocesses", action="store_true", help="the workers' store processes too"
    )
    parser.add_argument(
        "--py-spy-submit", action="store_true", help="also profile the submit phase (with --py-spy)"
    )
    parser.add_argument(
        "--summarize-profile", type=Path, default=None, help="print a raw profile's summary"
    )
    args = parser.parse_args(argv)
    args.worker_counts = [int(x) for x in str(args.workers).split(",") if x.strip()]
    args.experiment = [x.strip() for x in args.experiment.split(",") if x.strip()]
    if args.in_process:
        args.worker_counts = [1]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as-mailvia"]:  # a worker with diagnostic patches (--experiment)
        apply_experiments([x for x in argv[1].split(",") if x])
        sys.argv = ["mailvia", *argv[2:]]
        from mailvia.app import main as mailvia_main

        mailvia_main()
        return 0
    args = parse_args(argv)
    apply_experiments(args.experiment if args.in_process else [])
    QUIET["threshold"], QUIET["max_wait"] = args.quiet_threshold, args.quiet_wait
    if args.summarize_profile:
        print(summarize_collapsed(args.summarize_profile))
        return 0
    signal.signal(signal.SIGTERM, exit_on_signal)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    if not Path(SMTP_SINK).exists():
        print(f"smtp-sink not found at {SMTP_SINK} (Debian package postfix)", file=sys.stderr)
        return 2
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    pg: Postgres | None = None
    if "postgresql" in backends:
        pg = Postgres(args.pg_url)
        problem = pg.check()
        if problem:
            print(f"PostgreSQL not reachable ({problem}); skipping it", flush=True)
            backends.remove("postgresql")
            pg = None
    rec = Recorder(args.raw)
    pairs: list[Pair] = []
    top = Path(tempfile.mkdtemp(prefix="deliver-msg-", dir=args.work_dir))
    try:
        msg, source = load_message(top)
        print(
            f"== deliver: N={args.n} connections={args.connections} runs={args.runs} "
            f"backends={','.join(backends)} workers={args.workers}"
            f"{' (in-process)' if args.in_process else ''}"
            f"{' experiment ' + '+'.join(args.experiment) if args.experiment else ''}\n"
            f"   message {len(msg)} bytes (CRLF) from {source}; mailvia {rec.rev}; "
            f"results -> {args.raw}",
            flush=True,
        )
        for backend in backends:
            for workers in args.worker_counts:
                shown = "in-process" if args.in_process else str(workers)
                if args.experiment:
                    shown += f" ({'+'.join(args.experiment)})"
                pair = Pair(backend, shown)
                pairs.append(pair)
                for run in range(1, args.runs + 1):
                    print(f"-- {backend}, {pair.workers} worker(s), run {run}", flush=True)
                    one_run(args, backend, workers, run, msg, rec, pg, pair)
                    time.sleep(1.0)
        print()
        print(table(pairs, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        PROCS.stop_all()
        if pg is not None:
            pg.drop_all()
        shutil.rmtree(top, ignore_errors=True)
    return 1 if any(p.failures for p in pairs) else 0


if __name__ == "__main__":
    sys.exit(main())
