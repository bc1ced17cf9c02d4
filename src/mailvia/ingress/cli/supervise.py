"""`serve`'s delivery in a worker process (DISPATCH=process, or auto with 2 or more CPUs).

Serve starts one `mailvia worker --supervised` with the same interpreter and its own settings
in the child's environment (`settings.environment`: secrets never on a command line), and
starts a new one when it exits unexpectedly (crash, SIGKILL, out of memory): at once after a
healthy run, then after 1, 2, 4 ... 60 s while it keeps dying. The child claims a worker id
slot of its own (ingress/worker_id.py): a restarted child gets its predecessor's slot and id
back, so it takes that one's claims back at once.

The child's stdin is a pipe from serve. A line on it means "new mail: look now" (serve's
submissions wake it as they wake a dispatcher in their own process); end of file means "serve
is gone", and the worker stops as on SIGTERM (its claims given back), so a killed serve leaves
no orphan. On SIGTERM/SIGINT serve stops its intakes first, then the child: SIGTERM, up to
SHUTDOWN_SECONDS and a margin for it to finish, SIGKILL after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click

from mailvia.settings import Settings, environment

RESTART_FIRST = 1.0  # seconds before the second start in a row of a child that keeps dying
RESTART_MAX = 60.0
HEALTHY_AFTER = 60.0  # a child that ran this long restarts at once
STOP_MARGIN = 3.0  # seconds past SHUTDOWN_SECONDS before a stopping child is killed
METRICS_EVERY = 1.0  # seconds between writes of the child's delivery metrics


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def dispatch_mode(setting: str) -> str:
    """process, inline or off: DISPATCH with auto decided by the CPUs."""
    if setting != "auto":
        return setting
    return "process" if cpus() >= 2 else "inline"


def delivery_metrics_file(data_dir: Path) -> Path:
    """Where a supervised worker writes its delivery metrics for serve's /metrics."""
    return data_dir / "metrics" / "delivery.prom"


def child_environment(settings: Settings) -> dict[str, str]:
    """Serve's environment without its MAILVIA_* variables, and its settings' (flags too)."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    return kept | environment(settings)


class DeliveryProcess:
    """The child `mailvia worker` that delivers for serve, and its wake-up pipe."""

    def __init__(self, settings: Settings) -> None:
        self.env = child_environment(settings)
        self.shutdown_seconds = settings.shutdown_seconds
        self.process: asyncio.subprocess.Process | None = None
        self._pipe: int | None = None  # the write end of the child's stdin
        self._lock = threading.Lock()  # wake() comes from any thread; start() swaps the pipe

    def wake(self) -> None:
        """Tell the child to look for work now (after a submission; from any thread)."""
        with self._lock:
            if self._pipe is None:
                return
            # A full pipe already holds a wake-up; a dead child is being restarted.
            with contextlib.suppress(OSError):
                os.write(self._pipe, b"\n")

    async def start(self) -> int:
        """Start a child; returns its PID."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        command = (sys.executable, "-m", "mailvia", "worker", "--supervised")
        try:
            self.process = await asyncio.create_subprocess_exec(*command, stdin=read, env=self.env)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        with self._lock:
            old, self._pipe = self._pipe, write
        if old is not None:
            os.close(old)
        return self.process.pid

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep a child running until `stop`, then stop it (see the module's text); cancelled,
        kill it."""
        try:
            await self._keep(stop)
        finally:
            process = self.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def _keep(self, stop: asyncio.Event) -> None:
        delay = 0.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                pid = await self.start()
            except OSError as exc:  # e.g. too many processes: try again as after a crash
                what = f"could not start: {exc}"
            else:
                click.echo(f"delivery: worker process {pid}")
                sys.stdout.flush()
                code = await self._exit_or(stop)
                if code is None:
                    break
                what = f"{pid} exited ({_how(code)})"
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = 0.0
            click.echo(
                f"mailvia: delivery worker process {what}; starting another in {delay:g} s",
                err=True,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(max(delay * 2, RESTART_FIRST), RESTART_MAX)
        await self.stop()

    async def _exit_or(self, stop: asyncio.Event) -> int | None:
        """The child's exit code, or None once `stop` is set first."""
        assert self.process is not None
        exited = asyncio.ensure_future(self.process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if exited.done():
            return exited.result()
        exited.cancel()
        return None

    async def stop(self) -> None:
        """SIGTERM the child; SIGKILL it past SHUTDOWN_SECONDS and a margin."""
        if self.process is not None and self.process.returncode is None:
            await self._end(self.process)
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), self.shutdown_seconds + STOP_MARGIN)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        if code not in (0, -signal.SIGTERM):  # SIGTERM's default: it had not started yet
            click.echo(
                f"mailvia: delivery worker process {process.pid} exited ({_how(code)}) "
                "while stopping",
                err=True,
            )


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def watch_serve(stop: asyncio.Event, wake: Callable[[], None]) -> None:
    """In a supervised worker: wake on each line from serve, stop at end of file (serve is
    gone)."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            wake()
            return
        loop.remove_reader(fd)
        if not stop.is_set():
            click.echo("mailvia: serve is gone; the delivery worker stops", err=True)
            stop.set()

    loop.add_reader(fd, readable)


async def write_delivery_metrics(
    text: Callable[[], bytes], file: Path, done: asyncio.Event
) -> None:
    """In a supervised worker: write the delivery metrics to `file` every second (when they
    changed) until delivery is `done`, and once more then."""
    file.parent.mkdir(mode=0o700, exist_ok=True)
    written = b""
    while True:
        stopped = done.is_set()
        current = text()
        if current != written:
            temporary = file.with_suffix(".tmp")
            temporary.write_bytes(current)
            os.replace(temporary, file)
            written = current
        if stopped:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), METRICS_EVERY)
