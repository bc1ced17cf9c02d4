"""`mailvia serve` delivers in a worker process of its own by default on a machine with 2 or
more CPUs (DISPATCH=auto), without the operator configuring it: real serve, its child and the
project's test server on loopback. The child delivers what comes in over HTTP and SMTP, at
once (serve wakes it); it stops by itself when serve is killed, and with serve on SIGTERM.
DISPATCH=inline keeps delivery in serve's process; DISPATCH=off starts no child.
(Killing the child while it delivers: tests/e2e/test_crashes.py.)
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import pytest

from mailvia.ingress.cli.supervise import cpus
from support.cli import poll, require_console_script
from support.crashes import CHILD_LINE, JANE, gone_or_zombie
from support.outage import TroubleRun, message

pytestmark = pytest.mark.timeout(240)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def submit_by_smtp(run: TroubleRun, subject: str) -> None:
    with run.smtp() as session:
        session.sendmail(JANE, ["buyer@example.com"], message(subject))


def delivered_within(run: TroubleRun, subject: str) -> float:
    """Post one message on an idle service; the seconds until the test server has it."""
    before = run.received()
    started = time.monotonic()
    assert run.post(subject).status_code == 202
    poll(lambda: run.received() > before, timeout=30, interval=0.002)
    return time.monotonic() - started


@pytest.mark.skipif(cpus() < 2, reason="DISPATCH=auto delivers in serve's process on 1 CPU")
def test_serve_delivers_in_a_worker_process_of_its_own_by_default(tmp_path: Path) -> None:
    require_console_script()
    with TroubleRun(tmp_path, default_dispatch=True) as run:
        run.start()
        assert run.serve is not None
        child = int(run.serve.wait_for_line(CHILD_LINE)[1])
        assert child != run.serve.pid and children(run.serve.pid) == [child]
        assert run.post("over http").status_code == 202
        submit_by_smtp(run, "over smtp")
        run.wait_received(2, timeout=20)
        # The test server has the bytes before the child's settlement commits.
        poll(lambda: run.count("state = 'delivered'") == 2, timeout=30)
        # Submissions wake the child: without, it would look every second (IDLE_POLL), and
        # a message posted just after a delivery would wait most of that second.
        took = [delivered_within(run, f"idle {i}") for i in range(7)]
        assert statistics.median(took) < 0.5, took

        assert run.serve.stop() == 0, run.serve.stderr
        assert gone_or_zombie(child)
        assert run.workers() == 0  # the child signed off: stopped gracefully, not killed
        assert "exited" not in run.serve.stderr, run.serve.stderr


def test_a_killed_serve_leaves_no_worker_process_behind(tmp_path: Path) -> None:
    """SIGKILL to serve: its child sees the pipe from serve close and stops as on SIGTERM,
    well within SHUTDOWN_SECONDS (its claims given back: it signs off)."""
    require_console_script()
    with TroubleRun(tmp_path, child=True, MAILVIA_SHUTDOWN_SECONDS="30") as run:
        run.start()
        assert run.serve is not None
        child = int(run.serve.wait_for_line(CHILD_LINE)[1])
        poll(lambda: run.workers() == 1, timeout=30)
        run.serve.process.send_signal(signal.SIGKILL)
        run.serve.process.wait(timeout=10)
        poll(lambda: gone_or_zombie(child), timeout=20, interval=0.02)  # SHUTDOWN_SECONDS: 30
        assert run.workers() == 0
        assert "serve is gone" in run.serve.stderr


def test_inline_delivers_in_serve_and_off_starts_no_child(tmp_path: Path) -> None:
    require_console_script()
    with TroubleRun(tmp_path) as run:  # --dispatch inline
        run.start()
        assert run.serve is not None
        run.serve.wait_for_line(r"^delivery: in this process$")
        assert children(run.serve.pid) == []
        assert run.post("inline").status_code == 202
        run.wait_received(1, timeout=20)
        assert children(run.serve.pid) == []  # delivered by serve itself
        assert not any("delivery: worker process" in line for line in run.serve.drain())
        assert run.serve.stop() == 0, run.serve.stderr

        run.worker = True  # --dispatch off (and no `mailvia worker`)
        run.start_worker = lambda: None  # type: ignore[method-assign]
        run.start()
        run.serve.wait_for_line(r"^dispatch off: run `mailvia worker` to deliver$")
        assert run.post("nobody delivers").status_code == 202
        time.sleep(2)
        assert children(run.serve.pid) == [] and run.received() == 1
        assert run.count("state = 'queued'") == 1  # not even claimed
        assert not any("delivery: worker process" in line for line in run.serve.drain())
