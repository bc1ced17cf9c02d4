"""Store trouble: while the store is gone (PostgreSQL stopped, or the data folder full) a
running `mailvia serve` stays up; its intakes answer temporary failures (HTTP 503 with
Retry-After as problem+json, SMTP 451 4.3.0 at the command that could not commit) and accept
nothing they could not commit; the pages say "temporarily unavailable"; delivery pauses,
says so once, and resumes by itself when the store is back; and nothing accepted before is
lost (reconciled at the receiving test server).

PostgreSQL is a private throwaway cluster (support/pgcluster.py), never the shared server; a
full disk is RLIMIT_FSIZE set on the running process (mounts are not allowed here).
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.cli import poll, require_console_script
from support.crashes import JANE
from support.outage import TroubleRun, message
from support.pgcluster import pg_cluster
from support.reconcile import reconcile

pytestmark = pytest.mark.timeout(180)

PAUSED = r"store unavailable: delivery paused"
RESUMED = r"store back after"


def try_everything_while_down(
    run: TroubleRun, session: smtplib.SMTP, page: httpx.Client, *, reads_work: bool
) -> None:
    """Every intake refuses for now, and nothing it refused is stored."""
    answer = run.post("while-down-api")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["status"] == 503 and "database" not in answer.text
    with run.api() as client:
        batch = client.post(
            "/v1/messages/batch",
            json={"messages": [{"from": JANE, "to": ["b@example.com"], "text": "x"}]},
        )
    assert batch.status_code == 503, batch.text
    # a session that logged in before the outage: its next message is refused for now
    with pytest.raises(smtplib.SMTPResponseException) as refused:
        session.sendmail(JANE, ["buyer@example.com"], message("while-down-smtp"))
    assert refused.value.smtp_code == 451, refused.value
    assert refused.value.smtp_error.startswith(b"4.3.0"), refused.value
    session.rset()
    shown = page.get("/password")
    if reads_work:  # a full disk still lets pages read; never a 500
        assert shown.status_code == 200, shown.text
    else:
        assert shown.status_code == 503, shown.text
        assert "temporarily unavailable" in shown.text.lower()
        assert "Retry-After" in shown.headers and "127.0.0.1" not in shown.text
    assert run.serve is not None and run.serve.process.poll() is None  # serve stays up


def comes_back(run: TroubleRun) -> list[str]:
    """Once the store is back, both intakes accept again; returns the ids they got."""
    answer = poll(lambda: (a := run.post("after-api")).status_code == 202 and a, timeout=30)
    with run.smtp() as session:
        session.sendmail(JANE, ["buyer@example.com"], message("after-smtp"))
    return [answer.json()["id"]]


def outage(
    run: TroubleRun,
    take_away: Callable[[], None],
    give_back: Callable[[], None],
    *,
    reads_work: bool = False,
) -> list[str]:
    """Submit, take the store away mid-delivery, try everything, give it back; returns the
    ids accepted over HTTP (SMTP's are reconciled by what arrived)."""
    run.start()
    accepted = run.submit(300)
    session = run.smtp()
    session.sendmail(JANE, ["buyer@example.com"], message("before-smtp"))
    page = run.signed_in()
    run.wait_received(20)
    take_away()
    try_everything_while_down(run, session, page, reads_work=reads_work)
    poll(lambda: run.log_lines(PAUSED), timeout=30)  # delivery has noticed, and said so
    time.sleep(3)  # several passes of the dispatcher while the store is gone
    assert len(run.log_lines(PAUSED)) == 1, run.serve.stderr if run.serve else ""
    give_back()
    accepted += comes_back(run)
    session.close()
    page.close()
    run.wait_settled(60)
    poll(lambda: run.log_lines(RESUMED), timeout=30)
    assert len(run.log_lines(PAUSED)) == 1
    return accepted


def assert_nothing_lost(run: TroubleRun, accepted: list[str]) -> None:
    result = reconcile(accepted, run.db_url, run.maildir)
    # the SMTP messages are not in `accepted`: they show as arrived-but-not-accepted, by name
    problems = [p for p in result.problems if "before-smtp" not in p and "after-smtp" not in p]
    assert not problems, str(result)
    assert result.delivered == result.accepted and result.duplicates == 0, str(result)
    assert result.received == result.accepted + 2  # and the two SMTP messages, once each


def test_postgresql_stopped_and_started_again(tmp_path: Path) -> None:
    require_console_script()
    with pg_cluster() as cluster, TroubleRun(tmp_path, db_url=cluster.url) as run:
        accepted = outage(run, cluster.stop, cluster.start)
        assert_nothing_lost(run, accepted)


def test_a_full_data_folder_and_space_again(tmp_path: Path) -> None:
    require_console_script()
    with TroubleRun(tmp_path) as run:
        accepted = outage(
            run, lambda: run.fill_disk(4096), lambda: run.fill_disk(None), reads_work=True
        )
        assert_nothing_lost(run, accepted)
