"""Nothing lost, nothing stuck: `mailvia serve` (DISPATCH=inline), its own worker process, or a
`mailvia worker` killed with SIGKILL while it delivers, several times, then restarted on the
same data folder. Every accepted message is delivered soon after the last restart; duplicates
at the receiving server are no more than the messages that were in a transaction at the kills,
and each is flagged possible_duplicate. The receiving side is the project's test server, which
logs each message it stores. Full-size runs: bench/crash.py.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from support.cli import require_console_script
from support.crashes import CrashRun, crash_run, kill_points
from support.reconcile import Reconciliation, reconcile

pytestmark = pytest.mark.timeout(240)

SEED = int(os.environ.get("MAILVIA_CRASH_SEED", "0")) or random.randrange(1, 10**6)


def crash_and_recover(run: CrashRun, total: int, kills: int, *, settle_within: float) -> float:
    """Submit `total` messages, kill the dispatching process at `kills` random moments while
    it delivers, restarting it each time; returns the seconds from the last restart until
    nothing is pending."""
    run.start()
    accepted = run.submit(total)
    assert len(accepted) == total
    for point in kill_points(SEED, kills, total):
        run.wait_received(point)
        run.kill()
        run.start()
    restarted = time.monotonic()
    run.wait_settled(settle_within)
    run.accepted = accepted  # type: ignore[attr-defined]
    return time.monotonic() - restarted


def assert_reconciled(run: CrashRun, accepted: list[str]) -> Reconciliation:
    result = reconcile(accepted, run.db_url, run.maildir)
    assert not result.problems, f"seed {SEED}: {result}"
    assert result.delivered == result.accepted, f"seed {SEED}: {result}"
    assert result.duplicates <= sum(run.kills), f"seed {SEED}: {result}; kills {run.kills}"
    return result


def test_a_restart_after_sigkill_sends_the_in_flight_mail_within_seconds(tmp_path: Path) -> None:
    """The issue's reproduction: 1,500 messages, serve (DISPATCH=inline) killed twice while
    delivering. With
    leases of 30 minutes (the old default) only the restarted worker's taking back its own
    claims can deliver everything within seconds."""
    require_console_script()
    with crash_run(tmp_path, MAILVIA_LEASE_SECONDS="1800") as run:
        took = crash_and_recover(run, 1500, 2, settle_within=20)
        result = assert_reconciled(run, run.accepted)  # type: ignore[attr-defined]
    assert took < 20 and result.pending == 0


def test_serve_restarts_its_killed_worker_process_at_once(tmp_path: Path) -> None:
    """serve's own worker process (DISPATCH=process) killed twice while delivering: serve
    starts another each time, which takes its predecessor's claims back at once (same worker
    id slot; leases here last 30 minutes), with nobody restarting anything by hand."""
    require_console_script()
    with crash_run(tmp_path, child=True, MAILVIA_LEASE_SECONDS="1800") as run:
        took = crash_and_recover(run, 1500, 2, settle_within=20)
        result = assert_reconciled(run, run.accepted)  # type: ignore[attr-defined]
        assert run.serve is not None and run.serve.process.poll() is None
        assert len(_child_pids(run, at_least=3)) == 3, run.serve.lines
    assert took < 20 and result.pending == 0


def _child_pids(run: CrashRun, at_least: int, timeout: float = 20.0) -> set[str]:
    """serve's "delivery: worker process PID" lines, once there are `at_least` (a kill late in
    the run may find the mail delivered already: the next child then starts after the
    backoff, while the test has nothing left to wait for)."""
    assert run.serve is not None
    deadline = time.monotonic() + timeout
    while True:
        lines = run.serve.drain()
        pids = {line for line in lines if line.startswith("delivery: worker process")}
        if len(pids) >= at_least or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


@pytest.mark.parametrize("dispatching", ["serve", "worker", "child"])
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, dispatching: str) -> None:
    require_console_script()
    options = {"worker": dispatching == "worker", "child": dispatching == "child"}
    with crash_run(tmp_path, **options) as run:
        took = crash_and_recover(run, 5000, 3, settle_within=60)
        result = assert_reconciled(run, run.accepted)  # type: ignore[attr-defined]
    print(f"seed {SEED}: {result}; kills {run.kills}; drained {took:.1f} s after the restart")


@pytest.mark.parametrize("dispatching", ["worker", "child"])
def test_sigkill_with_the_store_in_threads_loses_nothing(tmp_path: Path, dispatching: str) -> None:
    """DELIVERY_STORE=thread (the store calls in the worker's own threads; the default,
    `process`, is what the test above kills): its successor delivers everything, duplicates
    flagged, as with the store process."""
    require_console_script()
    options = {"worker": dispatching == "worker", "child": dispatching == "child"}
    with crash_run(tmp_path, MAILVIA_DELIVERY_STORE="thread", **options) as run:  # type: ignore[arg-type]
        took = crash_and_recover(run, 3000, 3, settle_within=60)
        result = assert_reconciled(run, run.accepted)  # type: ignore[attr-defined]
    print(f"seed {SEED}: {result}; kills {run.kills}; drained {took:.1f} s after the restart")
