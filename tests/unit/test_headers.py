"""The one header rule every intake applies to a message's bytes (outbox/headers.py): the header
section's limits, exactly one From (`From :` counted), at most one Sender, and no From or
Sender whose shown text gives another address (plain, encoded word, confusable forms)."""

from __future__ import annotations

import pytest

from mailvia.domain.errors import InvalidHeader, InvalidInput, MisleadingHeader
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.headers import MAX_HEADER_FIELD, MAX_HEADER_SECTION, read_headers

TAIL = b"To: a@b.test\r\nSubject: x\r\n\r\nhi\r\n"


def headers(head: str) -> bytes:
    return head.encode() + TAIL


@pytest.mark.parametrize(
    ("head", "from_address", "sender_address"),
    [
        ("From: me@mine.test\r\n", "me@mine.test", None),
        ('From: "Doe, John" <me@mine.test>\r\n', "me@mine.test", None),
        ("From: =?utf-8?q?M=C3=BCller=2C_Hans?= <me@mine.test>\r\n", "me@mine.test", None),
        ('From: "me@mine.test" <me@mine.test>\r\n', "me@mine.test", None),
        ('From: "me\uff20mine.test" <me@mine.test>\r\n', "me@mine.test", None),
        ("From: me@mine.test (Me)\r\n", "me@mine.test", None),
        ('From: "Jane @ Acme" <me@mine.test>\r\n', "me@mine.test", None),
        ("From : me@mine.test\r\n", "me@mine.test", None),  # obsolete, but the only From
        ("FROM: me@mine.test\r\n", "me@mine.test", None),
        (
            "From: me@mine.test\r\nSender: Desk <desk@mine.test>\r\n",
            "me@mine.test",
            "desk@mine.test",
        ),
        ("Sender : desk@mine.test\r\nFrom: me@mine.test\r\n", "me@mine.test", "desk@mine.test"),
        ("From:\r\n me@mine.test\r\n", "me@mine.test", None),  # folded
    ],
)
def test_what_the_rule_takes(head: str, from_address: str, sender_address: str | None) -> None:
    found = read_headers(headers(head))
    assert (found.from_address, found.sender_address) == (from_address, sender_address)


SHOWS_ANOTHER = "shows another address"


@pytest.mark.parametrize(
    ("head", "error", "words"),
    [
        # one From, counted as readers count it
        ("Subject: none\r\n", InvalidInput, "no From header"),
        ("From: me@mine.test\r\nFrom: ceo@victim.test\r\n", MisleadingHeader, "more than one From"),
        (
            "From: me@mine.test\r\nFrom : ceo@victim.test\r\n",
            MisleadingHeader,
            "more than one From",
        ),
        (
            "From : ceo@victim.test\r\nFrom: me@mine.test\r\n",
            MisleadingHeader,
            "more than one From",
        ),
        (
            "From: me@mine.test\r\nfrom\t: ceo@victim.test\r\n",
            MisleadingHeader,
            "more than one From",
        ),
        ("From: me@mine.test\r\nFROM: ceo@victim.test\r\n", MisleadingHeader, "more than one From"),
        # one address
        ("From: a@b.test, c@d.test\r\n", InvalidInput, "exactly one address"),
        ("From: ceo@victim.test <me@mine.test>\r\n", InvalidInput, "exactly one address"),
        # a shown name with another address: plain, encoded words, confusable and hidden forms
        ('From: "ceo@victim.test" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        ('From: "<ceo@victim.test>" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        ("From: =?utf-8?q?ceo=40victim.test?= <me@mine.test>\r\n", MisleadingHeader, SHOWS_ANOTHER),
        (
            "From: =?utf-8?b?PGNlb0B2aWN0aW0udGVzdD4=?= <me@mine.test>\r\n",
            MisleadingHeader,
            SHOWS_ANOTHER,
        ),
        ('From: "ceo\uff20victim.test" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        (
            "From: =?utf-8?q?ceo=EF=BC=A0victim.test?= <me@mine.test>\r\n",
            MisleadingHeader,
            SHOWS_ANOTHER,
        ),
        ('From: "ceo\ufe6bvictim.test" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        ('From: "ceo@victim\u200b.test" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        ('From: "\u202etset.mitciv@oec" <me@mine.test>\r\n', MisleadingHeader, SHOWS_ANOTHER),
        ("From: me@mine.test (ceo@victim.test)\r\n", MisleadingHeader, SHOWS_ANOTHER),
        ("From: =?utf-8?q?me=0D=0AX=3A_y?= <me@mine.test>\r\n", InvalidHeader, "line breaks"),
        ("From: =?nosuchcharset?q?x?= <me@mine.test>\r\n", InvalidHeader, "encoded word"),
        # Sender: at most one, one address, nothing shown that is another address
        (
            "From: me@mine.test\r\nSender: me@mine.test\r\nSender: ceo@victim.test\r\n",
            MisleadingHeader,
            "more than one Sender",
        ),
        (
            "From: me@mine.test\r\nSender: me@mine.test\r\nSender : ceo@victim.test\r\n",
            MisleadingHeader,
            "more than one Sender",
        ),
        (
            'From: me@mine.test\r\nSender: "ceo@victim.test" <me@mine.test>\r\n',
            MisleadingHeader,
            "Sender header's name shows another address",
        ),
        ("From: me@mine.test\r\nSender: a@b.test, c@d.test\r\n", InvalidInput, "exactly one"),
        # the header section holds fields only
        (
            "From me@mine.test Sat Jan  3 01:05:34 1996\r\nFrom: me@mine.test\r\n",
            InvalidHeader,
            "line 1",
        ),
        ("From: me@mine.test\r\nnot a field\r\n", InvalidHeader, "line 2 is not a field"),
        (" folded: first\r\nFrom: me@mine.test\r\n", InvalidHeader, "starts with a folded line"),
    ],
)
def test_what_the_rule_refuses(head: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        read_headers(headers(head))


def test_the_header_section_limits() -> None:
    field = b"From: me@mine.test\r\nSubject: " + b"x" * MAX_HEADER_FIELD + b"\r\n\r\nhi\r\n"
    with pytest.raises(InvalidHeader, match="a header field is over"):
        read_headers(field)
    folded = b"From: me@mine.test\r\nX-Long: a" + b"\r\n b" * (MAX_HEADER_FIELD // 4) + b"\r\n\r\n"
    with pytest.raises(InvalidHeader, match="a header field is over"):
        read_headers(folded)
    many = b"From: me@mine.test\r\n" + b"X-A: " + b"y" * 1000 + b"\r\n"
    with pytest.raises(InvalidHeader, match="the header section is over"):
        read_headers(many * (MAX_HEADER_SECTION // 1000 + 1) + b"\r\nhi")
    just_under = b"From: me@mine.test\r\nSubject: " + b"x" * (MAX_HEADER_FIELD - 20) + b"\r\n\r\n"
    assert read_headers(just_under).from_address == "me@mine.test"


def test_a_message_of_headers_only_and_one_without_any() -> None:
    assert read_headers(b"From: me@mine.test\r\n").from_address == "me@mine.test"
    with pytest.raises(InvalidInput, match="no From header"):
        read_headers(b"\r\nFrom: me@mine.test\r\n")


@pytest.mark.parametrize(
    "from_",
    [
        '"ceo@victim.test" <me@mine.test>',
        "=?utf-8?q?ceo=40victim.test?= <me@mine.test>",
        '"ceo\uff20victim.test" <me@mine.test>',
        "ceo\uff20victim.test <me@mine.test>",
        '"ceo@victim\u200b.test" <me@mine.test>',
    ],
)
def test_fields_are_held_to_the_same_rule_once_composed(from_: str) -> None:
    draft = Draft(from_=from_, to=["a@b.test"], text="hi")
    with pytest.raises(MisleadingHeader, match=SHOWS_ANOTHER):
        compose(draft, now=0, max_size=100_000)


def test_a_good_from_is_remembered_and_a_refused_one_judged_each_time_in_its_words() -> None:
    from mailvia.outbox import headers as module

    module._MAILBOXES.clear()
    good = "Jane Doe <Jane@Mine.test>"
    assert module.mailbox(good, "From header") == "Jane@mine.test"
    assert dict(module._MAILBOXES) == {good: "Jane@mine.test"}
    assert module.mailbox(good, "Sender header") == "Jane@mine.test"
    two = "a@mine.test, b@mine.test"
    for what in ("From header", "Sender header", "From header"):
        with pytest.raises(InvalidInput, match=f"the {what} must name exactly one address"):
            module.mailbox(two, what)
    shows = '"b@other.test" <a@mine.test>'
    for _ in range(2):
        with pytest.raises(MisleadingHeader, match="shows another address"):
            module.mailbox(shows, "From header")
    assert set(module._MAILBOXES) == {good}


def test_the_remembered_froms_are_bounded() -> None:
    from mailvia.outbox import headers as module

    module._MAILBOXES.clear()
    for n in range(module._MAILBOXES_KEPT + 10):
        assert module.mailbox(f"u{n}@mine.test", "From header") == f"u{n}@mine.test"
    assert 0 < len(module._MAILBOXES) <= module._MAILBOXES_KEPT


def test_a_long_good_from_is_read_but_not_remembered() -> None:
    """A value of empty encoded words passes at 52 KB: the memo keeps no such value (4,096 of
    them would hold ~256 MB)."""
    from mailvia.outbox import headers as module

    module._MAILBOXES.clear()
    long = "=?utf-8?q??= " * 4000 + "<a@b.test>"
    assert module.mailbox(long, "From header") == "a@b.test"
    assert module._MAILBOXES == {}
