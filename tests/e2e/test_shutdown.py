"""Graceful shutdown: SIGTERM to `mailvia serve` (or to a `mailvia worker`) while mail is in
flight to a slow test server. The intakes stop first (HTTP refuses new connections, an idle
submission session is told 421 4.3.2), the transactions in flight finish and are recorded,
the claims not started go back keeping their place in the queue, the worker signs off, and
the process exits 0; the next start delivers the rest at once, though leases here last 30
minutes. Past MAILVIA_SHUTDOWN_SECONDS the process stops anyway. Reconciled at the end.
"""

from __future__ import annotations

import signal
import smtplib
import time
from pathlib import Path

import httpx
import pytest

from support.cli import Cli, poll, require_console_script
from support.outage import TroubleRun
from support.reconcile import reconcile

pytestmark = pytest.mark.timeout(240)

STALL = 10  # seconds the test server waits after the final dot of the first two messages
TOTAL = 12
IN_TRANSACTION = "state = 'sending' AND started_at IS NOT NULL"


def slow_run(tmp_path: Path, dispatching: str, **env: str) -> TroubleRun:
    return TroubleRun(
        tmp_path,
        worker=dispatching == "worker",
        child=dispatching == "child",
        connections=2,
        sink_args=("--fault", f"data-end*2=stall:{STALL}"),  # those in flight at SIGTERM
        MAILVIA_LEASE_SECONDS="1800",
        **env,
    )


def intakes_stop(run: TroubleRun, session: smtplib.SMTP) -> list[str]:
    """Right after SIGTERM, while delivery still finishes: no new HTTP connection, and the
    idle submission session is told the service is shutting down. Returns the ids of what
    was accepted before the listener closed (a request can beat the signal's handling)."""
    assert run.serve is not None
    late: list[str] = []

    def refused() -> bool:
        try:
            answer = run.post("after-sigterm")
        except httpx.TransportError:
            return True
        if answer.status_code == 202:
            late.append(answer.json()["id"])
        return False

    poll(refused, timeout=STALL - 2, interval=0.05)  # while the stalled two still wait
    assert run.serve.process.poll() is None, "serve should still be finishing its deliveries"
    code, text = session.getreply()
    assert (code, text[:5]) == (421, b"4.3.2"), (code, text)
    return late


@pytest.mark.parametrize("dispatching", ["serve", "worker", "child"])
def test_sigterm_with_mail_in_flight(tmp_path: Path, dispatching: str) -> None:
    """`serve` delivering itself (DISPATCH=inline) or in its worker process (`child`: SIGTERM
    to serve stops the intakes, then the child), or a `mailvia worker`."""
    require_console_script()
    with slow_run(tmp_path, dispatching) as run:
        run.start()
        accepted = run.submit(TOTAL)
        session = run.smtp()
        poll(lambda: run.count(IN_TRANSACTION), timeout=20, interval=0.02)
        time.sleep(0.5)  # the first transactions are past the final dot, waiting for the reply
        process = run.delivering
        stopped_at = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        if dispatching != "worker":
            accepted += intakes_stop(run, session)
        total = len(accepted)
        assert process.process.wait(timeout=30) == 0, process.stderr
        took = time.monotonic() - stopped_at
        session.close()

        delivered = run.count("state = 'delivered'")
        assert 1 <= delivered == run.received() <= 2  # only what was in flight, each once
        assert run.count("state = 'sending'") == 0  # every claim not started was given back
        queued = run.count("state = 'queued'")
        assert queued == total - delivered
        # ... keeping its place: due when it was submitted, not pushed behind by the stop
        assert run.count("state = 'queued' AND next_attempt_at > created_at") == 0
        assert run.count("possible_duplicate") == 0
        if dispatching != "serve":
            assert run.workers() == 0  # signed off
        if dispatching == "child":  # ... and exited 0: serve says when it does not
            assert "exited" not in process.stderr, process.stderr
        assert took < STALL + 10

        run.start()  # the next start sends the rest at once (leases are 30 minutes here)
        run.wait_settled(60)  # the rest are not stalled
        result = reconcile(accepted, run.db_url, run.maildir)
    assert not result.problems, str(result)
    assert result.delivered == total and result.duplicates == 0 and result.flagged == 0


@pytest.mark.parametrize("dispatching", ["serve", "child"])
def test_sigterm_stops_within_shutdown_seconds(tmp_path: Path, dispatching: str) -> None:
    """Transactions that take longer than MAILVIA_SHUTDOWN_SECONDS are cut off: serve (and its
    worker process) still exits 0 in time; they stay claimed, unrecorded (they may have been
    sent), and the next start takes them back at once and sends them again, flagged
    possible_duplicate."""
    require_console_script()
    with TroubleRun(
        tmp_path,
        child=dispatching == "child",
        connections=2,
        sink_args=("--fault", "data-end*2=stall:20"),  # the first two transactions only
        MAILVIA_SHUTDOWN_SECONDS="1",
        MAILVIA_LEASE_SECONDS="1800",
    ) as run:
        run.start()
        accepted = run.submit(4)
        poll(lambda: run.count(IN_TRANSACTION) >= 2, timeout=20, interval=0.02)
        time.sleep(0.5)
        assert run.serve is not None
        stopped_at = time.monotonic()
        assert run.serve.stop(timeout=15) == 0, run.serve.stderr
        assert time.monotonic() - stopped_at < 6
        assert "cut off" in run.serve.stderr
        assert run.count("state = 'delivered'") == 0
        assert run.count(IN_TRANSACTION) == 2  # cut off: still claimed, marked started

        run.start()
        run.wait_settled(20)  # at once, though leases last 30 minutes
        result = reconcile(accepted, run.db_url, run.maildir)
        assert not result.problems, str(result)
        assert result.delivered == 4 and result.flagged == 2, str(result)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_says_when_it_stops_and_that_nothing_is_lost(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """An operator who stops serve (Ctrl-C, or a supervisor's SIGTERM) sees it stop: one line
    when it begins, one when it has stopped (it printed nothing before)."""
    require_console_script()
    serve = Cli(tmp_path / "data").start("serve", "--http-listen", "127.0.0.1:0")
    try:
        serve.wait_for_line(r"^listening http ")
        serve.process.send_signal(sig)
        assert serve.process.wait(timeout=30) == 0, serve.stderr
        stopping = serve.wait_for_line(r"^stopping: ").string
        stopped = serve.wait_for_line(r"^stopped: ").string
    finally:
        serve.stop()
    assert stopping.startswith("stopping: taking no new mail; mail being sent has up to ")
    assert "nothing is lost" in stopped and "leaves at the next start" in stopped
    assert serve.lines.index(stopped) == len(serve.lines) - 1
