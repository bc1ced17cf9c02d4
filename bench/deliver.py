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
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENV_FROM = "sender@example.com"  # the shared bench's envelope (lib.sh)
ENV_TO = "rcpt@example.net"
FROM_ADDRESS = "notifications@example.com"  # the message's From header
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SINK_USER = os.environ.get("SINK_USER", "nobody")  # smtp-sink refuses to run as root without -u
READY_TIMEOUT = 90.0  # seconds for a worker to start
STOP_TIMEOUT = 20.0  # seconds for a process to stop after SIGTERM (then SIGKILL)
POLL = 0.02  # seconds between progress polls
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process this script starts, stopped by PID (TERM, then KILL) on the way out."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> Any:
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.live[proc.pid] = proc
        return proc

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0
    ) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  WARNING: pid {proc.pid} ignored signal {sig}; killing it", flush=True)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self.live.pop(proc.pid, None)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.live.values()):
            self.stop(proc, timeout=5)


PROCS = Processes()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit:.0f} s")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = data.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres (the server and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_text()
        except OSError:
            continue
        if "(postgres)" in data:
            rest = data.rsplit(")", 1)[1].split()
            total += (int(rest[11]) + int(rest[12])) / CLK_TCK
    return total


def cpu_snap() -> tuple[int, int, int]:
    """(total, steal, busy) jiffies of all CPUs, as lib.sh's cpu_snap."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return sum(fields), steal, user + nice + system + irq + softirq


def cpu_pct(c0: tuple[int, int, int], c1: tuple[int, int, int]) -> tuple[float | None, ...]:
    total = c1[0] - c0[0]
    if total <= 0:
        return None, None
    return round(100.0 * (c1[1] - c0[1]) / total, 1), round(100.0 * (c1[2] - c0[2]) / total, 1)


QUIET = {"threshold": 20.0, "max_wait": 60.0}  # set from --quiet-threshold / --quiet-wait


def wait_quiet() -> float | None:
    """Wait (up to --quiet-wait s) until the CPUs were at most --quiet-threshold % busy over
    one second, since the machine may be shared. Returns the last busy% seen."""
    if QUIET["max_wait"] <= 0:
        return None
    deadline = time.monotonic() + QUIET["max_wait"]
    while True:
        c0 = cpu_snap()
        time.sleep(1.0)
        busy = cpu_pct(c0, cpu_snap())[1]
        if busy is None or busy <= QUIET["threshold"]:
            return busy
        if time.monotonic() > deadline:
            print(f"  NOTE: the machine is still {busy}% busy (other load); measuring anyway")
            return busy


# --------------------------------------------------------------------------- smtp-sink


class Sink:
    """Postfix's smtp-sink on a free loopback port, counting messages with -c."""

    def __init__(self, workdir: Path, name: str, lifetime: float) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{name}-{self.port}.out"
        args = ["timeout", str(int(lifetime)), SMTP_SINK]
        if os.geteuid() == 0:
            args += ["-u", SINK_USER]
        args += ["-c", f"127.0.0.1:{self.port}", "1024"]
        self.proc = PROCS.start(args, self.out)
        try:
            wait_port(self.port)
        except RuntimeError:
            PROCS.stop(self.proc)
            raise RuntimeError(f"smtp-sink did not start: {self.out.read_text()[-500:]}") from None

    def sessions(self) -> int:
        """Connections the sink accepted so far (its `sess=N` counter, minus the start-up
        probe)."""
        found = re.findall(rb"sess=(\d+)", self._tail())
        return max(int(found[-1]) - 1, 0) if found else 0

    def _tail(self) -> bytes:
        try:
            with open(self.out, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256))
                return f.read()
        except OSError:
            return b""

    def count(self) -> int:
        """The last `mesg=N` counter smtp-sink printed."""
        found = re.findall(rb"mesg=(\d+)", self._tail())
        return int(found[-1]) if found else 0

    def cpu(self) -> float:
        return sum(proc_cpu(pid) for pid in children(self.proc.pid))

    def stop(self) -> None:
        PROCS.stop(self.proc)


# --------------------------------------------------------------------------- the message


def builtin_message() -> bytes:
    """The same bytes as shared/bench/make_msg.py (LF line endings), for when it is missing."""
    words = (  # noqa: SIM905 (the generator's own words, as in make_msg.py)
        "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
        "tempor incididunt ut labore et dolore magna aliqua ut enim ad minim "
        "veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
        "commodo consequat"
    ).split()
    body_bytes = 5120
    lines: list[str] = []
    i = total = 0
    while True:
        line: list[str] = []
        while len(" ".join(line)) < 70:
            line.append(words[i % len(words)])
            i += 1
        text = " ".join(line)
        if total + len(text) + 2 > body_bytes:
            break
        lines.append(text)
        total += len(text) + 2
    rest = body_bytes - total - 2
    if rest > 0:
        lines.append("x" * rest)
    headers = [
        "Return-Path: <bounces+12345@mailer.example.com>",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1;",
        " h=from:to:subject:date:message-id:mime-version:content-type;",
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;",
        " b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgdGhlIHJpZ2h0IHNpemUgZm9y",
        " IGEgMjA0OC1iaXQgUlNBIGtleSBzaWduYXR1cmUgaW4gYmFzZTY0IGVuY29kaW5nIGZvcm1hdA==",
        "From: Example Notifications <notifications@example.com>",
        "To: Jane Recipient <jane.recipient@example.net>",
        "Subject: Your weekly account summary for ACME Corp (benchmark message)",
        "Date: Mon, 06 Jan 2025 10:00:00 +0000",
        "Message-ID: <20250106100000.4f2a9c1e8b7d@mailer.example.com>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "List-Unsubscribe: <mailto:unsubscribe@example.com?subject=unsub-12345>,",
        " <https://example.com/unsubscribe/12345>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "X-Mailer: mailvia-bench/1.0",
        "X-Entity-Ref-ID: 7d1c2b3a-4e5f-6071-8293-a4b5c6d7e8f9",
    ]
    return ("\n".join([*headers, "", *lines]) + "\n").encode("ascii")


def load_message(workdir: Path) -> tuple[bytes, str]:
    """The shared 5 KiB message with CRLF line endings, and where it came from."""
    candidates = [
        Path(os.environ["MAILVIA_SHARED_BENCH"]) / "make_msg.py"
        if os.environ.get("MAILVIA_SHARED_BENCH")
        else None,
        REPO.parent / "shared" / "bench" / "make_msg.py",
        Path("/work/shared/bench/make_msg.py"),
    ]
    for script in candidates:
        if script is not None and script.is_file():
            out = workdir / "msg.eml"
            subprocess.run(
                [sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=30
            )
            return out.read_bytes().replace(b"\n", b"\r\n"), str(script)
    return builtin_message().replace(b"\n", b"\r\n"), "built-in copy of make_msg.py"


# --------------------------------------------------------------------------- results


def revision() -> str:
    """What is measured: MAILVIA_BENCH_REV when set (e.g. for a snapshot on PYTHONPATH), else
    the commit of the checkout mailvia is imported from (-dirty: with uncommitted changes)."""
    if os.environ.get("MAILVIA_BENCH_REV"):
        return os.environ["MAILVIA_BENCH_REV"]
    import mailvia

    src = Path(mailvia.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass
class Recorder:
    raw: Path
    rev: str = field(default_factory=revision)

    def record(
        self,
        c0: tuple[int, int, int] | None,
        c1: tuple[int, int, int],
        bench: str,
        variant: str,
        run: int,
        count: int,
        secs: float,
        unit: str,
        note: str = "",
        **extra: Any,
    ) -> float:
        rate = count / secs if secs > 0 else 0.0
        steal, busy = cpu_pct(c0, c1) if c0 else (None, None)
        row = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "bench": bench,
            "variant": variant,
            "run": run,
            "count": count,
            "seconds": round(secs, 4),
            "rate": round(rate, 1),
            "unit": unit,
            "steal_pct": steal,
            "busy_pct": busy,
            "note": note,
            "mailvia_rev": self.rev,
            **extra,
        }
        self.raw.parent.mkdir(parents=True, exist_ok=True)
        with open(self.raw, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"  [{bench} / {variant}] run {run}: {count} in {secs:.3f}s = {rate:,.0f} {unit}"
            f"  steal={steal}% busy={busy}%" + (f"  ({note})" if note else ""),
            flush=True,
        )
        return rate


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """Scratch databases mailvia_bench_<random> on the server, dropped after use."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.server = sa.make_url(url)
        self.engine = sa.create_engine(
            self.server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        self.created: list[str] = []

    def check(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return None

    def create(self) -> tuple[str, str]:
        name = f"mailvia_bench_{secrets.token_hex(5)}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name, self.server.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):
                self.drop(name)
        self.engine.dispose()


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
    per_worker: int,
) -> Queue:
    from mailvia.app import build
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
        max_connections=per_worker,
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


def py_spy_command() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return found


def start_py_spy(args: argparse.Namespace, pid: int, label: str) -> tuple[Any, Path] | None:
    if not args.py_spy:
        return None
    out_dir = Path(args.py_spy)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{label}.{'txt' if args.py_spy_format == 'raw' else 'json'}"
    cmd = [py_spy_command(), "record", "--pid", str(pid), "--rate", str(args.py_spy_rate)]
    cmd += ["--format", args.py_spy_format, "--output", str(out), "--idle", "--threads"]
    if args.py_spy_nonblocking:
        cmd.append("--nonblocking")
    proc = PROCS.start(cmd, out_dir / f"{label}.py-spy.log")
    time.sleep(1.0)  # let it attach
    return proc, out


def finish_py_spy(spy: tuple[Any, Path] | None) -> None:
    if spy is None:
        return
    proc, out = spy
    if proc.poll() is None:
        PROCS.stop(proc, signal.SIGINT, timeout=60)
    PROCS.live.pop(proc.pid, None)
    if out.exists() and out.suffix == ".txt":
        summary = summarize_collapsed(out)
        out.with_suffix(".summary.txt").write_text(summary)
        print(summary, flush=True)
    print(f"  profile: {out}", flush=True)


def deliver_workers(
    args: argparse.Namespace, queue: Queue, sink: Sink, workers: int, scratch: Path, label: str
) -> Delivery:
    """`mailvia worker` subprocesses deliver the queue; timed from the throttle's end (T0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    if args.claim_batch:
        env["MAILVIA_CLAIM_BATCH"] = str(args.claim_batch)
    if args.lease_seconds:
        env["MAILVIA_LEASE_SECONDS"] = str(args.lease_seconds)
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
            snap = {"worker_cpu_s": sum(proc_cpu(p.pid) for p in procs), "sink_cpu_s": sink.cpu()}
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


def summarize_collapsed(path: Path, top: int = 30, thread: str = "MainThread") -> str:
    """Own and inclusive shares per function of one thread (the event loop's, by default)
    from py-spy's raw (collapsed) output recorded with --idle --threads. Idle time of the
    event loop shows as `EpollSelector.select`."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    frame_re = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if parts[0].startswith("thread ("):
            name = parts[0].split(": ", 1)[-1]
            threads[name] += count
            parts = parts[1:]
            if name != thread:
                continue
        total += count
        frames = []
        for frame in parts:
            match = frame_re.match(frame)
            func, file = (match.group(1), match.group(2)) if match else (frame, "?")
            short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file)
            frames.append(f"{func} ({short})")
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        modules[frames[-1].rsplit("(", 1)[-1].rstrip(")").split("/")[0]] += count
    if not total:
        return f"{path}: no samples"
    idle = sum(n for f, n in own.items() if f.startswith(("EpollSelector.select", "select (")))
    busy = max(total - idle, 1)
    lines = [
        f"py-spy profile {path.name}: {total} samples of thread {thread}; "
        f"{idle} idle in the event loop's select ({100 * idle / total:.1f}%), {busy} busy"
    ]
    if threads:
        shown = ", ".join(f"{name} {n}" for name, n in threads.most_common())
        lines.append(f"samples per thread: {shown}")
    lines += ["", f"top {top} by own time (% of busy samples):"]
    lines += [
        f"  {100 * n / busy:5.1f}%  {f}"
        for f, n in own.most_common(top + 1)
        if not f.startswith("EpollSelector.select")
    ][:top]
    lines += ["", f"top {top} by inclusive time (% of busy samples):"]
    skip = ("EpollSelector.select", "BaseEventLoop.", "Runner.run", "run (asyncio")
    lines += [
        f"  {100 * n / busy:5.1f}%  {f}"
        for f, n in inclusive.most_common()
        if n < busy and not f.startswith(skip)
    ][:top]
    lines += ["", "own time by top-level package or module (% of busy samples):"]
    lines += [
        f"  {100 * n / busy:5.1f}%  {f}" for f, n in modules.most_common(16) if f != "selectors.py"
    ][:15]
    return "\n".join(lines) + "\n"


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
        per_worker = args.connections
        if workers > 1 and not args.no_split:  # max_connections is per process
            per_worker = -(-args.connections // workers)
        queue = prepare(args, backend, scratch, sink.port, msg, pg, per_worker)
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
            channel_max_connections=per_worker,
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


def _fmt(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


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
            f"| {p.backend} | {p.workers} | {_fmt(p.submit)} | {_fmt(p.mailvia)} | "
            f"{_fmt(p.sink_rates)} | {_fmt(p.bare)} | {_fmt(p.ratios, 2)} | {goal} |"
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
        "--pg-url",
        default=os.environ.get("MAILVIA_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL server (a scratch database is created there and dropped)",
    )
    default_raw = Path(
        os.environ.get(
            "RAW",
            Path(os.environ.get("RES_DIR", Path(tempfile.gettempdir()) / "mailvia-bench/results"))
            / "raw.jsonl",
        )
    )
    parser.add_argument("--raw", type=Path, default=default_raw, help="results JSON lines")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch parent folder")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="limit per timed section, seconds (300)"
    )
    parser.add_argument("--skip-bare", action="store_true", help="no baseline loop")
    parser.add_argument(
        "--no-split",
        action="store_true",
        help="with several workers give each the channel's C connections (a channel's "
        "max_connections is per process), instead of C / workers each",
    )
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
    signal.signal(signal.SIGTERM, _exit_on_signal)
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
