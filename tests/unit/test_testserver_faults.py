"""Fault specs of the test SMTP server: parsing, `*N` budgets, recipient faults, the faults file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailvia.testserver.faults import (
    Action,
    BadTls,
    Drop,
    FaultBook,
    FaultRule,
    FaultsFile,
    NoReply,
    RecipientCounter,
    RecipientFault,
    Reply,
    Stall,
    parse_fault,
    parse_faults,
    parse_faults_text,
    recipient_fault,
)


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        (
            "greeting=421 4.3.2 Shutting down",
            FaultRule("greeting", Reply(421, "421 4.3.2 Shutting down")),
        ),
        ("greeting=220 custom banner", FaultRule("greeting", Reply(220, "220 custom banner"))),
        ("ehlo=drop", FaultRule("ehlo", Drop())),
        ("starttls=stall", FaultRule("starttls", Stall())),
        ("auth=stall:0.25", FaultRule("auth", Stall(0.25))),
        ("mail=noreply", FaultRule("mail", NoReply())),
        (
            "rcpt*1=451 4.3.0 Try again later",
            FaultRule("rcpt", Reply(451, "451 4.3.0 Try again later"), 1),
        ),
        ('data="554 5.6.0 quoted"', FaultRule("data", Reply(554, "554 5.6.0 quoted"))),
        ("data-end*3=stall:2", FaultRule("data-end", Stall(2.0), 3)),
        (
            "data-end=250 2.0.0 queued as X",
            FaultRule("data-end", Reply(250, "250 2.0.0 queued as X")),
        ),
        (" rcpt * 2 = drop ", FaultRule("rcpt", Drop(), 2)),
        ("mail=421", FaultRule("mail", Reply(421, "421"))),
        ("body=stall", FaultRule("body", Stall())),
        ("body*1=drop", FaultRule("body", Drop(), 1)),
        ("starttls*2=badtls", FaultRule("starttls", BadTls(), 2)),
    ],
)
def test_parse_fault(spec: str, rule: FaultRule) -> None:
    assert parse_fault(spec) == rule


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("rcpt", "expected STAGE=ACTION"),
        ("helo=drop", "unknown stage"),
        ("rcpt=explode", "bad fault action"),
        ("body=stall:2", "stage body takes drop or stall"),
        ("body=451 4.3.0 no", "stage body takes drop or stall"),
        ("mail=badtls", "only stage starttls takes badtls"),
        ("rcpt=250 2.1.5 ok", "only 4xx/5xx"),
        ("data-end=354 go on", "3xx"),
        ("rcpt*0=drop", "N >= 1"),
        ("rcpt=stall:soon", "bad fault action"),
        ("rcpt=45 short", "bad fault action"),
    ],
)
def test_parse_fault_rejects(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_fault(spec)


def test_parse_faults_text_skips_comments_and_names_bad_lines() -> None:
    text = "# a comment\n\n  rcpt*1=451 4.3.0 Later  \nmail=drop\n"
    assert parse_faults_text(text) == [
        FaultRule("rcpt", Reply(451, "451 4.3.0 Later"), 1),
        FaultRule("mail", Drop()),
    ]
    with pytest.raises(ValueError, match="line 2"):
        parse_faults_text("mail=drop\nnonsense\n")


def test_book_spends_budgets_in_order() -> None:
    book = FaultBook(parse_faults(["rcpt*2=451 4.3.0 A", "rcpt*1=drop", "mail=noreply"]))
    taken: list[Action | None] = [book.take("rcpt") for _ in range(4)]
    assert taken == [Reply(451, "451 4.3.0 A"), Reply(451, "451 4.3.0 A"), Drop(), None]
    assert book.take("mail") == NoReply()
    assert book.take("mail") == NoReply()
    assert book.take("ehlo") is None


@pytest.mark.parametrize(
    ("address", "fault"),
    [
        ("tempfail@x.test", RecipientFault("tempfail")),
        ("PermFail@x.test", RecipientFault("permfail")),
        ("disconnect-in-data@x.test", RecipientFault("disconnect-in-data")),
        ("stall@x.test", RecipientFault("stall")),
        ("tempfail+2@x.test", RecipientFault("tempfail", 2)),
        ("permfail+tag@x.test", RecipientFault("permfail")),
        ("someone@x.test", None),
        ("tempfailure@x.test", None),
        ("x@tempfail.test", None),
    ],
)
def test_recipient_fault(address: str, fault: RecipientFault | None) -> None:
    assert recipient_fault(address) == fault


def test_recipient_counter_limits_per_exact_address() -> None:
    counter = RecipientCounter()
    kinds = [counter.take("tempfail+2@x.test") for _ in range(3)]
    assert kinds == [RecipientFault("tempfail", 2), RecipientFault("tempfail", 2), None]
    assert counter.take("tempfail+2@y.test") == RecipientFault("tempfail", 2)
    assert counter.take("TEMPFAIL+2@X.TEST") is None
    assert all(counter.take("permfail@x.test") for _ in range(5))


def test_faults_file_keeps_budgets_per_content(tmp_path: Path) -> None:
    path = tmp_path / "faults"
    faults = FaultsFile(path)
    assert faults.book().take("rcpt") is None  # a missing file means no faults
    path.write_text("rcpt*1=451 4.3.0 Later\n")
    assert faults.book().take("rcpt") == Reply(451, "451 4.3.0 Later")
    assert faults.book().take("rcpt") is None  # same content: the budget is spent
    path.write_text("# changed\nrcpt*1=451 4.3.0 Later\n")
    assert faults.book().take("rcpt") == Reply(451, "451 4.3.0 Later")


def test_faults_file_that_does_not_parse_gives_no_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults"
    path.write_text("rcpt=what\n")
    assert FaultsFile(path).book().take("rcpt") is None
    assert "ignoring" in capsys.readouterr().err
