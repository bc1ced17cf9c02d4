"""What the benchmark scripts share: processes stopped by PID, Postfix's smtp-sink, the shared
5 KiB message, CPU accounting from /proc, scratch PostgreSQL databases and the results file
(one JSON line per measurement, in the shared bench's `record()` format).

Imported by bench/deliver.py and bench/relay.py (run from the repository root).
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENV_FROM = "sender@example.com"  # the shared bench's envelope (lib.sh)
ENV_TO = "rcpt@example.net"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SINK_USER = os.environ.get("SINK_USER", "nobody")  # smtp-sink refuses to run as root without -u
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


def results_file() -> Path:
    """Where results go: $RAW, else $RES_DIR/raw.jsonl, else under the temp folder (as the
    shared bench's lib.sh)."""
    folder = os.environ.get("RES_DIR", str(Path(tempfile.gettempdir()) / "mailvia-bench/results"))
    return Path(os.environ.get("RAW", str(Path(folder) / "raw.jsonl")))


def exit_on_signal(signum: int, _frame: object) -> None:
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


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads: its main thread's (serve's event loop) and the
    others' together, each as user and system time ("main user", "others system", ...)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            data = (task / "stat").read_text()
        except OSError:
            continue
        who = "main" if task.name == str(pid) else "others"
        rest = data.rsplit(")", 1)[1].split()
        for kind, value in (("user", rest[11]), ("system", rest[12])):
            out[f"{who} {kind}"] = out.get(f"{who} {kind}", 0.0) + int(value) / CLK_TCK
    return out


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def descendants_cpu(pid: int) -> float:
    """CPU seconds of a process's children and theirs (serve's worker process and the
    worker's store process), not its own: those any of its threads started."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            kids.update(int(x) for x in (task / "children").read_text().split())
    return sum(proc_cpu(child) + descendants_cpu(child) for child in kids)


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


# --------------------------------------------------------------------------- the product


class Built:
    """What the composition root built (its Services), with the store beside it: Services
    has no store field (the doors reach it through use cases), a benchmark sets up through
    both."""

    def __init__(self, wired: Any) -> None:
        self._services = wired.services
        self.store = wired.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services, name)


def build(settings: Any, *, create_key: bool = False) -> Any:
    """`mailvia.app.wire`'s services with `.store` (see Built)."""
    from mailvia.app import wire

    return Built(wire(settings, create_key=create_key))


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


def fmt_range(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


# --------------------------------------------------------------------------- py-spy


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
    if getattr(args, "py_spy_subprocesses", False):
        cmd.append("--subprocesses")  # serve's worker process too
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
        if parts[0].startswith("process "):  # recorded with --subprocesses
            parts = parts[1:]
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
