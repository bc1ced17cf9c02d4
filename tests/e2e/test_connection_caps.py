"""A channel's max_connections holds across worker processes: two `mailvia worker`s on one
PostgreSQL database deliver one channel's mail to the project's test server, which logs
every connection it had (`sessions.jsonl`: opened and closed times); at no moment were more
than max_connections open, idle ones included. Each transaction waits a little after its
final dot, so the workers' connections would overlap if nothing kept them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.cli import require_console_script
from support.crashes import crash_run
from support.reconcile import reconcile

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

CONNECTIONS = 3
TOTAL = 90


def peak_connections(maildir: Path) -> int:
    """The most connections the test server held open at once, from its session log."""
    moments: list[tuple[float, int]] = []
    for line in (maildir / "sessions.jsonl").read_text().splitlines():
        session = json.loads(line)
        moments += [(session["opened_at"], 1), (session["closed_at"], -1)]
    open_now = peak = 0
    for _, change in sorted(moments):  # at the same instant a close counts first
        open_now += change
        peak = max(peak, open_now)
    return peak


def workers_that_delivered(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT count(DISTINCT worker) FROM attempts")
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_two_workers_never_open_more_than_max_connections(tmp_path: Path, pg_url: str) -> None:
    require_console_script()
    with crash_run(
        tmp_path,
        worker=True,
        connections=CONNECTIONS,
        db_url=pg_url,
        sink_args=("--fault", "data-end=stall:0.2"),
        MAILVIA_CLAIM_BATCH="6",  # small claims: both workers get a share of the queue
    ) as run:
        run.start()
        second = run.cli.start("worker", log_dir=tmp_path)
        try:
            second.wait_for_line(r"delivering")
            accepted = run.submit(TOTAL)
            run.wait_settled(90)
        finally:
            assert second.stop() == 0, second.stderr
        assert run.dispatcher is not None and run.dispatcher.stop() == 0
        run.sink.stop()  # every session logged
        result = reconcile(accepted, run.db_url, run.maildir)
        assert not result.problems and result.delivered == TOTAL, str(result)
        assert workers_that_delivered(run.db_url) == 2
        peak = peak_connections(run.maildir)
    assert 1 <= peak <= CONNECTIONS, f"{peak} connections open at once"
