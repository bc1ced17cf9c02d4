"""A step not tried (a team channel's `sender`: no one sending address is known) reads as not
tried in the CLI's report, the API's JSON and the page, and does not fail the test."""

from __future__ import annotations

import pytest

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.probe import ProbeReport, ProbeStep, sender_not_tried, state_hint
from mailvia.ingress.cli.channel import print_report
from mailvia.ingress.payloads import report_payload

REPORT = ProbeReport.of([ProbeStep("auth", True, "signed in as jane"), sender_not_tried()])


def test_the_report_passes_and_says_the_sender_was_not_tried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert REPORT.ok and REPORT.failed is None
    print_report(REPORT)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("- sender   MAIL FROM not tried: this channel sends from its")
    assert lines[-1] == "all steps tried passed"


def test_the_json_marks_it_skipped() -> None:
    payload = report_payload(REPORT)
    assert payload["ok"] is True
    assert [s["skipped"] for s in payload["steps"]] == [False, True]
    assert payload["steps"][1]["hint"] is None and payload["steps"][1]["reply"] is None


def _channel(scope: Scope) -> Channel:
    return Channel(
        id="ch-1",
        organization_id="org-1",
        name="relay",
        kind=Kind.SMTP,
        host="smtp.example.com",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.PLAIN,
        scope=scope,
        owner=Owner(user_id="user-1") if scope is Scope.ADDRESS else Owner(team_id="team-1"),
        address="jane@acme.test" if scope is Scope.ADDRESS else None,
        domains=() if scope is Scope.ADDRESS else ("acme.test",),
    )


def test_a_refused_sender_hint_promises_a_sender_test_only_where_one_runs() -> None:
    """A team channel's reconnect does not try a sender: its hint must not say it does."""
    reason = "550 5.7.1 sender address rejected"
    mine = state_hint(reason, _channel(Scope.ADDRESS))
    team = state_hint(reason, _channel(Scope.DOMAIN))
    assert mine is not None and "its test tries the sender (MAIL FROM" in mine
    assert team is not None and "tries the sender" not in team
    assert "its test cannot try the sender" in team and "mend the sender first" in team
