"""A crash run: real `mailvia serve` (and `mailvia worker`) processes delivering to the
project's test server (a `mailvia testserver` process logging every message), killed with
SIGKILL at chosen moments and restarted on the same data folder.

`CrashRun(folder)` sets up organization `acme` (user jane, an API token, a channel to the
test server) with the CLI; `start()` starts the dispatching processes; `submit(n)` posts
messages over HTTP and returns the ids answered 202; `kill()` SIGKILLs the dispatching
process and notes how many messages were in a transaction at that moment (marked started,
not yet recorded). The dispatching process is `serve` itself (DISPATCH=inline), a `mailvia
worker` beside it (`worker=True`, DISPATCH=off), or serve's own worker process (`child=True`,
DISPATCH=process: serve starts another when it dies). Every process is stopped by its PID.
Used by tests/e2e/test_crashes.py and bench/crash.py.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

from support.cli import Cli, LongRunning
from support.reconcile import PENDING

JANE = "jane@acme.test"
HTTP_LINE = r"^listening http (http://127\.0\.0\.1:\d+)$"
SMTP_LINE = r"^listening smtp://127\.0\.0\.1:(\d+)$"
CHILD_LINE = r"^delivery: worker process (\d+)$"


class CrashRun:
    """One data folder, one receiving test server, and the mailvia processes that deliver."""

    def __init__(
        self,
        folder: Path,
        *,
        worker: bool = False,
        child: bool = False,
        default_dispatch: bool = False,
        connections: int = 10,
        db_url: str | None = None,
        sink_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.folder = folder
        self.worker = worker  # deliver with `mailvia worker` (serve --dispatch off)
        # serve's worker process delivers (--dispatch process, or DISPATCH's default)
        self.child = child or default_dispatch
        self.default_dispatch = default_dispatch
        extra = {"MAILVIA_DB_URL": db_url} if db_url else {}
        self.cli = Cli(folder / "data", **extra, **env)
        self.db_url = db_url or f"sqlite:///{(folder / 'data' / 'mailvia.db').resolve()}"
        self.maildir = folder / "caught"
        self.kills: list[int] = []  # messages in a transaction at each kill
        self.killed_children: set[int] = set()  # serve's worker processes this run killed
        self.serve: LongRunning | None = None
        self.dispatcher: LongRunning | None = None
        self.sink = self.cli.start(
            "testserver", "--maildir", str(self.maildir), *sink_args, log_dir=folder
        )
        port = self.sink.wait_for_line(SMTP_LINE)[1]
        self.token = self._setup(int(port), connections)
        self.url = ""

    def _setup(self, port: int, connections: int) -> str:
        cli = self.cli
        cli.ok("admin", "create-org", "acme")
        cli.ok("admin", "create-team", "sales", "--org", "acme")
        cli.ok("admin", "add-domain", "acme", "acme.test")
        cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
        cli.ok(
            "channel", "add", "jane-box", "--org", "acme", "--user", JANE, "--host", "127.0.0.1",
            "--port", str(port), "--security", "none", "--auth", "none",
            "--max-connections", str(connections),
        )  # fmt: skip
        return cli.ok("admin", "create-token", JANE).stdout.strip()

    def start(self) -> None:
        """Start serve (and the worker) unless running."""
        if self.serve is None or self.serve.process.poll() is not None:
            self.serve = self.cli.start(
                "serve", "--http-listen", "127.0.0.1:0", "--submission-listen", "off",
                *self.dispatch_flags(), log_dir=self.folder,
            )  # fmt: skip
            self.url = self.serve.wait_for_line(HTTP_LINE)[1]
        self.start_worker()

    def dispatch_flags(self) -> tuple[str, ...]:
        if self.default_dispatch:
            return ()
        mode = "off" if self.worker else "process" if self.child else "inline"
        return ("--dispatch", mode)

    def start_worker(self) -> None:
        """Start the `mailvia worker` unless running (worker=True), or wait for serve's."""
        if self.child:
            assert self.serve is not None
            self.serve.wait_for_line(r"^worker \S+ delivering$")
        if self.worker and (self.dispatcher is None or self.dispatcher.process.poll() is not None):
            self.dispatcher = self.cli.start("worker", log_dir=self.folder)
            self.dispatcher.wait_for_line(r"delivering")

    @property
    def delivering(self) -> LongRunning:
        """The process whose output tells about delivery (serve for its worker process)."""
        process = self.dispatcher if self.worker else self.serve
        assert process is not None, "start() first"
        return process

    def child_pid(self, timeout: float = 30.0) -> int:
        """The PID of serve's worker process: the last one serve started, once it is not one
        this run killed (serve starts the next after its backoff)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.delivering.drain()
            pids = [int(m[1]) for m in (re.search(CHILD_LINE, line) for line in lines) if m]
            if pids and pids[-1] not in self.killed_children:
                return pids[-1]
            assert time.monotonic() < deadline, "no new worker process\n" + "\n".join(lines)
            time.sleep(0.05)

    def submit(self, count: int, *, batch: int = 1000, tag: str = "m") -> list[str]:
        """Post `count` messages (jane to buyer@example.com); the ids answered 202."""
        accepted: list[str] = []
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            for start in range(0, count, batch):
                body = {
                    "messages": [
                        {"from": JANE, "to": ["buyer@example.com"], "subject": f"{tag}{i}",
                         "text": f"message {tag}{i}"}
                        for i in range(start, min(start + batch, count))
                    ]
                }  # fmt: skip
                answer = client.post("/v1/messages/batch", json=body)
                answer.raise_for_status()
                accepted += [
                    item["receipt"]["id"] for item in answer.json()["data"] if item["status"] == 202
                ]
        return accepted

    def received(self) -> int:
        """Copies the test server stored so far."""
        log = self.maildir / "received.jsonl"
        return log.read_bytes().count(b"\n") if log.exists() else 0

    def kill(self) -> int:
        """SIGKILL the dispatching process; returns (and notes) how many messages were in a
        transaction (marked started, not yet recorded) when it died."""
        if self.child:
            pid = self.child_pid()
            kill_child(pid)
            self.killed_children.add(pid)
        else:
            process = self.delivering.process
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        in_transaction = self.count("state = 'sending' AND started_at IS NOT NULL")
        self.kills.append(in_transaction)
        return in_transaction

    def count(self, where: str) -> int:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                query = sa.text(f"SELECT count(*) FROM messages WHERE {where}")
                return int(conn.execute(query).scalar_one())
        finally:
            engine.dispose()

    def pending(self) -> int:
        states = ", ".join(f"'{s}'" for s in PENDING)
        return self.count(f"state IN ({states})")

    def wait_settled(self, timeout: float) -> float:
        """Poll until nothing is pending; returns the seconds it took. Raises AssertionError
        (with the processes' output) past the deadline."""
        started = time.monotonic()
        while self.pending():
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{self.pending()} messages still pending after {timeout:.0f} s\n"
                    + self.delivering.stderr[-3000:]
                )
            time.sleep(0.1)
        return time.monotonic() - started

    def wait_received(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received() < count:
            if time.monotonic() > deadline or self.delivering.process.poll() is not None:
                raise AssertionError(
                    f"{self.received()} of {count} received\n" + self.delivering.stderr[-3000:]
                )
            time.sleep(0.01)

    def stop(self) -> None:
        for process in (self.dispatcher, self.serve, self.sink):
            if process is not None:
                process.stop()


def kill_child(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL a process that is not ours (serve's child) and wait until it is gone (serve
    has reaped it)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not gone_or_zombie(pid):
        assert time.monotonic() < deadline, f"process {pid} still there"
        time.sleep(0.01)


def gone_or_zombie(pid: int) -> bool:
    """Whether process `pid` has exited (gone, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or before the read
        return True


@contextmanager
def crash_run(folder: Path, **options: object) -> Iterator[CrashRun]:
    run = CrashRun(folder, **options)  # type: ignore[arg-type]
    try:
        yield run
    finally:
        run.stop()


def kill_points(rng_seed: int, count: int, total: int, *, after: int = 0) -> list[int]:
    """`count` received-message counts, spread at random over the first 90% of `total` past
    `after` (what was received already), at which to kill (ascending, distinct)."""
    rng = random.Random(rng_seed)
    low = max(total // 20, after + 1)
    return sorted(rng.sample(range(low, max(int(total * 0.9), low + count)), count))
