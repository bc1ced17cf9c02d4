"""The life of a `mailvia worker`'s store process (DELIVERY_STORE=process, store/process.py):
it goes with the worker however the worker ends (SIGTERM, SIGKILL: no orphan), and when it
dies the worker stops at once (exit 70) rather than deliver mail it cannot record; the worker
restarted takes its claims back. Real processes, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.cli import Cli, LongRunning, require_console_script
from support.crashes import gone_or_zombie
from support.outage import TroubleRun

pytestmark = pytest.mark.timeout(180)


def _worker(tmp_path: Path) -> tuple[Cli, LongRunning]:
    require_console_script()
    cli = Cli(tmp_path / "data", MAILVIA_DELIVERY_STORE="process")
    cli.ok("migrate")
    worker = cli.start("worker", log_dir=tmp_path)
    worker.wait_for_line(r"delivering")
    return cli, worker


def _store_process(worker: LongRunning, timeout: float = 30.0) -> int:
    """The PID of the worker's store process (a spawned multiprocessing child)."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in _children(worker.pid):
            if "spawn_main" in _cmdline(pid):
                return pid
        assert time.monotonic() < deadline, "no store process\n" + worker.stderr[-2000:]
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not gone_or_zombie(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_killed_worker_leaves_no_store_process_behind(tmp_path: Path) -> None:
    _, worker = _worker(tmp_path)
    try:
        child = _store_process(worker)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        assert _gone_within(child, 10), f"store process {child} outlived its worker"
    finally:
        worker.stop()


def test_a_stopped_worker_stops_its_store_process(tmp_path: Path) -> None:
    _, worker = _worker(tmp_path)
    child = _store_process(worker)
    assert worker.stop() == 0, worker.stderr[-2000:]
    assert _gone_within(child, 10)


def test_the_worker_stops_when_its_store_process_dies(tmp_path: Path) -> None:
    cli, worker = _worker(tmp_path)
    try:
        child = _store_process(worker)
        os.kill(child, signal.SIGKILL)
        try:
            code = worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker went on without its store process\n" + worker.stderr)
        assert code == 70
        assert "the store process died" in worker.stderr
    finally:
        worker.stop()
    again = cli.start("worker", log_dir=tmp_path)  # and it starts again as usual
    try:
        again.wait_for_line(r"delivering")
        _store_process(again)
    finally:
        assert again.stop() == 0


def test_serve_delivering_inline_keeps_its_store_calls_in_threads(tmp_path: Path) -> None:
    """DISPATCH=inline is for one CPU: DELIVERY_STORE is its worker process's setting."""
    require_console_script()
    with TroubleRun(tmp_path, MAILVIA_DELIVERY_STORE="process") as run:  # --dispatch inline
        run.start()
        assert run.serve is not None
        run.serve.wait_for_line(r"^delivery: in this process$")
        assert run.post("inline").status_code == 202
        run.wait_received(1, timeout=20)
        assert _children(run.serve.pid) == []
        assert run.serve.stop() == 0, run.serve.stderr
