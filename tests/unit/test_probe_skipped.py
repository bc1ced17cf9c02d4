"""A step not tried (a team channel's `sender`: no one sending address is known) reads as not
tried in the CLI's report, the API's JSON and the page, and does not fail the test."""

from __future__ import annotations

import pytest

from mailvia.domain.probe import ProbeReport, ProbeStep, sender_not_tried
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
